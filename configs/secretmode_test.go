package configs

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// secretFiles writes one file of every kind of secret a config names —
// the keyring, the admin token, the metrics token, the users file, the
// join-token secret, a TSIG secret and a DNSSEC key pair — each with mode
// perm, and returns a config naming them all with the field path of each.
func secretFiles(t *testing.T, perm os.FileMode) (string, map[string]string) {
	t.Helper()
	dir := t.TempDir()
	write := func(name, content string) string {
		t.Helper()
		f := filepath.Join(dir, name)
		if err := os.WriteFile(f, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(f, perm); err != nil { // beyond the umask
			t.Fatal(err)
		}
		return f
	}
	key := newKey(t, dir, "ringlb.test", true)
	_, priv := DNSSECKeyFiles(key)
	if err := os.Chmod(priv, perm); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"cluster.secret_key_file":                 write("gossip.key", GenerateKey()+"\n"),
		"edge.admin.token_file":                   write("admin.token", GenerateKey()),
		"edge.admin.metrics_token_file":           write("metrics.token", GenerateKey()),
		"edge.admin.users_file":                   write("admin.users", "admin:$2a$04$lEfHSWNLiJdhzxRE17pzy.DpOobvVtLskaSwA51xe2mPZne/B78zG\n"),
		"edge.auth.hmac_secret_file":              write("hmac.key", GenerateKey()),
		"gslb.zones[0].transfer.tsig.secret_file": write("xfr.tsig", GenerateKey()),
		"gslb.zones[0].dnssec.keys[0].file":       priv,
	}
	src := strings.Replace(dnssecConfig([]string{key}, ""), "cluster: { bind: 127.0.0.1:7946 }",
		"cluster: { bind: 127.0.0.1:7946, secret_key_file: "+files["cluster.secret_key_file"]+" }\n"+
			"edge:\n  admin: { listen: 127.0.0.1:0, token_file: "+files["edge.admin.token_file"]+
			", metrics_token_file: "+files["edge.admin.metrics_token_file"]+", users_file: "+files["edge.admin.users_file"]+" }\n"+
			"  auth: { hmac_secret_file: "+files["edge.auth.hmac_secret_file"]+" }", 1)
	src = strings.Replace(src, "      dnssec:", "      transfer: { allow: [127.0.0.1/32], tsig: { name: xfr.ringlb.test., secret_file: "+files["gslb.zones[0].transfer.tsig.secret_file"]+" } }\n      dnssec:", 1)
	return src, files
}

// The attack: a secret file any user of the host may read (a keyring
// written under umask 022, a token copied with cp) gives them the
// cluster, the admin port, the zone. Each is refused at its field, all at
// once, as `ringlb check` and every start and reload see them.
func TestSecretFilesOpenToOthersAreRefused(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("file modes do not say who may read a file here")
	}
	for _, perm := range []os.FileMode{0o644, 0o604, 0o660, 0o620} {
		src, files := secretFiles(t, perm)
		_, err := Parse("t.yaml", []byte(src))
		if err == nil {
			t.Errorf("mode %04o: every secret file accepted", perm)
			continue
		}
		for field, file := range files {
			e := expectProblem(t, err, field, file)
			if e != nil && !strings.Contains(e.Msg, "chmod") {
				t.Errorf("mode %04o, %s: %q says not what to do", perm, field, e.Msg)
			}
		}
	}
}

// What the shipped deployments do is accepted: Kubernetes mounts a Secret
// at 0440 (root:fsGroup), systemd's instructions chmod 0640 root:ringlb, and
// keygen writes 0600 — the DNSSEC .private as the others.
func TestSecretFilesAsDeployedAreAccepted(t *testing.T) {
	for _, perm := range []os.FileMode{0o600, 0o400, 0o440, 0o640} {
		src, _ := secretFiles(t, perm)
		if _, err := Parse("t.yaml", []byte(src)); err != nil {
			t.Errorf("mode %04o: %v", perm, err)
		}
	}
}

