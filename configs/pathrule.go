package configs

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// maxLinks is how many symlinks CheckPath follows on one path (the
// kernel's own limit, ELOOP).
const maxLinks = 40

// CheckPath holds the way to path — a file the node runs or a directory
// whose contents it believes — to what sudo and OpenSSH hold what they run
// to: nobody but root and uid (the node's user) may change what the path
// names. Every directory the path passes through (from /, each symlink
// resolved as the kernel will) must be owned by root or uid and writable
// by neither group nor others unless it is sticky (then only an entry's
// owner may rename or remove it, as in /tmp); every symlink on the way,
// the last one too, must be root's or uid's. Else another user of the host
// renames an entry on the way and puts their own in its place: a binary an
// upgrade runs as the node's user, a state directory of their choosing.
// A group that can write counts as another user: a setgid directory of
// mode 2775 (Debian's /usr/local, root:staff, where a system makes it so)
// is refused; `chmod g-w` it, or keep the node's files elsewhere.
//
// what names the path in messages ("binary", "state directory"). The
// final entry, symlinks resolved, is returned with its Lstat for the
// caller's own rule on it (fi nil: it does not exist, and every directory
// on the way to it passed). Once the check passes, only root or uid can
// change what the path names, so it holds until the path is used.
//
// Where files have no Unix owner, the mode says nothing of who may write:
// nothing is checked.
func CheckPath(what, path string, uid int) (final string, fi fs.FileInfo, err error) {
	dir := func(p string, fi fs.FileInfo) error { return checkDirOnPath(what, path, p, fi, uid) }
	link := func(p string, fi fs.FileInfo) error {
		// The link is an entry of a checked directory: only root, uid or,
		// in a sticky directory, the link's owner can change it. Where it
		// points is checked in turn.
		if owner, ok := ownerOf(fi); ok && owner != 0 && owner != uid {
			return fmt.Errorf("%s %s: symlink %s is owned by uid %d, not root or the node's user (%d), who could point it elsewhere: chown -h root %s",
				what, path, p, owner, uid, p)
		}
		return nil
	}
	return walkPath(what, path, dir, link)
}

// walkPath walks path as the kernel resolves it (from /, each symlink
// resolved), holding every directory on the way to checkDir and every
// symlink to checkLink (nil: any), and returns the final entry as
// CheckPath does. Where files have no Unix owner, nothing is held to
// either.
func walkPath(what, path string, checkDir, checkLink func(p string, fi fs.FileInfo) error) (final string, fi fs.FileInfo, err error) {
	abs := path // not cleaned: "link/.." is where the link's target's parent is
	if !filepath.IsAbs(path) {
		wd, err := os.Getwd()
		if err != nil {
			return "", nil, fmt.Errorf("%s %s: %w", what, path, err)
		}
		abs = wd + "/" + path
	}
	rootInfo, err := os.Lstat("/")
	if err != nil {
		return "", nil, fmt.Errorf("%s %s: %w", what, path, err)
	}
	if _, _, ok := FileOwner(rootInfo); !ok {
		fi, err := os.Stat(abs)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return "", nil, fmt.Errorf("%s %s: %w", what, path, err)
		}
		return abs, fi, nil
	}
	if err := checkDir("/", rootInfo); err != nil {
		return "", nil, err
	}
	dir := "/" // the directory resolved so far, checked
	rest := strings.Split(abs, "/")
	for links := 0; ; {
		name := ""
		for len(rest) > 0 && name == "" {
			name, rest = rest[0], rest[1:]
			if name == "." {
				name = ""
			}
		}
		switch name {
		case "": // the path ends in dir (/, or after "..")
			fi, err := os.Lstat(dir)
			if err != nil {
				return "", nil, fmt.Errorf("%s %s: %w", what, path, err)
			}
			return dir, fi, nil
		case "..":
			dir = filepath.Dir(dir) // checked on the way down
			continue
		}
		p := filepath.Join(dir, name)
		last := onlyEmpty(rest)
		fi, err := os.Lstat(p)
		if last && errors.Is(err, fs.ErrNotExist) {
			return p, nil, nil
		}
		if err != nil {
			return "", nil, fmt.Errorf("%s %s: %w", what, path, err)
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			if checkLink != nil {
				if err := checkLink(p, fi); err != nil {
					return "", nil, err
				}
			}
			if links++; links > maxLinks {
				return "", nil, fmt.Errorf("%s %s: too many symlinks", what, path)
			}
			target, err := os.Readlink(p)
			if err != nil {
				return "", nil, fmt.Errorf("%s %s: %w", what, path, err)
			}
			if filepath.IsAbs(target) {
				dir = "/"
			}
			rest = append(strings.Split(target, "/"), rest...)
			continue
		}
		if last {
			return p, fi, nil
		}
		if !fi.IsDir() {
			return "", nil, fmt.Errorf("%s %s: %s is not a directory", what, path, p)
		}
		if err := checkDir(p, fi); err != nil {
			return "", nil, err
		}
		dir = p
	}
}

