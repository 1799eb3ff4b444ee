//go:build linux

package gslb

import (
	"runtime"

	"golang.org/x/sys/unix"
)

func setReusePort(fd uintptr) error {
	return unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
}

// udpSockets is how many UDP sockets share the port: one per CPU.
func udpSockets() int { return runtime.GOMAXPROCS(0) }