// A secret its group may read is accepted; unless root owns it (the
// deliberate root:ringlb 0640, root:fsGroup 0440), the check warns once
// per file, at its field, naming the file, its mode and what to do — never
// the content.
func TestGroupReadableSecretsWarn(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("file modes do not say who may read a file here")
	}
	src, files := secretFiles(t, 0o640)
	if os.Geteuid() == 0 {
		// Root's files are exempt: give them to someone else, as a
		// user's own files are.
		for _, f := range files {
			if err := os.Chown(f, 4321, 4321); err != nil {
				t.Fatal(err)
			}
		}
	}
	cfg, err := Parse("t.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	warned := map[string]int{}
	for _, w := range cfg.Warnings() {
		warned[w.Path]++
		if !strings.Contains(w.Msg, "mode 0640") || !strings.Contains(w.Msg, "chmod 600") || w.Line == 0 {
			t.Errorf("%s: %q: want the mode, what to do and a line", w.Path, w.Error())
		}
	}
	for field, file := range files {
		if warned[field] != 1 {
			t.Errorf("%s (%s): %d warnings, want 1", field, file, warned[field])
		}
		raw, _ := os.ReadFile(file)
		for _, w := range cfg.Warnings() {
			if line := strings.TrimSpace(strings.Split(string(raw), "\n")[0]); strings.Contains(w.Msg, line) {
				t.Errorf("%s: the warning quotes the file", field)
			}
		}
	}
	if len(cfg.Warnings()) != len(files) {
		t.Errorf("%d warnings, want %d:\n%v", len(cfg.Warnings()), len(files), cfg.Warnings())
	}

	if os.Geteuid() != 0 {
		return // cannot give files to root
	}
	src, _ = secretFiles(t, 0o640) // root's own
	if cfg, err := Parse("t.yaml", []byte(src)); err != nil {
		t.Errorf("root's 0640 secrets: %v", err)
	} else if len(cfg.Warnings()) != 0 {
		t.Errorf("root's 0640 secrets warned:\n%v", cfg.Warnings())
	}
}

// What a start or reload applies is what the check read: every secret
// reader of a checked config hands out what the check read, though each
// file was swapped since for one that does not read; a config whose field
// names another file (one built in code) reads that file.
func TestCheckedSecretsAreTheOnesApplied(t *testing.T) {
	src, files := secretFiles(t, 0o600)
	cfg, err := Parse("t.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if err := os.WriteFile(f, []byte("swapped\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	zone := cfg.GSLB.Zones[0]
	readers := map[string]func() error{
		"cluster.secret_key_file":                 func() error { _, err := cfg.Cluster.Keyring(); return err },
		"edge.admin.token_file":                   func() error { _, err := cfg.Edge.Admin.Token(); return err },
		"edge.admin.metrics_token_file":           func() error { _, err := cfg.Edge.Admin.ReadMetricsToken(); return err },
		"edge.admin.users_file":                   func() error { _, err := cfg.Edge.Admin.Users(); return err },
		"edge.auth.hmac_secret_file":              func() error { _, err := cfg.Edge.Auth.Secret(); return err },
		"gslb.zones[0].transfer.tsig.secret_file": func() error { _, err := zone.Transfer.TSIG.Secret(); return err },
		"gslb.zones[0].dnssec.keys[0].file":       func() error { _, _, err := zone.DNSSEC.Keys[0].Read("ringlb.test"); return err },
	}
	for field := range files {
		read := readers[field]
		if read == nil {
			t.Errorf("%s: no reader", field)
			continue
		}
		if err := read(); err != nil {
			t.Errorf("%s swapped after the check: %v", field, err)
		}
	}
	// A keyring named in code is read.
	other := keyringFile(t, 2)
	cfg.Cluster.SecretKeyFile = other
	if keys, err := cfg.Cluster.Keyring(); err != nil || len(keys) != 2 {
		t.Errorf("another keyring named in code: %d keys, %v", len(keys), err)
	}
	if _, err := (Cluster{SecretKeyFile: files["cluster.secret_key_file"]}).Keyring(); err == nil {
		t.Error("a keyring never checked was not read")
	}
}
