package handoff

import (
	"fmt"
	"path/filepath"

	"github.com/ringlb/ringlb/configs"
)

// checkBinary holds the binary an upgrade is about to start, at path, to
// what sudo and OpenSSH hold what they run to: nobody but root and uid
// (this process's user) may change what runs. Every directory and symlink
// on the way to it is held to configs.CheckPath (the rule the state
// directory's way is held to too); the file itself must be a regular file
// that root or uid owns and neither group nor others can write. Else
// another user of the host replaces the binary, or a directory on the way
// to it, and the next upgrade runs their code as the node's user, with its
// listeners and its secrets.
//
// Once the check passes, only root or uid can change what the path names,
// so the check holds until the exec.
func checkBinary(path string, uid int) error {
	if !filepath.IsAbs(path) {
		return fmt.Errorf("binary %s: not an absolute path", path)
	}
	p, fi, err := configs.CheckPath("binary", path, uid)
	if err != nil {
		return err
	}
	switch {
	case fi == nil:
		return fmt.Errorf("binary %s: %s does not exist", path, p)
	case fi.IsDir():
		return fmt.Errorf("binary %s: names a directory", path)
	case !fi.Mode().IsRegular():
		return fmt.Errorf("binary %s: %s is not a regular file", path, p)
	}
	what := "binary " + path
	if p != path {
		what += ": " + p
	}
	if owner, _, ok := configs.FileOwner(fi); ok && owner != 0 && int(owner) != uid {
		return fmt.Errorf("%s is owned by uid %d, not root or the node's user (%d), who could replace it: chown root %s",
			what, owner, uid, p)
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("%s has mode %#o, so other users could replace what the upgrade runs: chmod go-w %s",
			what, fi.Mode().Perm(), p)
	}
	return nil
}
