package handoff

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// installBinary copies this test binary (which plays the new process) to
// path with mode, as an operator's install would put a new ringlb there.
func installBinary(t *testing.T, path string, mode os.FileMode) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // past the umask
		t.Fatal(err)
	}
}

// An upgrade starts whatever is at the binary's path: one another user can
// write (the file, or the directory it is named in) is their code run as
// the node's user. Like sudo and OpenSSH with what they run, the old
// process refuses to start it, says what fixes it, and keeps serving.
func TestUpgradeRefusesABinaryOthersCanWrite(t *testing.T) {
	const nobody = 65534
	for _, tc := range []struct {
		name string
		// setup installs the binary under root and returns the path the
		// process names it by.
		setup  func(t *testing.T, root string) string
		reason string // "" when the upgrade must go ahead
		asRoot bool   // needs chown
	}{
		{name: "binary group can write", reason: "chmod go-w", setup: func(t *testing.T, root string) string {
			installBinary(t, filepath.Join(root, "ringlb"), 0o775)
			return filepath.Join(root, "ringlb")
		}},
		{name: "binary others can write", reason: "chmod go-w", setup: func(t *testing.T, root string) string {
			installBinary(t, filepath.Join(root, "ringlb"), 0o757)
			return filepath.Join(root, "ringlb")
		}},
		{name: "directory others can write", reason: "chmod go-w", setup: func(t *testing.T, root string) string {
			dir := filepath.Join(root, "bin")
			mkdir(t, dir, 0o777)
			installBinary(t, filepath.Join(dir, "ringlb"), 0o755)
			return filepath.Join(dir, "ringlb")
		}},
		{name: "directory group can write", reason: "chmod go-w", setup: func(t *testing.T, root string) string {
			dir := filepath.Join(root, "bin")
			mkdir(t, dir, 0o775)
			installBinary(t, filepath.Join(dir, "ringlb"), 0o755)
			return filepath.Join(dir, "ringlb")
		}},
		{name: "parent directory others can write", reason: "chmod go-w", setup: func(t *testing.T, root string) string {
			dir := filepath.Join(root, "opt", "ringlb")
			mkdir(t, filepath.Join(root, "opt"), 0o777) // bin can be renamed away and replaced
			mkdir(t, dir, 0o755)
			installBinary(t, filepath.Join(dir, "ringlb"), 0o755)
			return filepath.Join(dir, "ringlb")
		}},
		{name: "symlink in a directory others can write", reason: "chmod go-w", setup: func(t *testing.T, root string) string {
			good, open := filepath.Join(root, "good"), filepath.Join(root, "open")
			mkdir(t, good, 0o755)
			mkdir(t, open, 0o777)
			installBinary(t, filepath.Join(good, "ringlb"), 0o755)
			link := filepath.Join(open, "ringlb")
			if err := os.Symlink(filepath.Join(good, "ringlb"), link); err != nil {
				t.Fatal(err)
			}
			return link
		}},
		{name: "symlink to a binary others can write", reason: "chmod go-w", setup: func(t *testing.T, root string) string {
			installBinary(t, filepath.Join(root, "ringlb-2"), 0o777)
			link := filepath.Join(root, "ringlb")
			if err := os.Symlink("ringlb-2", link); err != nil {
				t.Fatal(err)
			}
			return link
		}},
		{name: "binary of another user", reason: "chown", asRoot: true, setup: func(t *testing.T, root string) string {
			bin := filepath.Join(root, "ringlb")
			installBinary(t, bin, 0o755)
			chown(t, bin, nobody)
			return bin
		}},
		{name: "directory of another user", reason: "chown", asRoot: true, setup: func(t *testing.T, root string) string {
			dir := filepath.Join(root, "bin")
			mkdir(t, dir, 0o755)
			installBinary(t, filepath.Join(dir, "ringlb"), 0o755)
			chown(t, dir, nobody)
			return filepath.Join(dir, "ringlb")
		}},
		{name: "another user's symlink in a sticky directory", reason: "chown -h", asRoot: true, setup: func(t *testing.T, root string) string {
			shared := filepath.Join(root, "shared")
			mkdir(t, shared, 0o777|os.ModeSticky)
			installBinary(t, filepath.Join(root, "ringlb-real"), 0o755)
			link := filepath.Join(shared, "ringlb")
			if err := os.Symlink(filepath.Join(root, "ringlb-real"), link); err != nil {
				t.Fatal(err)
			}
			chown(t, link, nobody) // theirs to point elsewhere
			return link
		}},
		// What a careful install looks like still upgrades: a sticky
		// directory (only an entry's owner may rename it), a symlink
		// switch between release directories.
		{name: "sticky directory", setup: func(t *testing.T, root string) string {
			dir := filepath.Join(root, "shared")
			mkdir(t, dir, 0o777|os.ModeSticky)
			installBinary(t, filepath.Join(dir, "ringlb"), 0o755)
			return filepath.Join(dir, "ringlb")
		}},
		{name: "symlink switch", setup: func(t *testing.T, root string) string {
			rel := filepath.Join(root, "releases", "2")
			mkdir(t, filepath.Join(root, "releases"), 0o755)
			mkdir(t, rel, 0o755)
			installBinary(t, filepath.Join(rel, "ringlb"), 0o555)
			link := filepath.Join(root, "ringlb")
			if err := os.Symlink("releases/2/ringlb", link); err != nil {
				t.Fatal(err)
			}
			return link
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.asRoot && os.Geteuid() != 0 {
				t.Skip("needs root to give a file to another user")
			}
			p, ln := upgradeProcess(t, "serve", 20*time.Second)
			root := t.TempDir()
			if err := os.Chmod(root, 0o700); err != nil { // whatever the umask made it
				t.Fatal(err)
			}
			p.exe = tc.setup(t, root)
			child, err := p.Upgrade(context.Background(), func(c *Conn) error { return c.Send(TypeState, []byte("{}")) })
			if tc.reason == "" {
				if err != nil {
					t.Fatalf("upgrade from %s: %v", p.exe, err)
				}
				child.Conn.End(nil)
				child.Conn.WaitDone(10 * time.Second)
				child.Conn.Close()
				return
			}
			if err == nil {
				child.Conn.End(nil)
				child.Conn.WaitDone(10 * time.Second)
				child.Conn.Close()
				t.Fatalf("upgrade started %s, which another user could have replaced", p.exe)
			}
			var ue *UpgradeError
			if !errors.As(err, &ue) || !strings.Contains(ue.Reason, tc.reason) {
				t.Fatalf("upgrade: %v, want an UpgradeError naming %q", err, tc.reason)
			}
			t.Logf("refused: %s", ue.Reason)
			oldProcessServes(t, p, ln, "refused")
		})
	}
}

func mkdir(t *testing.T, dir string, mode os.FileMode) {
	t.Helper()
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, mode); err != nil { // past the umask
		t.Fatal(err)
	}
}

func chown(t *testing.T, path string, uid int) {
	t.Helper()
	if err := os.Lchown(path, uid, -1); err != nil {
		t.Fatal(err)
	}
}
