//go:build unix

package configs

import (
	"errors"

	"golang.org/x/sys/unix"
)

// access asks the kernel whether this process may write path (and, for a
// directory, search it: dir).
func access(path string, dir bool) error {
	mode := uint32(unix.W_OK)
	if dir {
		mode |= unix.X_OK
	}
	return unix.Access(path, mode)
}

// readOnlyMount says whether path is on a read-only mount, where nobody
// writes whatever its mode says: a Kubernetes ConfigMap's directory is
// 0777, mounted read-only.
func readOnlyMount(path string) bool {
	return errors.Is(unix.Access(path, unix.W_OK), unix.EROFS)
}
