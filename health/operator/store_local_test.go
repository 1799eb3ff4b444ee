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
