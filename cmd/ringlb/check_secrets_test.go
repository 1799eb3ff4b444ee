package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
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

// A TLS key is a secret file: `ringlb check` refuses what a start refuses
// of one (LoadKeyPair, a static edge's ClientConfig), at its field, with
// the file's line — a key other users may read, a key file holding no key,
// the balancer's own (balancer.tls) and a static edge's client key
// (balancer.edges[].tls) alike. Before, the check only stated the files
// and said "ok", and the start, ExecStartPre passed, failed.
func TestCheckRefusesTheTLSKeysAStartRefuses(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the real binary; skipped with -short")
	}
	bin := buildBinary(t)
	for _, tc := range []struct {
		name    string
		keyMode os.FileMode
		swap    bool // the key file holds the certificate instead
		section string
		want    string // the check's problem, after the file's name
	}{
		{"a key of mode 0644", 0o644, false, "  tls:\n    cert_file: cert.pem\n    key_file: key.pem\n",
			":7: balancer.tls.key_file: KEY is open to others (mode 0644)"},
		{"a key file that holds no key", 0o600, true, "  tls:\n    cert_file: cert.pem\n    key_file: key.pem\n",
			":5: balancer.tls: cert_file and key_file: tls: found a certificate rather than a key"},
		{"a static edge's client key of mode 0644", 0o644, false,
			"  edges:\n    - name: s1\n      url: https://127.0.0.1:9443\n      tls: { ca_file: cert.pem, cert_file: cert.pem, key_file: key.pem }\n",
			":8: balancer.edges[0].tls.key_file: KEY is open to others (mode 0644)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			cert, key := selfSigned(t, dir, tc.keyMode)
			if tc.swap {
				data, err := os.ReadFile(cert)
				if err != nil {
					t.Fatal(err)
				}
				writeFile(t, key, string(data))
			}
			path := filepath.Join(dir, "balancer.yaml")
			writeFile(t, path, "cluster: { name: bal-1, bind: 127.0.0.1:0, profile: local }\n"+
				"balancer:\n  listen: 127.0.0.1:0\n  admin: 127.0.0.1:0\n"+tc.section)

			startCode, startOut := runRinglb(t, bin, nil, "balancer", "-config", path, "-shutdown-timeout", "1s")
			t.Logf("ringlb balancer: exit %d\n%s", startCode, lastLines(startOut, 2))
			if startCode != 1 || !strings.Contains(startOut, "key_file") {
				t.Fatalf("the premise: the start refuses this key; exit %d", startCode)
			}
			code, out := runRinglb(t, bin, nil, "check", "-config", path)
			t.Logf("ringlb check: exit %d\n%s", code, out)
			if want := path + strings.ReplaceAll(tc.want, "KEY", key); code != 1 || !strings.Contains(out, want) {
				t.Errorf("ringlb check: exit %d, want 1 with %q, as the start refuses the key", code, want)
			}
		})
	}
}

// selfSigned writes a certificate for localhost and its key (mode keyMode)
// in dir.
func selfSigned(t *testing.T, dir string, keyMode os.FileMode) (cert, key string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"}, DNSNames: []string{"localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	cert, key = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writeFile(t, cert, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	writeFile(t, key, string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})))
	chmod(t, key, keyMode)
	return cert, key
}

func chmod(t *testing.T, path string, mode os.FileMode) {
	t.Helper()
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}
