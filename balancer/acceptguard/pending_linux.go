package acceptguard

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// Pending reports whether bytes have arrived on c that nobody has read yet
// (SIOCINQ): a request on its way into the server, not a client that
// sends nothing (the spill); an answer to no request on a keep-alive
// connection of the balancer's pool to an edge.
func Pending(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	n := 0
	if err := rc.Control(func(fd uintptr) { n, _ = unix.IoctlGetInt(int(fd), unix.SIOCINQ) }); err != nil {
		return false
	}
	return n > 0
}
