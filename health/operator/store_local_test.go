package operator

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ringlb/ringlb/configs"
)

// A state directory another local user can write (a shared volume, a
// directory made 0777 or group-writable by hand) is theirs to fill: a
// sessions file holding the hash of a cookie they chose logs them in as the
// operator, a hash of their own password becomes the generated admin's,
// and a symlink where the store writes (its probe) makes the node truncate
// any file it may write. Such a directory is refused, as is one owned by
// another user; the node keeps its state in memory and says why.
func TestStateDirOpenToOthersIsRefused(t *testing.T) {
	for _, mode := range []os.FileMode{0o777, 0o770, os.ModeSticky | 0o777, 0o702} {
		t.Run(mode.String(), func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "state")
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(dir, mode); err != nil {
				t.Fatal(err)
			}
			// What another user with write access plants: a login
			// session of a cookie they know, and the store's probe as a
			// symlink to a file of the node's.
			cookie := plantSession(t, dir, "alice")
			victim := filepath.Join(t.TempDir(), "gossip.key")
			if err := os.WriteFile(victim, []byte("precious\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(victim, filepath.Join(dir, ".probe")); err != nil {
				t.Fatal(err)
			}

			_, err := OpenStore(dir)
			t.Logf("state directory mode %v: %v", mode, err)
			if err == nil {
				t.Errorf("a state directory of mode %v was used", mode)
			} else if !strings.Contains(err.Error(), "chmod 700") {
				t.Errorf("the refusal does not say what to do: %v", err)
			}
			if data, _ := os.ReadFile(victim); string(data) != "precious\n" {
				t.Errorf("the file the probe's symlink named was written: %q", data)
			}

			// Through the node: the planted session logs nobody in.
			n := newTestNode(t, configs.Admin{UsersFile: usersFile(t), StateDir: dir})
			base := loginServer(t, n, "")
			status := cookieStatus(t, base, cookie)
			t.Logf("the planted session's cookie: %d", status)
			if status == http.StatusOK {
				t.Error("a session planted in a state directory open to others logged in")
			}
		})
	}
}

// A state directory owned by another user is refused whatever its mode: its
// owner can put anything in it (as root only: a test cannot give a
// directory away otherwise).
func TestStateDirOfAnotherUserIsRefused(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give the directory to another user")
	}
	dir := filepath.Join(t.TempDir(), "state")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	plantSession(t, dir, "alice")
	if err := os.Chown(dir, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	_, err := OpenStore(dir)
	t.Logf("a state directory owned by uid 65534: %v", err)
	if err == nil || !strings.Contains(err.Error(), "owned by uid 65534") {
		t.Errorf("a state directory of another user: %v", err)
	}
}

