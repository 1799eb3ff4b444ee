package configs

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// The attack: the config file, or a secret file it names, sits in a
// directory any user of the host may write (a shared 0777 directory, one
// a tool made so): they rename the file away and put their own in its
// place — gossip without a key, their own admin token — whatever the
// file's own mode, and the next SIGHUP or start applies it. Every
// directory on the way (from /, symlinks resolved) is held to it, as sshd's
// StrictModes holds a user's keys: refused when others may write it and it
// is not sticky. A sticky one (as /tmp, where the tests' directories are)
// and one its group may write are allowed.
func TestConfigFilesInADirectoryOthersMayWriteAreRefused(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("file modes do not say who may write a directory here")
	}
	chmod := func(p string, mode os.FileMode) {
		t.Helper()
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
	}
	good := "cluster: { name: e1, bind: 127.0.0.1:7946 }\nedge: { listen: 127.0.0.1:7101 }\n"
	root := t.TempDir()
	inner := filepath.Join(root, "shared", "ringlb")
	if err := os.MkdirAll(inner, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(inner, "edge.yaml")
	if err := os.WriteFile(path, []byte(good), 0o644); err != nil {
		t.Fatal(err)
	}
	// A link to it from a directory of its own: the way the kernel takes.
	linkDir := filepath.Join(root, "etc")
	if err := os.Mkdir(linkDir, 0o755); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(linkDir, "edge.yaml")
	if err := os.Symlink(path, link); err != nil {
		t.Fatal(err)
	}
	shared := filepath.Dir(inner)
	for _, tc := range []struct {
		dir     string
		mode    os.FileMode
		refused bool
	}{
		{shared, 0o777, true},
		{inner, 0o777, true},
		{inner, 0o707, true},
		{shared, 0o777 | os.ModeSticky, false},
		{inner, 0o775, false},
		{inner, 0o770 | os.ModeSetgid, false},
	} {
		chmod(tc.dir, tc.mode)
		for _, p := range []string{path, link} {
			_, _, err := LoadFile(p)
			t.Logf("%s of mode %v: %v", tc.dir, tc.mode, err)
			switch {
			case !tc.refused && err != nil:
				t.Errorf("%s of mode %v: %v", tc.dir, tc.mode, err)
			case tc.refused:
				var refused *Refused
				if !errors.As(err, &refused) || len(refused.Errors) != 1 || refused.Errors[0].File != p ||
					!strings.Contains(refused.Errors[0].Msg, "directory "+tc.dir+" ") || !strings.Contains(refused.Errors[0].Msg, "chmod o-w "+tc.dir) {
					t.Errorf("%s in %s of mode %v: %v, want refused naming the directory and what to do", p, tc.dir, tc.mode, err)
				}
			}
		}
		chmod(tc.dir, 0o755)
	}

	// A link in such a directory is replaced as a file is.
	chmod(linkDir, 0o777)
	if _, _, err := LoadFile(link); err == nil || !strings.Contains(err.Error(), "directory "+linkDir+" ") {
		t.Errorf("a link in a directory of mode 0777: %v, want refused", err)
	}
	chmod(linkDir, 0o755)

	// Each secret file, at its field, all at once.
	src, files := secretFiles(t, 0o600)
	dir := filepath.Dir(files["cluster.secret_key_file"])
	chmod(dir, 0o777)
	_, err := Parse("t.yaml", []byte(src))
	for field, file := range files {
		if filepath.Dir(file) != dir {
			t.Fatalf("%s: %s is not in %s", field, file, dir)
		}
		expectProblem(t, err, field, "directory "+dir+" ")
	}
	for _, mode := range []os.FileMode{0o777 | os.ModeSticky, 0o775} {
		chmod(dir, mode)
		if _, err := Parse("t.yaml", []byte(src)); err != nil {
			t.Errorf("secret files in a directory of mode %v: %v", mode, err)
		}
	}
}

