//go:build unix

package configs

import "golang.org/x/sys/unix"

// access asks the kernel whether this process may write path (and, for a
// directory, search it: dir).
func access(path string, dir bool) error {
	mode := uint32(unix.W_OK)
	if dir {
		mode |= unix.X_OK
	}
	return unix.Access(path, mode)
}
