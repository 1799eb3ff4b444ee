//go:build !unix

package configs

// access has nothing to ask here: the open itself says.
func access(path string, dir bool) error { return nil }
