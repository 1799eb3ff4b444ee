package configs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"strings"
	"testing"
	"time"
)

// A secret file other users of the host can read is theirs: the cluster
// keyring makes its reader a member of the cluster (gossip, signed
// hand-offs, claims), an admin token or a users file's hashes the operator
// (the hashes by guessing offline), a TSIG secret a secondary. One they can
// write is theirs to replace. Such a file is refused, naming the fix; one
// the node's group may read (0640, a Kubernetes Secret's 0440) is not.
func TestSecretFilesOpenToOthersAreRefused(t *testing.T) {
	users, err := UsersLine("alice", "a long password")
	if err != nil {
		t.Fatal(err)
	}
	kinds := []struct {
		name, content string
		read          func(path string) error
	}{
		{"keyring", GenerateKey() + "\n", func(p string) error { _, err := ReadKeyring(p); return err }},
		{"admin token", "0123456789abcdef0123456789abcdef\n", func(p string) error { _, err := ReadToken(p); return err }},
		{"users file", users + "\n", func(p string) error { _, err := Admin{UsersFile: p}.Users(); return err }},
		{"TSIG secret", GenerateKey() + "\n", func(p string) error { _, err := ReadTSIGSecret(p); return err }},
		{"join-token secret", "0123456789abcdef0123456789abcdef\n", func(p string) error { _, err := ReadHMACSecret(p); return err }},
	}
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			path := writeFile(t, "secret", k.content)
			for _, mode := range []os.FileMode{0o600, 0o400, 0o640, 0o440} {
				if err := os.Chmod(path, mode); err != nil {
					t.Fatal(err)
				}
				if err := k.read(path); err != nil {
					t.Errorf("mode %04o refused: %v", mode, err)
				}
			}
			for _, mode := range []os.FileMode{0o644, 0o604, 0o666, 0o620, 0o602} {
				if err := os.Chmod(path, mode); err != nil {
					t.Fatal(err)
				}
				err := k.read(path)
				t.Logf("mode %04o: %v", mode, err)
				if err == nil {
					t.Errorf("a %s of mode %04o was read", k.name, mode)
				} else if !strings.Contains(err.Error(), "chmod 600 "+path) {
					t.Errorf("the refusal does not say what to do: %v", err)
				}
			}
		})
	}
}

// A TLS client's key (a static edge's or a monitor's key_file) is a secret
// file like the others; its certificate and the CA bundle are public and
// read whatever their mode.
func TestTLSClientKeyOpenToOthersIsRefused(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "client"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	cert := writeFile(t, "client.pem", certPEM)
	ca := writeFile(t, "ca.pem", certPEM)
	keyFile := writeFile(t, "client-key.pem", string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})))
	for _, f := range []string{cert, ca} {
		if err := os.Chmod(f, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tc := EdgeTLS{CAFile: ca, CertFile: cert, KeyFile: keyFile}
	if _, err := tc.ClientConfig("edge.ringlb.test"); err != nil {
		t.Fatalf("a 0600 key with 0644 certificates: %v", err)
	}
	if err := os.Chmod(keyFile, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = tc.ClientConfig("edge.ringlb.test")
	t.Logf("a key of mode 0644: %v", err)
	if err == nil || !strings.Contains(err.Error(), "chmod 600 "+keyFile) {
		t.Errorf("a TLS client key of mode 0644: %v", err)
	}
}
