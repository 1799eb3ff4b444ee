//go:build unix

package operator

import (
	"os"
	"syscall"
)

// keepOwner gives f the owner and group of st where the process may: root
// may give any, another user keeps its own file's owner and may give a
// group it is in. Where it may not, f stays the process's, as a new file
// is.
func keepOwner(f *os.File, st os.FileInfo) {
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		_ = f.Chown(int(sys.Uid), int(sys.Gid))
	}
}
