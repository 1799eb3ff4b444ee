//go:build !linux

package handoff

import (
	"errors"
	"net"
	"syscall"
)

// checkPeer: without SO_PEERCRED the peer cannot be checked, so nobody is
// accepted and upgrades fail (the old process keeps serving).
func checkPeer(*net.UnixConn, int) error {
	return errors.New("hand-off needs Linux (peer credentials)")
}

func dupOnto(oldfd, newfd int) error { return syscall.Dup2(oldfd, newfd) }
