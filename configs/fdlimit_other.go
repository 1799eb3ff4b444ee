//go:build !unix

package configs

// OpenFileLimit reports false: this platform has no RLIMIT_NOFILE.
func OpenFileLimit() (uint64, bool) { return 0, false }
