//go:build !unix

package configs

// access has nothing to ask here: the open itself says.
func access(path string, dir bool) error { return nil }

// readOnlyMount: nothing to ask here (nothing asks it: FileOwner says no
// mode is checked).
func readOnlyMount(string) bool { return false }
