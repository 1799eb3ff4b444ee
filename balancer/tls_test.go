package balancer

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/ringlb/ringlb/balancer/httplog"
	"github.com/ringlb/ringlb/balancer/ring"
	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health/healthtest"
)

// writeTestCert writes a self-signed certificate for 127.0.0.1 and returns
// the cert and key file names and a pool trusting it.
func writeTestCert(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = dir+"/cert.pem", dir+"/key.pem"
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

func TestTLS(t *testing.T) {
	certFile, keyFile, pool := writeTestCert(t)
	h := newHarness(t, configs.Balancer{TLS: configs.TLS{CertFile: certFile, KeyFile: keyFile}})
	tlsConfig := &tls.Config{RootCAs: pool}
	h.client.Transport = &http.Transport{TLSClientConfig: tlsConfig}

	resp, err := h.client.Get("https://" + h.addr + "/whoami")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var w whoami
	if err := json.Unmarshal(body, &w); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	if w.Proto != "https" {
		t.Errorf("X-Forwarded-Proto %q under TLS", w.Proto)
	}
	if c := resp.Header.Get("Set-Cookie"); !strings.HasSuffix(c, "; Secure") {
		t.Errorf("assigned cookie under TLS lacks Secure: %q", c)
	}

	d := websocket.Dialer{TLSClientConfig: tlsConfig, HandshakeTimeout: 10 * time.Second}
	conn, wsResp, err := d.Dial("wss://"+h.addr+"/ws", http.Header{"Ctstickiness": {"tls"}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	if got, want := wsResp.Header.Get("X-Ringlb-Edge"), h.owner(t, "tls"); got != want {
		t.Fatalf("wss served by %s, want %s", got, want)
	}
	for _, msg := range []string{"over", "tls"} {
		if err := conn.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		if _, data, err := conn.ReadMessage(); err != nil || string(data) != msg {
			t.Fatalf("echo %q %v", data, err)
		}
	}
}

// New reports what it cannot read (certificate, key) naming the field, and
// refuses a config configs did not provision (the checks are configs').
func TestTLSConfigErrors(t *testing.T) {
	cfg := configs.Balancer{
		TLS: configs.TLS{CertFile: "/nonexistent/cert.pem", KeyFile: "/nonexistent/key.pem"},
	}
	if _, err := New(cfg, "b", ring.New(ring.DefaultConfig()), nil, nil); !errors.Is(err, errNotProvisioned) {
		t.Fatalf("unprovisioned config: %v", err)
	}
	cfg.Provision()
	_, err := New(cfg, "b", ring.New(ring.DefaultConfig()), nil, nil)
	if err == nil || !strings.Contains(err.Error(), "balancer.tls") {
		t.Fatalf("missing certificate: %v", err)
	}
}

// The certificate's expiry is a metric, so an alert can warn before it;
// without TLS it is 0.
func TestCertExpiryMetric(t *testing.T) {
	certFile, keyFile, _ := writeTestCert(t)
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, configs.Balancer{TLS: configs.TLS{CertFile: certFile, KeyFile: keyFile}})
	if got, want := h.metric(t, "ringlb_balancer_tls_cert_expiry_timestamp_seconds", nil), float64(cert.Leaf.NotAfter.Unix()); got != want {
		t.Errorf("expiry %v, want %v", got, want)
	}
	plain := newHarness(t, configs.Balancer{})
	if got := plain.metric(t, "ringlb_balancer_tls_cert_expiry_timestamp_seconds", nil); got != 0 {
		t.Errorf("expiry without TLS: %v", got)
	}
}

// The data port's private key is held to the rule of every secret file a
// config names, as a static edge's client key is: one any user of the host
// can read is refused, naming the chmod. Before, a key of mode 0644 was
// taken by the check and the start without a word.
func TestTLSKeyOpenToOthersRefused(t *testing.T) {
	certFile, keyFile, _ := writeTestCert(t)
	if err := os.Chmod(keyFile, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := configs.Balancer{TLS: configs.TLS{CertFile: certFile, KeyFile: keyFile}}
	cfg.Provision()
	_, err := New(cfg, "b", ring.New(ring.DefaultConfig()), nil, nil)
	if err == nil || !strings.Contains(err.Error(), "balancer.tls") || !strings.Contains(err.Error(), "open to others") {
		t.Fatalf("a TLS key of mode 0644: %v, want a refusal naming balancer.tls and the mode", err)
	}
}

// A failed TLS handshake is logged as fasthttp's error line, and crypto/tls
// names in it every application protocol (ALPN) the client offered when
// none is HTTP/1.1: a ClientHello of 21,000 one-byte names made one line
// of 315 KB, anyone's to send once per log interval. The line is cut.
func TestTLSHandshakeErrorLineBounded(t *testing.T) {
	var logs lockedBuffer
	certFile, keyFile, pool := writeTestCert(t)
	_, addr := serveBalancerLogging(t, configs.Balancer{TLS: configs.TLS{CertFile: certFile, KeyFile: keyFile}},
		ring.New(ring.DefaultConfig()), slog.New(slog.NewJSONHandler(&logs, nil)))
	protos := make([]string, 21000)
	for i := range protos {
		protos[i] = string(rune('a' + i%26))
	}
	c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, NextProtos: protos})
	if err == nil {
		c.Close()
		t.Fatal("a handshake offering no HTTP/1.1 succeeded")
	}
	var line string
	healthtest.WaitUntil(t, "the handshake's error line", func() bool {
		for l := range strings.Lines(logs.String()) {
			if strings.Contains(l, "application protocols") {
				line = l
				return true
			}
		}
		return false
	})
	t.Logf("handshake error line: %d bytes for a ClientHello offering %d protocols", len(line), len(protos))
	if len(line) > 2*httplog.MaxLine {
		t.Errorf("handshake error line of %d bytes, want it cut at %d: %.200s", len(line), httplog.MaxLine, line)
	}
}
