package bench

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// windowShut reports whether c's peer has shut its receive window (TCP_INFO's
// snd_wnd is 0) while bytes written to c wait unacknowledged (SIOCOUTQ): a
// peer that reads nothing keeps them so.
func windowShut(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	shut := false
	_ = rc.Control(func(fd uintptr) {
		info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
		shut = err == nil && info.Snd_wnd == 0
	})
	_, out := socketQueues(c)
	return shut && out > 0
}
