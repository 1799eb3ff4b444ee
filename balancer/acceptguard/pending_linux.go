package acceptguard

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// Pending reports whether bytes have arrived on c that nobody has read yet
// (SIOCINQ): a request on its way into the server, not a client that
// sends nothing (the spill).
func Pending(c net.Conn) bool { return NewUnread(c).Pending() }

// Unread asks one connection's socket whether bytes wait on it unread,
// allocating nothing per question: for a check made on every request (the
// balancer's keep-alive pool to an edge: an answer to no request waiting
// on a connection about to carry the next one).
type Unread struct {
	raw  syscall.RawConn
	n    int
	read func(fd uintptr)
}

// NewUnread returns c's Unread; nil (which answers no) when c is not a
// socket.
func NewUnread(c net.Conn) *Unread {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	u := &Unread{raw: raw}
	u.read = func(fd uintptr) { u.n, _ = unix.IoctlGetInt(int(fd), unix.SIOCINQ) }
	return u
}

// Pending reports whether bytes wait unread on the socket now. Not safe
// for concurrent use.
func (u *Unread) Pending() bool {
	if u == nil {
		return false
	}
	u.n = 0
	if err := u.raw.Control(u.read); err != nil {
		return false
	}
	return u.n > 0
}
