//go:build unix

package configs

import (
	"io/fs"
	"syscall"
)

// FileOwner is the owner and group of the file fi describes (ok false
// where files have no Unix owner): the one reading of them for every rule
// that asks who owns a file (secret files, the state directory, the
// hand-off directory, an upgrade's binary).
func FileOwner(fi fs.FileInfo) (uid, gid uint32, ok bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, 0, false
	}
	return st.Uid, st.Gid, true
}
