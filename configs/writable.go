package configs

import (
	"fmt"
	"os"
)

// The one check that the node can write where it makes files of its own —
// the access log (created, or appended to), the state directory (made in
// its parent, or written into) — asked of the kernel (access(2)) as the
// node's user, not read off the mode bits: an ACL, a read-only mount
// (systemd's ProtectSystem=) or another owner answer for themselves. The
// check runs as the node does (the unit's ExecStartPre: its user, its
// sandbox), so what it passes the start can open; it creates nothing.
// Before, the check asked only that the directory exist, and a start as an
// unprivileged user failed on a log in a directory of root's that the
// check had passed.

// mayCreateIn says why this process cannot create files in the directory
// dir (write and search it), nil when it can.
func mayCreateIn(dir string) error {
	if err := access(dir, true); err != nil {
		return fmt.Errorf("this user (uid %d) cannot create files in %s: %v", os.Geteuid(), dir, err)
	}
	return nil
}

// mayWrite says why this process cannot open the existing file for
// writing, nil when it can.
func mayWrite(file string) error {
	if err := access(file, false); err != nil {
		return fmt.Errorf("this user (uid %d) cannot write %s: %v", os.Geteuid(), file, err)
	}
	return nil
}
