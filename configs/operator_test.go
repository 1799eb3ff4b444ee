package configs

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The admin plane's settings: users files (bcrypt hashes only, never quoted
// in an error), the environment's user, the history interval, the state
// directory.
func TestOperatorSettings(t *testing.T) {
	line, err := UsersLine("alice", "a long password")
	if err != nil {
		t.Fatal(err)
	}
	users := writeFile(t, "users", "# operators\n"+line+"\n")
	plain := writeFile(t, "plain", "alice:hunter2-in-clear\n")
	dup := writeFile(t, "dup", line+"\n"+line+"\n")
	badName := writeFile(t, "badname", "al ice:"+strings.SplitN(line, ":", 2)[1]+"\n")
	notDir := writeFile(t, "file", "")
	openDir := filepath.Join(t.TempDir(), "open")
	if err := os.Mkdir(openDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(openDir, 0o777); err != nil {
		t.Fatal(err)
	}
	groupDir := filepath.Join(t.TempDir(), "group")
	if err := os.Mkdir(groupDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(groupDir, 0o770); err != nil {
		t.Fatal(err)
	}
	readable := filepath.Join(t.TempDir(), "readable")
	if err := os.Mkdir(readable, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(readable, 0o755); err != nil {
		t.Fatal(err)
	}
	// A parent others can write: they rename the directory away and put
	// another in its place (CheckPath).
	openParent := filepath.Join(t.TempDir(), "shared")
	if err := os.Mkdir(openParent, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(openParent, "state"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(openParent, 0o777); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, yaml, path, msg string
	}{
		{"a users file", "balancer: { admin: { users_file: " + users + " } }", "", ""},
		{"a password in clear", "balancer: { admin: { users_file: " + plain + " } }", "balancer.admin.users_file", "not a bcrypt hash"},
		{"a user twice", "edge: { admin: { users_file: " + dup + " } }", "edge.admin.users_file", "listed twice"},
		{"a bad user name", "gslb: { admin: { users_file: " + badName + " } }", "gslb.admin.users_file", "user name"},
		{"a missing users file", "balancer: { admin: { users_file: /does/not/exist } }", "balancer.admin.users_file", "cannot read"},
		{"history too often", "balancer: { admin: { history_interval: 10ms } }", "balancer.admin.history_interval", "must be in range [100ms, 10m0s]"},
		{"admin connections unbounded", "edge: { admin: { max_connections: -1 } }", "edge.admin.max_connections", "must be in range [1, 10000]"},
		{"an admin request timeout too short", "gslb: { admin: { request_timeout: 10ms } }", "gslb.admin.request_timeout", "must be in range [1s, 10m0s]"},
		{"a state directory to make", "cluster: { state_dir: " + filepath.Join(t.TempDir(), "state") + " }", "", ""},
		{"a state directory that is a file", "cluster: { state_dir: " + notDir + " }", "cluster.state_dir", "is not a directory"},
		{"a state directory without a parent", "cluster: { state_dir: /does/not/exist/state }", "cluster.state_dir", "nor does its parent"},
		{"a state directory others can write", "cluster: { state_dir: " + openDir + " }", "cluster.state_dir", "chmod 700 " + openDir},
		{"a state directory its group can write", "cluster: { state_dir: " + groupDir + " }", "cluster.state_dir", "other users can write it"},
		{"a state directory others can read", "cluster: { state_dir: " + readable + " }", "", ""},
		{"a state directory in a directory others can write", "cluster: { state_dir: " + filepath.Join(openParent, "state") + " }", "cluster.state_dir", "directory " + openParent + " has mode 0777, so other users could put another state directory in its place: chmod go-w " + openParent},
		{"a state directory to make in a directory others can write", "cluster: { state_dir: " + filepath.Join(openParent, "new") + " }", "cluster.state_dir", "chmod go-w " + openParent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			yaml := tt.yaml
			if !strings.HasPrefix(yaml, "cluster:") {
				yaml = "cluster: { bind: 127.0.0.1:7946 }\n" + yaml
			} else {
				yaml = strings.Replace(yaml, "cluster: { ", "cluster: { bind: 127.0.0.1:7946, ", 1)
			}
			_, err := Parse("t.yaml", []byte(yaml))
			if tt.msg == "" {
				if err != nil {
					t.Fatalf("want no error, got:\n%v", err)
				}
				return
			}
			expectProblem(t, err, tt.path, tt.msg)
			if strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), "$2a$") {
				t.Errorf("the error quotes a password or hash: %v", err)
			}
		})
	}
	cfg, err := Parse("t.yaml", []byte("cluster: { bind: 127.0.0.1:7946, state_dir: /var/lib/ringlb }\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Balancer.Admin.StateDir != "/var/lib/ringlb" || cfg.Edge.Admin.HistoryInterval.D() != DefaultHistoryInterval {
		t.Errorf("provisioned admin: %+v", cfg.Balancer.Admin)
	}
	t.Setenv(EnvAdminUser, "bob")
	t.Setenv(EnvAdminPasswordHash, strings.SplitN(line, ":", 2)[1])
	u, err := (Admin{UsersFile: users}).Users()
	if err != nil || len(u) != 2 || u["bob"] == nil {
		t.Errorf("users from the file and the environment: %v %v", u, err)
	}
	t.Setenv(EnvAdminPasswordHash, "")
	if _, err := (Admin{}).Users(); err == nil {
		t.Error("RINGLB_ADMIN_USER without a hash: no error")
	}
}
