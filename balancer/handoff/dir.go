package handoff

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ringlb/ringlb/configs"
)

// DefaultDir is where the hand-off socket goes when no directory is given:
// systemd's RuntimeDirectory= ($RUNTIME_DIRECTORY) when set, else
// ringlb-<uid> in the temporary directory.
func DefaultDir() string { return defaultDir(os.Getenv, os.Getuid()) }

// defaultDir is DefaultDir for a process of user uid whose environment
// getenv reads.
func defaultDir(getenv func(string) string, uid int) string {
	if d := getenv("RUNTIME_DIRECTORY"); d != "" {
		d, _, _ = strings.Cut(d, ":")
		return d
	}
	tmp := getenv("TMPDIR")
	if tmp == "" {
		tmp = "/tmp" // os.TempDir's default on Unix
	}
	return filepath.Join(tmp, fmt.Sprintf("ringlb-%d", uid))
}

// DirOf is the hand-off directory of the running process pid, of user uid:
// its -upgrade-dir flag, else DefaultDir as its environment makes it, read
// from /proc (readable by its user and root). Taken from the caller's own
// environment instead, `ringlb upgrade` run from a shell or by sudo looked
// elsewhere than a node under systemd (RuntimeDirectory=) and reported a
// successful upgrade as failed.
func DirOf(pid, uid int) (string, error) {
	args, err := CommandLine(pid)
	if err != nil {
		return "", err
	}
	if value, ok := FlagValue(args, "upgrade-dir"); ok {
		if !filepath.IsAbs(value) {
			cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
			if err != nil {
				return "", fmt.Errorf("pid %d's working directory (its -upgrade-dir %s is relative): %w", pid, value, err)
			}
			value = filepath.Join(cwd, value)
		}
		return value, nil
	}
	environ, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		return "", fmt.Errorf("pid %d's environment: %w", pid, err)
	}
	env := map[string]string{}
	for _, kv := range strings.Split(string(environ), "\x00") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	return defaultDir(func(k string) string { return env[k] }, uid), nil
}

// CommandLine is pid's command line, read from /proc.
func CommandLine(pid int) ([]string, error) {
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return nil, fmt.Errorf("pid %d's command line: %w", pid, err)
	}
	return strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00"), nil
}

// FlagValue is the value of the flag name (-name V, -name=V, or with two
// dashes) among args; ok is false when it is not there.
func FlagValue(args []string, name string) (value string, ok bool) {
	for i, a := range args {
		n, value, eq := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") || n != name {
			continue
		}
		if !eq {
			if i+1 >= len(args) {
				break
			}
			value = args[i+1]
		}
		return value, true
	}
	return "", false
}

// PrivateDir makes sure dir (DefaultDir when empty) is a directory only
// this user can enter, creating it 0700 when missing. An existing one must
// be a real directory (not a symlink), owned by this user, with no access
// for group or others: in a shared /tmp another user could have created it
// first, and whoever can reach the socket could offer a process descriptors.
func PrivateDir(dir string) (string, error) {
	if dir == "" {
		dir = DefaultDir()
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return "", fmt.Errorf("hand-off directory: %w", err)
	}
	if err := CheckDir(dir, os.Getuid()); err != nil {
		return "", err
	}
	return dir, nil
}

// CheckDir is PrivateDir's rule for an existing directory: a real
// directory (not a symlink) owned by uid, with no access for group or
// others, on a way only root and uid can change (configs.CheckPath: in a
// directory another user could write, they could swap it between this
// check and the socket's or a status file's use). `ringlb upgrade` holds
// the directory of the process it upgrades (uid: that process's user) to it
// before it believes what is recorded there.
func CheckDir(dir string, uid int) error {
	if _, _, err := configs.CheckPath("hand-off directory", dir, uid); err != nil {
		return err
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("hand-off directory: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("hand-off directory %s: not a directory (a symlink?)", dir)
	}
	if owner, _, ok := configs.FileOwner(fi); ok && int(owner) != uid {
		return fmt.Errorf("hand-off directory %s: owned by uid %d, not the process's user (%d)", dir, owner, uid)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("hand-off directory %s: mode %v lets others in; want 0700", dir, fi.Mode().Perm())
	}
	return nil
}

// StatusPath is the file where process pid records how its last upgrade
// ended ("ok <new pid>" or "failed: <reason>"), for `ringlb upgrade`.
func StatusPath(dir string, pid int) string {
	if dir == "" {
		dir = DefaultDir()
	}
	return filepath.Join(dir, fmt.Sprintf("upgrade-%d.status", pid))
}

// WriteStatus records how this process's upgrade ended. Records of
// processes long gone (upgraded by a signal, nobody read them) are removed
// on the way.
func WriteStatus(dir, status string) error {
	d, err := PrivateDir(dir)
	if err != nil {
		return err
	}
	removeStaleStatus(d)
	path := StatusPath(d, os.Getpid())
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(status+"\n"), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// staleStatus is how old a record of a process that is gone may grow.
const staleStatus = 10 * time.Minute

func removeStaleStatus(dir string) {
	old, _ := filepath.Glob(filepath.Join(dir, "upgrade-*.status"))
	for _, f := range old {
		pid, err := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(filepath.Base(f), "upgrade-"), ".status"))
		if err != nil || pid == os.Getpid() || syscall.Kill(pid, 0) != syscall.ESRCH {
			continue
		}
		if fi, err := os.Stat(f); err == nil && time.Since(fi.ModTime()) > staleStatus {
			os.Remove(f)
		}
	}
}