// The same attack on the other files a config names whose content the node
// believes: a CA bundle (a static edge's, a gslb monitor's — whoever swaps
// it in is trusted as the edge or the balancer it probes), a certificate,
// a DNSSEC key's public half. Each is refused at its field when a
// directory on its way is open to others, as the config file and the
// secret files are; before, only the private keys were.
func TestTLSFilesInADirectoryOthersMayWriteAreRefused(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("file modes do not say who may write a directory here")
	}
	root := t.TempDir()
	shared := filepath.Join(root, "shared")
	if err := os.Mkdir(shared, 0o755); err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM := selfSignedPEM(t)
	for name, content := range map[string]string{"ca.pem": certPEM, "cert.pem": certPEM, "key.pem": keyPEM} {
		if err := os.WriteFile(filepath.Join(shared, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// The private key elsewhere: its own refusal must not hide the
	// certificate's.
	keyDir := filepath.Join(root, "private")
	if err := os.Mkdir(keyDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(keyDir, "key.pem"), []byte(keyPEM), 0o600); err != nil {
		t.Fatal(err)
	}
	balancer := "cluster: { bind: 127.0.0.1:7946 }\nbalancer:\n  tls: { cert_file: shared/cert.pem, key_file: private/key.pem }\n" +
		"  edges:\n    - { name: s1, url: \"https://10.0.0.1:9443\", tls: { ca_file: shared/ca.pem } }\n"
	monitor := strings.Replace(goodGSLB, "bal: { type: http, port: 8080, interval: 500ms, timeout: 250ms }",
		"bal: { type: https, tls: { server_name: bal.ringlb.test, ca_file: shared/ca.pem } }", 1)
	configs := map[string][]string{
		balancer: {"balancer.tls.cert_file", "balancer.edges[0].tls.ca_file"},
		monitor:  {"gslb.monitors.bal.tls.ca_file"},
	}
	for _, tc := range []struct {
		mode    os.FileMode
		refused bool
	}{
		{0o777, true},
		{0o707, true},
		{0o777 | os.ModeSticky, false},
		{0o775, false},
	} {
		if err := os.Chmod(shared, tc.mode); err != nil {
			t.Fatal(err)
		}
		for src, fields := range configs {
			_, err := Parse(filepath.Join(root, "c.yaml"), []byte(src))
			t.Logf("%s of mode %v: %v", shared, tc.mode, err)
			switch {
			case !tc.refused && err != nil:
				t.Errorf("%s of mode %v: %v", shared, tc.mode, err)
			case tc.refused:
				if err == nil {
					t.Errorf("%s of mode %v: %v accepted", shared, tc.mode, fields)
					continue
				}
				for _, field := range fields {
					if e := expectProblem(t, err, field, "directory "+shared+" "); e != nil && !strings.Contains(e.Msg, "chmod o-w "+shared) {
						t.Errorf("%s: %q says not what to do", field, e.Msg)
					}
				}
			}
		}
	}
	if err := os.Chmod(shared, 0o755); err != nil {
		t.Fatal(err)
	}

	// A DNSSEC key's public half, through a link from a directory of its
	// own to one others may write: its DNSKEY is what is published.
	key := newKey(t, keyDir, "ringlb.test", true)
	pub, _ := DNSSECKeyFiles(key)
	moved := filepath.Join(shared, filepath.Base(pub))
	if err := os.Rename(pub, moved); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(moved, pub); err != nil {
		t.Fatal(err)
	}
	if _, err := Parse("t.yaml", []byte(dnssecConfig([]string{key}, ""))); err != nil {
		t.Fatalf("a DNSSEC key in directories of its own: %v", err)
	}
	if err := os.Chmod(shared, 0o777); err != nil {
		t.Fatal(err)
	}
	_, err := Parse("t.yaml", []byte(dnssecConfig([]string{key}, "")))
	t.Logf("a DNSSEC key's .key in %s of mode 0777: %v", shared, err)
	expectProblem(t, err, "gslb.zones[0].dnssec.keys[0].file", "directory "+shared+" ")
	if err := os.Chmod(shared, 0o755); err != nil {
		t.Fatal(err)
	}
}
