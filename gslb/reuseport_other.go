//go:build !linux

package gslb

import "net"

// setReusePort is a no-op elsewhere: only one UDP socket binds the port.
func setReusePort(uintptr) error { return nil }

// udpSockets is 1 without SO_REUSEPORT.
func udpSockets() int { return 1 }

// spreadQueries is Linux's: elsewhere one socket takes every query.
func spreadQueries(net.PacketConn, int) error { return nil }
