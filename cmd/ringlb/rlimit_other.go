//go:build !unix

package main

// raiseOpenFileLimit does nothing: this platform has no RLIMIT_NOFILE.
func raiseOpenFileLimit() (soft, hard uint64, err error) { return 0, 0, nil }
