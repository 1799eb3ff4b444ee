package bench

import (
	"net"

	"golang.org/x/sys/unix"
)

// windowShut reports whether c's peer has shut its receive window (TCP_INFO's
// snd_wnd is 0) while bytes written to c wait unacknowledged (SIOCOUTQ): a
// peer that reads nothing keeps them so.
func windowShut(c net.Conn) bool {
	shut := false
	controlSocket(c, func(fd int) {
		info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
		shut = err == nil && info.Snd_wnd == 0
	})
	_, out := socketQueues(c)
	return shut && out > 0
}
