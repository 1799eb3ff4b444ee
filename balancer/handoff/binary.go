package handoff

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/ringlb/ringlb/configs"
)

// maxLinks is how many symlinks checkBinary follows on one path (the
// kernel's own limit, ELOOP).
const maxLinks = 40

// checkBinary holds the binary an upgrade is about to start, at path, to
// what sudo and OpenSSH hold what they run to: nobody but root and uid
// (this process's user) may change what runs. The file must be a regular
// file that root or uid owns and neither group nor others can write, each
// symlink on the way root's or uid's; every
// directory the path passes through (each symlink resolved, as the kernel
// will) must be owned by root or uid and writable by neither group nor
// others unless it is sticky (then only an entry's owner may rename or
// remove it, as in /tmp). Else another user of the host replaces the
// binary, or a directory on the way to it, and the next upgrade runs their
// code as the node's user, with its listeners and its secrets.
//
// Once the check passes, only root or uid can change what the path names,
// so the check holds until the exec.
func checkBinary(path string, uid int) error {
	if !filepath.IsAbs(path) {
		return fmt.Errorf("binary %s: not an absolute path", path)
	}
	fi, err := os.Lstat("/")
	if err != nil {
		return fmt.Errorf("binary %s: %w", path, err)
	}
	if err := checkDirOnPath("/", fi, path, uid); err != nil {
		return err
	}
	dir := "/" // the directory resolved so far, checked
	rest := strings.Split(path, "/")
	for links := 0; len(rest) > 0; {
		name := rest[0]
		rest = rest[1:]
		switch name {
		case "", ".":
			continue
		case "..":
			dir = filepath.Dir(dir) // checked on the way down
			continue
		}
		p := filepath.Join(dir, name)
		fi, err := os.Lstat(p)
		if err != nil {
			return fmt.Errorf("binary %s: %w", path, err)
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			// The link is an entry of dir (checked): only root, uid or,
			// in a sticky directory, the link's owner can change it.
			// Where it points is checked in turn.
			if owner, ok := ownerOf(fi); ok && owner != 0 && owner != uid {
				return fmt.Errorf("binary %s: symlink %s is owned by uid %d, not root or the process's user (%d), who could point it elsewhere: chown -h root %s",
					path, p, owner, uid, p)
			}
			if links++; links > maxLinks {
				return fmt.Errorf("binary %s: too many symlinks", path)
			}
			target, err := os.Readlink(p)
			if err != nil {
				return fmt.Errorf("binary %s: %w", path, err)
			}
			if filepath.IsAbs(target) {
				dir = "/"
			}
			rest = append(strings.Split(target, "/"), rest...)
			continue
		}
		if len(rest) == 0 || onlyEmpty(rest) {
			return checkFileOnPath(p, fi, path, uid)
		}
		if !fi.IsDir() {
			return fmt.Errorf("binary %s: %s is not a directory", path, p)
		}
		if err := checkDirOnPath(p, fi, path, uid); err != nil {
			return err
		}
		dir = p
	}
	return fmt.Errorf("binary %s: names a directory", path)
}

func onlyEmpty(parts []string) bool {
	for _, s := range parts {
		if s != "" && s != "." {
			return false
		}
	}
	return true
}

// checkFileOnPath is checkBinary's rule for the file itself (at p, named
// path by the process).
func checkFileOnPath(p string, fi fs.FileInfo, path string, uid int) error {
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("binary %s: %s is not a regular file", path, p)
	}
	what := "binary " + path
	if p != path {
		what += ": " + p
	}
	if owner, ok := ownerOf(fi); ok && owner != 0 && owner != uid {
		return fmt.Errorf("%s is owned by uid %d, not root or the process's user (%d), who could replace it: chown root %s",
			what, owner, uid, p)
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("%s has mode %#o, so other users could replace what the upgrade runs: chmod go-w %s",
			what, fi.Mode().Perm(), p)
	}
	return nil
}

// checkDirOnPath is checkBinary's rule for a directory on the way to the
// binary.
func checkDirOnPath(p string, fi fs.FileInfo, path string, uid int) error {
	if owner, ok := ownerOf(fi); ok && owner != 0 && owner != uid {
		return fmt.Errorf("binary %s: directory %s is owned by uid %d, not root or the process's user (%d), who could replace what is in it: chown root %s",
			path, p, owner, uid, p)
	}
	if fi.Mode().Perm()&0o022 != 0 && fi.Mode()&fs.ModeSticky == 0 {
		return fmt.Errorf("binary %s: directory %s has mode %#o, so other users could put another binary in its place: chmod go-w %s",
			path, p, fi.Mode().Perm(), p)
	}
	return nil
}

// ownerOf is fi's owner as a uid (configs.FileOwner).
func ownerOf(fi fs.FileInfo) (int, bool) {
	uid, _, ok := configs.FileOwner(fi)
	return int(uid), ok
}