func onlyEmpty(parts []string) bool {
	for _, s := range parts {
		if s != "" && s != "." {
			return false
		}
	}
	return true
}

// checkDirOnPath is CheckPath's rule for a directory p on the way to path.
func checkDirOnPath(what, path, p string, fi fs.FileInfo, uid int) error {
	if owner, ok := ownerOf(fi); ok && owner != 0 && owner != uid {
		return fmt.Errorf("%s %s: directory %s is owned by uid %d, not root or the node's user (%d), who could replace what is in it: chown root %s",
			what, path, p, owner, uid, p)
	}
	if fi.Mode().Perm()&0o022 != 0 && fi.Mode()&fs.ModeSticky == 0 {
		return fmt.Errorf("%s %s: directory %s has mode %#o, so other users could put another %s in its place: chmod go-w %s",
			what, path, p, fi.Mode().Perm(), what, p)
	}
	return nil
}

// openDirOnWay is the first directory on the way to path (the file
// itself not included; from /, each symlink resolved as the kernel will)
// that other users may write and that is not sticky, and its mode; "" when
// there is none, or the way cannot be walked (the file's reader says why).
// It is sshd's StrictModes for a file whose content the node takes as the
// operator's — the config file, and every file it names (OpenRegular): a
// secret, a CA bundle, a certificate, a zone file and its includes. From
// such a directory any user of the host renames the file away and puts
// their own in its place, whatever the file's own mode. A sticky one
// (/tmp) lets only an entry's owner do that; a group that may write is
// allowed, as it is of the config file; a read-only mount, whatever its
// mode, is written by nobody.
func openDirOnWay(path string) (dir string, mode fs.FileMode) {
	walkPath("", path, func(p string, fi fs.FileInfo) error {
		if fi.Mode().Perm()&0o002 != 0 && fi.Mode()&fs.ModeSticky == 0 && !readOnlyMount(p) {
			dir, mode = p, fi.Mode().Perm()
			return fs.ErrPermission // the walk stops here
		}
		return nil
	}, nil)
	return dir, mode
}

// wayOpenToOthers is the refusal of a file (what: "config file", "file")
// at path by openDirOnWay's rule, "" when its way passes.
func wayOpenToOthers(path, what string) string {
	dir, mode := openDirOnWay(path)
	if dir == "" {
		return ""
	}
	return fmt.Sprintf("directory %s has mode %04o, writable by others and not sticky: any user of this host could put another %s in this one's place, and a reload or a start would read it; chmod o-w %s", dir, mode, what, dir)
}

// ownerOf is fi's owner as a uid (FileOwner).
func ownerOf(fi fs.FileInfo) (int, bool) {
	uid, _, ok := FileOwner(fi)
	return int(uid), ok
}
