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
	sc, ok := c.(syscall.Conn)
	if !ok {
		return -1, -1
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1, -1
	}
	in, out = -1, -1
	_ = rc.Control(func(fd uintptr) {
		if n, err := unix.IoctlGetInt(int(fd), unix.SIOCINQ); err == nil {
			in = n
		}
		if n, err := unix.IoctlGetInt(int(fd), unix.SIOCOUTQ); err == nil {
			out = n
		}
	})
	return in, out
}
