package bench

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// socketQueues returns the bytes waiting to be read on c's socket
// (SIOCINQ) and those written to it that its peer has not acknowledged
// (SIOCOUTQ); -1 each when c is not a socket it can ask.
func socketQueues(c net.Conn) (in, out int) {
	in, out = -1, -1
	controlSocket(c, func(fd int) {
		if n, err := unix.IoctlGetInt(fd, unix.SIOCINQ); err == nil {
			in = n
		}
		if n, err := unix.IoctlGetInt(fd, unix.SIOCOUTQ); err == nil {
			out = n
		}
	})
	return in, out
}

// controlSocket calls f with c's socket descriptor, if c has one it can
// reach.
func controlSocket(c net.Conn, f func(fd int)) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return
	}
	if rc, err := sc.SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) { f(int(fd)) })
	}
}
