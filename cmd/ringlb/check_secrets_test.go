package main

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// ringlb check reports secret files open to others or writable by their
// group as it reports every problem — the config's file and line, the field
// path, the secret's file and mode — all in one run, and a secret its group
// may read as a warning, exiting 0 (configs/secretmode.go).
func TestCheckSecretFileModes(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("file modes do not say who may read a file here")
	}
	dir := t.TempDir()
	for _, name := range []string{"gossip.key", "admin.token"} {
		var out, errOut strings.Builder
		if code := run(context.Background(), []string{"keygen", "-o", filepath.Join(dir, name)}, &out, &errOut); code != 0 {
			t.Fatalf("keygen: exit %d: %s", code, errOut.String())
		}
	}
	key, token := filepath.Join(dir, "gossip.key"), filepath.Join(dir, "admin.token")
	cfg := filepath.Join(dir, "edge.yaml")
	writeFile(t, cfg, "cluster: { bind: 0.0.0.0:7946, secret_key_file: gossip.key }\nedge:\n  admin: { listen: 0.0.0.0:9101, token_file: admin.token }\n")
	check := func() (int, string, string) {
		var out, errOut strings.Builder
		code := run(context.Background(), []string{"check", "-config", cfg}, &out, &errOut)
		return code, out.String(), errOut.String()
	}

	chmod(t, key, 0o644)
	chmod(t, token, 0o660)
	code, _, stderr := check()
	t.Logf("keyring 0644, token 0660: exit %d\n%s", code, stderr)
	if code != 1 ||
		!strings.Contains(stderr, cfg+":1: cluster.secret_key_file: "+key+" is open to others (mode 0644)") ||
		!strings.Contains(stderr, cfg+":3: edge.admin.token_file: "+token+" is writable by its group") ||
		!strings.Contains(stderr, "2 problem(s)") {
		t.Errorf("check: exit %d, want 1 with both files named at their fields", code)
	}

	chmod(t, key, 0o640)
	chmod(t, token, 0o440)
	if os.Geteuid() == 0 {
		// Root's files are taken as deliberate: give one to someone else.
		if err := os.Chown(key, 4321, 4321); err != nil {
			t.Fatal(err)
		}
	}
	code, stdout, stderr := check()
	t.Logf("keyring 0640 not root's, token 0440: exit %d\n%s%s", code, stdout, stderr)
	if code != 0 || !strings.Contains(stdout, ": ok: ") ||
		!strings.Contains(stderr, "warning: "+cfg+":1: cluster.secret_key_file: "+key+" is readable by its group") ||
		!strings.Contains(stderr, "mode 0640") {
		t.Errorf("check: exit %d, want 0 with a warning for the keyring", code)
	}
	if os.Geteuid() == 0 && strings.Contains(stderr, "admin.token") {
		t.Errorf("root's 0440 token warned: %s", stderr)
	}
}

func chmod(t *testing.T, path string, mode os.FileMode) {
	t.Helper()
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}
