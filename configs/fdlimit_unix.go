//go:build unix

package configs

import "syscall"

// OpenFileLimit returns the process's soft RLIMIT_NOFILE; false when it
// cannot be read.
func OpenFileLimit() (uint64, bool) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, false
	}
	return uint64(lim.Cur), true
}
