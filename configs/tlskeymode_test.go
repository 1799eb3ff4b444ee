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
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// selfSignedPEM is a self-signed certificate (a CA too) and its key, PEM.
func selfSignedPEM(t *testing.T) (certPEM, keyPEM string) {
	t.Helper()
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
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}))
}

// A TLS client's key (a static edge's or a monitor's key_file) is a secret
// file like the others; its certificate and the CA bundle are public and
// read whatever their mode.
func TestTLSClientKeyOpenToOthersIsRefused(t *testing.T) {
	certPEM, keyPEM := selfSignedPEM(t)
	cert := writeFile(t, "client.pem", certPEM)
	ca := writeFile(t, "ca.pem", certPEM)
	keyFile := writeFile(t, "client-key.pem", keyPEM)
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
	_, err := tc.ClientConfig("edge.ringlb.test")
	t.Logf("a key of mode 0644: %v", err)
	if err == nil || !strings.Contains(err.Error(), "chmod o= "+keyFile) {
		t.Errorf("a TLS client key of mode 0644: %v", err)
	}
}

// The check loads every TLS file a config names as the start loads it
// (LoadKeyPair, ClientConfig's CA bundle), and refuses at its field, with
// its line, what the start would refuse: a key open to others, a key file
// that holds no key, a CA bundle without a certificate — the balancer's
// own key (balancer.tls), a static edge's and a gslb monitor's client key
// alike. Before, it only stated the files, and passed all of these. A key
// its group may read is warned of, as every secret file is.
func TestCheckLoadsTheTLSFilesAsTheStartDoes(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("file modes do not say who may read a file here")
	}
	dir := t.TempDir()
	certPEM, keyPEM := selfSignedPEM(t)
	write := func(name, content string, mode os.FileMode) {
		t.Helper()
		f := filepath.Join(dir, name)
		if err := os.WriteFile(f, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(f, mode); err != nil {
			t.Fatal(err)
		}
	}
	write("cert.pem", certPEM, 0o644)
	write("key.pem", keyPEM, 0o600)
	write("open-key.pem", keyPEM, 0o644)
	write("cert-as-key.pem", certPEM, 0o600)
	write("empty.pem", "", 0o644)
	const loopback = "cluster: { bind: 127.0.0.1:7946 }\n"
	monitor := func(files string) string {
		return strings.Replace(goodGSLB, "bal: { type: http, port: 8080, interval: 500ms, timeout: 250ms }", "bal: { type: https, tls: { server_name: bal.ringlb.test, "+files+" } }", 1)
	}
	// Each TLS section, with its files given as FILES.
	sections := map[string]string{
		"balancer.tls":          loopback + "balancer:\n  tls: { FILES }\n",
		"balancer.edges[0].tls": loopback + "balancer:\n  edges:\n    - { name: s1, url: \"https://10.0.0.1:9443\", tls: { FILES } }\n",
		"gslb.monitors.bal.tls": monitor("FILES"),
	}
	parse := func(path, files string) (*Config, error) {
		t.Helper()
		return Parse(filepath.Join(dir, "c.yaml"), []byte(strings.Replace(sections[path], "FILES", files, 1)))
	}
	refusal := func(path, files string) error {
		t.Helper()
		_, err := parse(path, files)
		return err
	}
	for path := range sections {
		ca := "ca_file: cert.pem, "
		if path == "balancer.tls" {
			ca = "" // the balancer's own certificate: no CA
		}
		if _, err := parse(path, ca+"cert_file: cert.pem, key_file: key.pem"); err != nil {
			t.Errorf("%s with a good pair: %v", path, err)
		}
		e := expectProblem(t, refusal(path, ca+"cert_file: cert.pem, key_file: open-key.pem"), path+".key_file", "open-key.pem is open to others (mode 0644)")
		if e != nil && e.Line == 0 {
			t.Errorf("%s: %v has no line", path, e)
		}
		expectProblem(t, refusal(path, ca+"cert_file: cert.pem, key_file: cert-as-key.pem"), path, "cert_file and key_file: tls: found a certificate rather than a key")
		expectProblem(t, refusal(path, ca+"cert_file: nope.pem, key_file: key.pem"), path+".cert_file", "cannot read")
		if ca != "" {
			expectProblem(t, refusal(path, "ca_file: empty.pem, cert_file: cert.pem, key_file: key.pem"), path+".ca_file", "empty.pem: no PEM certificate in it")
		}
	}

	// A key its group may read, not root's: a warning at its field.
	write("group-key.pem", keyPEM, 0o640)
	if os.Geteuid() == 0 {
		if err := os.Chown(filepath.Join(dir, "group-key.pem"), 4321, 4321); err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := parse("balancer.tls", "cert_file: cert.pem, key_file: group-key.pem")
	if err != nil {
		t.Fatal(err)
	}
	if w := cfg.Warnings(); len(w) != 1 || w[0].Path != "balancer.tls.key_file" || !strings.Contains(w[0].Msg, "is readable by its group") || w[0].Line == 0 {
		t.Errorf("a group-readable TLS key: warnings %v, want one at balancer.tls.key_file", w)
	}
}

// A start uses the TLS files as the config's check loaded them: read once,
// as the config's other secrets are. Before, the check read them and the
// start read them again, so a file swapped between the two (a renewal
// landing mid-start, or anyone who can write there) was served unchecked.
func TestTLSFilesAreUsedAsChecked(t *testing.T) {
	dir := t.TempDir()
	certPEM, keyPEM := selfSignedPEM(t)
	for name, content := range map[string]string{"cert.pem": certPEM, "key.pem": keyPEM, "ca.pem": certPEM} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := Parse(filepath.Join(dir, "c.yaml"), []byte("cluster: { bind: 127.0.0.1:7946 }\nbalancer:\n  tls: { cert_file: cert.pem, key_file: key.pem }\n  edges:\n    - { name: s1, url: \"https://10.0.0.1:9443\", tls: { ca_file: ca.pem, cert_file: cert.pem, key_file: key.pem } }\n"))
	if err != nil {
		t.Fatal(err)
	}
	// Swapped for files that load nothing, after the check.
	for _, name := range []string{"cert.pem", "key.pem", "ca.pem"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("swapped\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if cert, err := cfg.Balancer.TLS.KeyPair(); err != nil || len(cert.Certificate) == 0 {
		t.Errorf("balancer.tls after its files were swapped: %v; want the pair the check loaded", err)
	}
	c, err := cfg.Balancer.Edges[0].TLS.ClientConfig("10.0.0.1")
	if err != nil || c.RootCAs == nil || len(c.Certificates) != 1 {
		t.Errorf("a static edge's tls after its files were swapped: %v; want the CA and pair the check loaded", err)
	}
	// A config built in code, never checked, reads the files.
	if _, err := (TLS{CertFile: filepath.Join(dir, "cert.pem"), KeyFile: filepath.Join(dir, "key.pem")}).KeyPair(); err == nil {
		t.Error("an unchecked TLS section's KeyPair loaded swapped files")
	}
}
