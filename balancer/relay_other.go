//go:build !linux

package balancer

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"syscall"
	"time"
)

// relay is the epoll tunnel relay; elsewhere than Linux tunnels use one
// goroutine per direction instead.
type relay struct{}

type relayLoop struct{}

type relayPair struct{ bytes [2]uint64 }

func newRelay(*slog.Logger, time.Duration, time.Duration) (*relay, error) { return nil, nil }

func (*relay) add(*tunnel, net.Conn, net.Conn) bool { return false }
func (*relay) close()                               {}
func (*relayLoop) closePair(*relayPair)             {}

func (*relay) pairs() []*relayPair                                    { return nil }
func (*relay) detach(*relayPair) bool                                 { return false }
func (*relay) finishDetached(*relayPair, bool, string)                {}
func (*relay) adopt(*tunnel, *movedTunnel, int, int, io.Closer) error { return errNoRelay }
func (*relayPair) movedState(*movedTunnel)                            {}
func (*relayPair) fds() (int, int)                                    { return -1, -1 }

// errNoRelay: tunnels are not carried by an epoll relay here, so none can
// be taken over.
var errNoRelay = errors.New("tunnel hand-off needs the epoll relay (Linux)")

func checkTCPSocket(...int) error { return errNoRelay }
func closeFD(fd int)              { syscall.Close(fd) }
