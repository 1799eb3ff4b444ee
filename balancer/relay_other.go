//go:build !linux

package balancer

import (
	"log/slog"
	"net"
	"time"
)

// relay is the epoll tunnel relay; elsewhere than Linux tunnels use one
// goroutine per direction instead.
type relay struct{}

type relayLoop struct{}

type relayPair struct{}

func newRelay(*slog.Logger, time.Duration) (*relay, error) { return nil, nil }

func (*relay) add(*tunnel, net.Conn, net.Conn) bool { return false }
func (*relay) close()                               {}
func (*relayLoop) closePair(*relayPair)             {}
