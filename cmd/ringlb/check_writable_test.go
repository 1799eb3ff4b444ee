package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// `ringlb check` (the unit's ExecStartPre: the node's own user) refuses a
// place the node is to write and cannot: an access log
// (balancer.access_log.path) or a state directory (cluster.state_dir) to
// be made in a directory of root's (0755, as /var/log and /var/lib are)
// it may not create files in. Before, the check asked only that the
// directory exist and said "ok"; the start then failed on the log, and ran
// with its state in memory only (a restart forgetting drains and logins),
// an error in its log. The start refuses both now, by the same rule. Run
// as an unprivileged user (uid 65534); nothing is created.
func TestCheckRefusesWhatTheNodeCannotWrite(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the real binary; skipped with -short")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to run the binary as another user")
	}
	// Not t.TempDir: its parent is 0700, which uid 65534 cannot enter.
	dir, err := os.MkdirTemp("", "ringlb-writable-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	chmod(t, dir, 0o755)
	data, err := os.ReadFile(buildBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "ringlb")
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	chmod(t, bin, 0o755)
	roots := filepath.Join(dir, "roots") // root's, 0755: uid 65534 cannot create files in it
	if err := os.Mkdir(roots, 0o755); err != nil {
		t.Fatal(err)
	}
	chmod(t, roots, 0o755)
	nobody := &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}

	for _, tc := range []struct{ name, file, want string }{
		{"an access log", "cluster: { name: bal-1, bind: 127.0.0.1:0, profile: local }\nbalancer:\n  listen: 127.0.0.1:0\n  admin: 127.0.0.1:0\n  access_log:\n    enabled: true\n    path: roots/access.log\n",
			":7: balancer.access_log.path: " + roots + "/access.log: this user (uid 65534) cannot create files in " + roots},
		{"a state directory", "cluster: { name: bal-1, bind: 127.0.0.1:0, profile: local, state_dir: roots/state }\nbalancer:\n  listen: 127.0.0.1:0\n  admin: 127.0.0.1:0\n",
			":1: cluster.state_dir: state directory " + roots + "/state does not exist, and this user (uid 65534) cannot create files in " + roots},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, "balancer.yaml")
			writeFile(t, path, tc.file)
			chmod(t, path, 0o644)
			startCode, startOut := runRinglb(t, bin, nobody, "balancer", "-config", path, "-shutdown-timeout", "1s")
			t.Logf("ringlb balancer (uid 65534): exit %d\n%s", startCode, lastLines(startOut, 2))
			if startCode != 1 {
				t.Errorf("ringlb balancer: exit %d, want 1: the start refuses it too", startCode)
			}
			code, out := runRinglb(t, bin, nobody, "check", "-config", path)
			t.Logf("ringlb check (uid 65534): exit %d\n%s", code, out)
			if want := path + tc.want; code != 1 || !strings.Contains(out, want) {
				t.Errorf("ringlb check: exit %d, want 1 with %q, as the start fails", code, want)
			}
			if _, err := os.Stat(filepath.Join(roots, "access.log")); err == nil {
				t.Error("the check created the access log")
			}
		})
	}
}
