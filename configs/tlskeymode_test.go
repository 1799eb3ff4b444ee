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
	if err == nil || !strings.Contains(err.Error(), "chmod o= "+keyFile) {
		t.Errorf("a TLS client key of mode 0644: %v", err)
	}
}
