//go:build !linux

package gslb

import (
	"net"
	"net/netip"
)

// udpBatch is Linux's recvmmsg/sendmmsg batching; elsewhere each answer is
// written on its own.
type udpBatch struct{}

func (*udpBatch) queue([]byte, netip.AddrPort) {}

func (s *Server) serveUDPBatched(conn *net.UDPConn) error { return s.serveUDP(conn) }