// In the node's own directory nothing is followed out of it: a state file
// or an audit log that is a symlink (left by an earlier setup, or made
// while the directory was open) is neither read nor appended to, and a
// state file of another owner is not believed.
func TestStateFilesAreNotFollowed(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	s, err := OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	outside := t.TempDir()
	elsewhere := filepath.Join(outside, "sessions.json")
	plantSession(t, outside, "alice")
	if err := os.Symlink(elsewhere, filepath.Join(dir, sessionsConcern+".json")); err != nil {
		t.Fatal(err)
	}
	var v []map[string]any
	err = s.Load(sessionsConcern, &v)
	t.Logf("a state file that is a symlink: %v", err)
	if err == nil {
		t.Error("a state file that is a symlink was read")
	}

	victim := filepath.Join(outside, "crontab")
	if err := os.WriteFile(victim, []byte("precious\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, filepath.Join(dir, auditFile)); err != nil {
		t.Fatal(err)
	}
	a := newAuditLog("bal-1", dir, slog.New(slog.DiscardHandler), newMetrics(prometheus.NewRegistry()))
	a.Add(Record{Who: "token", Action: "drain", Target: "* * * * * root sh -c id\n"})
	a.close()
	if data, _ := os.ReadFile(victim); string(data) != "precious\n" {
		t.Errorf("the audit log's symlink was followed: the file it names holds %q", data)
	}

	if os.Geteuid() == 0 {
		plantSession(t, dir, "bob")
		os.Remove(filepath.Join(dir, sessionsConcern+".json"))
		plantSession(t, dir, "bob")
		if err := os.Chown(filepath.Join(dir, sessionsConcern+".json"), 65534, 65534); err != nil {
			t.Fatal(err)
		}
		err := s.Load(sessionsConcern, &v)
		t.Logf("a state file of another owner: %v", err)
		if err == nil {
			t.Error("a state file owned by another user was read")
		}
	}
}

// plantSession writes, as whoever can write dir, a sessions state file
// with a session of user for a cookie of its choosing, and returns the
// cookie.
func plantSession(t *testing.T, dir, user string) string {
	t.Helper()
	raw := make([]byte, 32)
	copy(raw, "a cookie the attacker chose.....")
	id := sha256.Sum256(raw)
	now := time.Now().UTC()
	data, _ := json.Marshal([]map[string]any{{"id": hex.EncodeToString(id[:]), "user": user, "created": now, "expires": now.Add(time.Hour)}})
	file, _ := json.Marshal(map[string]any{"version": stateVersion, "saved": now, "data": json.RawMessage(data)})
	path := filepath.Join(dir, sessionsConcern+".json")
	if err := os.WriteFile(path, file, 0o666); err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(raw)
}

// A state directory is only as private as the directories on the way to
// it: another user who can write one of them (a parent of mode 0777, one
// its group can write, one they own) renames the node's directory away and
// puts another in its place. The node's own earlier directory put back
// after a restart is believed again: a login the operator ended since
// logs in, the audit records of what was done in between are gone. So the
// way to the directory is held to the rule an upgrade's binary is
// (configs.CheckPath): every directory root's or the node's user's,
// writable by neither group nor others unless sticky, every symlink root's
// or the node's user's.
func TestStateDirInADirectoryOthersCanWriteIsRefused(t *testing.T) {
	const nobody = 65534
	type setup struct {
		dir   string // the state directory, as configured
		entry string // what another user renames to swap it ("": not shown here)
		fix   string // what the refusal must say
	}
	for _, tc := range []struct {
		name   string
		asRoot bool // needs chown
		setup  func(t *testing.T, root string) setup
	}{
		{name: "parent others can write", setup: func(t *testing.T, root string) setup {
			parent := mkdirMode(t, filepath.Join(root, "shared"), 0o777)
			return setup{dir: filepath.Join(parent, "state"), entry: filepath.Join(parent, "state"), fix: "chmod go-w " + parent}
		}},
		{name: "parent its group can write", setup: func(t *testing.T, root string) setup {
			parent := mkdirMode(t, filepath.Join(root, "team"), 0o770)
			return setup{dir: filepath.Join(parent, "state"), entry: filepath.Join(parent, "state"), fix: "chmod go-w " + parent}
		}},
		{name: "setgid parent its group can write", setup: func(t *testing.T, root string) setup {
			// Debian's /usr/local where it is 2775 root:staff: staff
			// renames what is in it.
			parent := mkdirMode(t, filepath.Join(root, "local"), os.ModeSetgid|0o775)
			return setup{dir: filepath.Join(parent, "state"), entry: filepath.Join(parent, "state"), fix: "chmod go-w " + parent}
		}},
		{name: "grandparent others can write", setup: func(t *testing.T, root string) setup {
			open := mkdirMode(t, filepath.Join(root, "srv"), 0o777)
			parent := mkdirMode(t, filepath.Join(open, "ringlb"), 0o755)
			return setup{dir: filepath.Join(parent, "state"), entry: parent, fix: "chmod go-w " + open}
		}},
		{name: "symlink to a directory in one others can write", setup: func(t *testing.T, root string) setup {
			open := mkdirMode(t, filepath.Join(root, "data"), 0o777)
			mkdirMode(t, filepath.Join(open, "state"), 0o700)
			link := filepath.Join(root, "state")
			if err := os.Symlink(filepath.Join(open, "state"), link); err != nil {
				t.Fatal(err)
			}
			return setup{dir: link, fix: "chmod go-w " + open}
		}},
		{name: "parent of another user", asRoot: true, setup: func(t *testing.T, root string) setup {
			parent := mkdirMode(t, filepath.Join(root, "theirs"), 0o755)
			if err := os.Chown(parent, nobody, nobody); err != nil {
				t.Fatal(err)
			}
			return setup{dir: filepath.Join(parent, "state"), entry: filepath.Join(parent, "state"), fix: "chown root " + parent}
		}},
		{name: "another user's symlink in a sticky directory", asRoot: true, setup: func(t *testing.T, root string) setup {
			shared := mkdirMode(t, filepath.Join(root, "shared"), os.ModeSticky|0o777)
			real := mkdirMode(t, filepath.Join(root, "real"), 0o700)
			link := filepath.Join(shared, "state")
			if err := os.Symlink(real, link); err != nil {
				t.Fatal(err)
			}
			if err := os.Lchown(link, nobody, nobody); err != nil { // theirs to point elsewhere
				t.Fatal(err)
			}
			return setup{dir: link, fix: "chown -h root " + link}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.asRoot && os.Geteuid() != 0 {
				t.Skip("needs root to give a file to another user")
			}
			root := mkdirMode(t, filepath.Join(t.TempDir(), "root"), 0o755)
			s := tc.setup(t, root)
			store, err := OpenStore(s.dir)
			t.Logf("state directory %s: %v", s.dir, err)
			if err != nil {
				if !strings.Contains(err.Error(), s.fix) {
					t.Errorf("the refusal does not say %q: %v", s.fix, err)
				}
				if _, cerr := configs.Parse("t.yaml", []byte("cluster: { bind: 127.0.0.1:7946, state_dir: "+s.dir+" }\n")); cerr == nil || !strings.Contains(cerr.Error(), s.fix) {
					t.Errorf("ringlb check of the directory: %v, want it refused with %q", cerr, s.fix)
				}
				return
			}
			if s.entry == "" {
				t.Fatalf("a state directory another user can swap or point elsewhere was used")
			}
			// What the other user does with it: keep the node's
			// directory as it is now, let a restart make a new one, and
			// put the old one back before the next.
			type session struct{ ID, User string }
			if err := store.Save(sessionsConcern, []session{{"c0ffee", "alice"}}); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(s.entry, s.entry+".kept"); err != nil {
				t.Fatal(err)
			}
			restarted, err := OpenStore(s.dir)
			if err != nil {
				t.Fatal(err)
			}
			if err := restarted.Save(sessionsConcern, []session{}); err != nil { // alice logged out
				t.Fatal(err)
			}
			if err := os.Rename(s.entry, s.entry+".new"); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(s.entry+".kept", s.entry); err != nil {
				t.Fatal(err)
			}
			again, err := OpenStore(s.dir)
			if err != nil {
				t.Fatal(err)
			}
			var back []session
			err = again.Load(sessionsConcern, &back)
			t.Errorf("a state directory another user can swap was used: after their swap, the sessions believed are %v (err %v): the login the operator ended is back", back, err)
		})
	}
	// What a careful host has still opens: a directory under root's 0755
	// ones, one in a sticky directory (only an entry's owner renames it),
	// one behind the node's own symlink.
	for _, tc := range []struct {
		name string
		dir  func(t *testing.T, root string) string
	}{
		{"under root's directories", func(t *testing.T, root string) string {
			return filepath.Join(mkdirMode(t, filepath.Join(root, "lib"), 0o755), "state")
		}},
		{"in a sticky directory", func(t *testing.T, root string) string {
			return filepath.Join(mkdirMode(t, filepath.Join(root, "tmp"), os.ModeSticky|0o777), "state")
		}},
		{"behind the node's own symlink", func(t *testing.T, root string) string {
			real := mkdirMode(t, filepath.Join(root, "real"), 0o700)
			link := filepath.Join(root, "state")
			if err := os.Symlink(real, link); err != nil {
				t.Fatal(err)
			}
			return link
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := mkdirMode(t, filepath.Join(t.TempDir(), "root"), 0o755)
			dir := tc.dir(t, root)
			if _, err := OpenStore(dir); err != nil {
				t.Errorf("state directory %s: %v", dir, err)
			}
			if _, err := configs.Parse("t.yaml", []byte("cluster: { bind: 127.0.0.1:7946, state_dir: "+dir+" }\n")); err != nil {
				t.Errorf("ringlb check of %s: %v", dir, err)
			}
		})
	}
}

// mkdirMode makes dir with mode (past the umask) and returns it.
func mkdirMode(t *testing.T, dir string, mode os.FileMode) string {
	t.Helper()
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, mode); err != nil {
		t.Fatal(err)
	}
	return dir
}
