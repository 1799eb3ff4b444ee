package handoff

import (
	"fmt"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// checkPeer accepts only the expected child: the kernel's record of the
// connecting process (SO_PEERCRED, taken at connect) must be this user and
// that pid.
func checkPeer(c *net.UnixConn, pid int) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) { cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) }); err != nil {
		return err
	}
	if cerr != nil {
		return fmt.Errorf("peer credentials: %w", cerr)
	}
	if int(cred.Uid) != os.Getuid() {
		return fmt.Errorf("peer uid %d is not this user (%d)", cred.Uid, os.Getuid())
	}
	if int(cred.Pid) != pid {
		return fmt.Errorf("peer pid %d is not the new process (%d)", cred.Pid, pid)
	}
	return nil
}

// dupOnto makes newfd a copy of oldfd (dup3: dup2 is missing on some Linux ports).
func dupOnto(oldfd, newfd int) error { return unix.Dup3(oldfd, newfd, 0) }
