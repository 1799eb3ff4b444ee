package sessions

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// bytesReceived returns how many bytes the kernel has received on c, in
// order, read by now or not (TCP_INFO's bytes_received); false when it
// cannot tell.
func bytesReceived(c net.Conn) (uint64, bool) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return 0, false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return 0, false
	}
	var (
		info    *unix.TCPInfo
		infoErr error
	)
	if err := raw.Control(func(fd uintptr) {
		info, infoErr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	}); err != nil || infoErr != nil {
		return 0, false
	}
	return info.Bytes_received, true
}

// connected reports whether p's TCP connection is still established: not
// once its peer has closed its side (or this edge has), even with bytes of
// it still unread. True when there is no socket to ask (a participant
// made without one).
func connected(p *participant) bool {
	if p.rc == nil {
		return true
	}
	var state uint8
	if err := p.rc.Control(func(fd uintptr) {
		if info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); err == nil {
			state = info.State
		}
	}); err != nil {
		return false // the socket is closed
	}
	return state == unix.BPF_TCP_ESTABLISHED
}
