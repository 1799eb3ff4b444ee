package balancer

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/valyala/fasthttp"

	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health/healthtest"
)

// testCA is a certificate authority of a test: it issues server and client
// certificates into files.
type testCA struct {
	dir  string
	key  *ecdsa.PrivateKey
	cert *x509.Certificate
	file string // the CA certificate, PEM
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	ca := &testCA{dir: t.TempDir(), key: key, cert: cert}
	ca.file = filepath.Join(ca.dir, "ca.pem")
	if err := os.WriteFile(ca.file, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return ca
}

// issue writes a certificate for dnsName (and 127.0.0.1) with usage, and its
// key, returning both file names.
func (ca *testCA) issue(t *testing.T, name, dnsName string, usage x509.ExtKeyUsage) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: dnsName},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		DNSNames: []string{dnsName}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile = filepath.Join(ca.dir, name+".pem"), filepath.Join(ca.dir, name+"-key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600)
	return certFile, keyFile
}

// startTLSBackend runs a third-party HTTPS backend named name: /whoami and
// a WebSocket echo on /ws; with clientCA, it requires a client certificate
// signed by it.
func startTLSBackend(t *testing.T, name string, ca *testCA, clientCA *testCA) string {
	t.Helper()
	certFile, keyFile := ca.issue(t, name, name+".backends.test", x509.ExtKeyUsageServerAuth)
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{pair}, NextProtos: []string{"http/1.1"}}
	if clientCA != nil {
		cfg.ClientCAs = x509.NewCertPool()
		cfg.ClientCAs.AddCert(clientCA.cert)
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	upgrader := websocket.FastHTTPUpgrader{CheckOrigin: func(*fasthttp.RequestCtx) bool { return true }}
	srv := &fasthttp.Server{Logger: quietLog{}, Handler: func(ctx *fasthttp.RequestCtx) {
		ctx.Response.Header.Set("X-Ringlb-Edge", name)
		switch string(ctx.Path()) {
		case "/ws":
			_ = upgrader.Upgrade(ctx, func(c *websocket.Conn) {
				defer c.Close()
				for {
					mt, data, err := c.ReadMessage()
					if err != nil || c.WriteMessage(mt, data) != nil {
						return
					}
				}
			})
		default:
			ctx.SetBodyString(`{"edge":"` + name + `"}`)
		}
	}}
	go srv.Serve(tls.NewListener(ln, cfg))
	t.Cleanup(func() { srv.Shutdown(); ln.Close() })
	return "https://" + ln.Addr().String()
}

// Static edges over HTTPS: the balancer verifies the backend's certificate
// against the CA it is given (and the name in server_name) and presents its
// client certificate, for plain requests and WebSocket tunnels alike; a
// backend whose certificate another CA signed, or that names another host,
// or that wants a client certificate the balancer does not have, is not
// reached. There is no setting that skips verification.
func TestStaticEdgesOverTLS(t *testing.T) {
	ca := newTestCA(t, "backends CA")
	other := newTestCA(t, "someone else's CA")
	clients := newTestCA(t, "balancers CA")
	clientCert, clientKey := clients.issue(t, "bal", "bal.test", x509.ExtKeyUsageClientAuth)
	url := startTLSBackend(t, "relay-1", ca, clients)

	for _, tt := range []struct {
		name  string
		tls   configs.EdgeTLS
		works bool
	}{
		{"verified, mutual", configs.EdgeTLS{CAFile: ca.file, ServerName: "relay-1.backends.test", CertFile: clientCert, KeyFile: clientKey}, true},
		{"the URL's IP as the name", configs.EdgeTLS{CAFile: ca.file, CertFile: clientCert, KeyFile: clientKey}, true},
		{"wrong CA", configs.EdgeTLS{CAFile: other.file, ServerName: "relay-1.backends.test", CertFile: clientCert, KeyFile: clientKey}, false},
		{"system roots", configs.EdgeTLS{ServerName: "relay-1.backends.test", CertFile: clientCert, KeyFile: clientKey}, false},
		{"wrong name", configs.EdgeTLS{CAFile: ca.file, ServerName: "relay-9.backends.test", CertFile: clientCert, KeyFile: clientKey}, false},
		{"no client certificate", configs.EdgeTLS{CAFile: ca.file, ServerName: "relay-1.backends.test"}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cl := healthtest.New(t)
			b := startClusterBalancer(t, cl, "bal-1", configs.Balancer{
				Edges:        []configs.StaticEdge{{Name: "relay-1", URL: url, Monitor: testMonitor(), TLS: tt.tls}},
				SessionTable: configs.SessionTable{StartupWait: configs.Duration(time.Millisecond)},
			})
			waitRing(t, b, "relay-1")
			healthtest.WaitUntil(t, "table ready", b.bal.table.routable)
			resp, body := b.get(t, "/whoami", http.Header{"Ctstickiness": {"k"}})
			if !tt.works {
				if resp.StatusCode != http.StatusBadGateway {
					t.Fatalf("GET through a backend that must not be trusted: %d %s, want 502", resp.StatusCode, body)
				}
				d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
				if c, resp, err := d.Dial("ws://"+b.addr+"/ws", http.Header{"Ctstickiness": {"k"}}); err == nil {
					c.Close()
					t.Fatal("a WebSocket reached a backend that must not be trusted")
				} else if resp == nil || resp.StatusCode != http.StatusBadGateway {
					t.Fatalf("WebSocket: %v, want 502", err)
				}
				return
			}
			if resp.StatusCode != http.StatusOK || string(body) != `{"edge":"relay-1"}` {
				t.Fatalf("GET: %d %s", resp.StatusCode, body)
			}
			c, resp := dialWS(t, b.addr, "/ws", http.Header{"Ctstickiness": {"k"}})
			defer c.Close()
			if resp.Header.Get("X-Ringlb-Edge") != "relay-1" {
				t.Fatalf("101 from %q", resp.Header.Get("X-Ringlb-Edge"))
			}
			if err := c.WriteMessage(websocket.TextMessage, []byte("over tls")); err != nil {
				t.Fatal(err)
			}
			if _, got, err := c.ReadMessage(); err != nil || string(got) != "over tls" {
				t.Fatalf("echo through the TLS tunnel: %q %v", got, err)
			}
		})
	}
}

// quietLog drops a test server's error lines (the refused handshakes are
// the point).
type quietLog struct{}

func (quietLog) Printf(string, ...any) {}

// A static edge whose TLS handshake fails is a failed dial, for a plain
// request as for a WebSocket: nothing was sent, so the request goes to the
// next candidate. The handshake is bounded by dial_timeout with the
// connect, so an edge (or anyone on the path to it) that accepts the
// connection and never finishes the handshake holds no request for longer.
func TestEdgeHandshakeFailureFailsOver(t *testing.T) {
	ca := newTestCA(t, "backends CA")
	other := newTestCA(t, "someone else's CA")
	good := startTLSBackend(t, "relay-good", ca, nil)
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { silent.Close() })
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() }) // held, never answered
		}
	}()
	for _, tt := range []struct {
		name, url string
	}{
		{"a certificate of another CA", startTLSBackend(t, "relay-bad", other, nil)},
		{"a handshake that never finishes", "https://" + silent.Addr().String()},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cl := healthtest.New(t)
			b := startClusterBalancer(t, cl, "bal-1", configs.Balancer{
				Edges: []configs.StaticEdge{
					{Name: "relay-bad", URL: tt.url, Monitor: testMonitor(), TLS: configs.EdgeTLS{CAFile: ca.file}},
					{Name: "relay-good", URL: good, Monitor: testMonitor(), TLS: configs.EdgeTLS{CAFile: ca.file}},
				},
				DialTimeout:  configs.Duration(time.Second),
				SessionTable: configs.SessionTable{StartupWait: configs.Duration(time.Millisecond)},
			})
			waitRing(t, b, "relay-bad", "relay-good")
			healthtest.WaitUntil(t, "table ready", b.bal.table.routable)
			key := ""
			for i := 0; key == ""; i++ {
				if k := fmt.Sprint("k", i); b.owner(t, k) == "relay-bad" {
					key = k
				}
			}
			start := time.Now()
			resp, body := b.get(t, "/whoami", http.Header{"Ctstickiness": {key}})
			t.Logf("GET for a key of relay-bad: %d %s after %s; backend errors: dial %v, response %v", resp.StatusCode, body,
				time.Since(start).Round(time.Millisecond),
				b.metric(t, "ringlb_balancer_backend_errors_total", map[string]string{"edge": "relay-bad", "kind": "dial"}),
				b.metric(t, "ringlb_balancer_backend_errors_total", map[string]string{"edge": "relay-bad", "kind": "response"}))
			if resp.StatusCode != http.StatusOK || string(body) != `{"edge":"relay-good"}` {
				t.Fatalf("GET for a key of an edge whose handshake fails: %d %s, want 200 from relay-good", resp.StatusCode, body)
			}
		})
	}
}

// A reload re-reads the files of a static edge's tls block: a renewed
// client certificate (short-lived ones are renewed in place, under the same
// file names) is what the balancer presents from then on, and a rotated CA
// bundle is what it verifies with. Kept from the first request on, an
// expiring client certificate could only be replaced by a restart.
func TestEdgeTLSFilesReadAgainOnReload(t *testing.T) {
	ca := newTestCA(t, "backends CA")
	clients := newTestCA(t, "balancers CA")
	clientCert, clientKey := clients.issue(t, "bal", "bal-old.test", x509.ExtKeyUsageClientAuth)

	backend := startMTLSBackend(t, ca, clients) // names the client certificate it was shown

	cl := healthtest.New(t)
	b := startClusterBalancer(t, cl, "bal-1", configs.Balancer{
		Edges: []configs.StaticEdge{{Name: "relay-1", URL: backend.url, Monitor: testMonitor(),
			TLS: configs.EdgeTLS{CAFile: ca.file, CertFile: clientCert, KeyFile: clientKey}}},
		SessionTable: configs.SessionTable{StartupWait: configs.Duration(time.Millisecond)},
	})
	waitRing(t, b, "relay-1")
	healthtest.WaitUntil(t, "table ready", b.bal.table.routable)
	shown := func() string { t.Helper(); return certShown(t, b) }
	if got := shown(); got != "bal-old.test" {
		t.Fatalf("client certificate shown: %q", got)
	}
	clients.issue(t, "bal", "bal-new.test", x509.ExtKeyUsageClientAuth) // renewed in place
	if err := b.bal.Reload(b.bal.current.Load().cfg); err != nil {
		t.Fatal(err)
	}
	got := shown()
	t.Logf("client certificate shown after its files were renewed and a reload: %q", got)
	if got != "bal-new.test" {
		t.Errorf("client certificate shown after a reload: %q, want the renewed bal-new.test", got)
	}
	// Files caught mid-write refuse the reload, which changes nothing.
	if err := os.WriteFile(clientCert, []byte("-----BEGIN CERT"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := b.bal.Reload(b.bal.current.Load().cfg); err == nil || !strings.Contains(err.Error(), "balancer.edges[0].tls.cert_file") {
		t.Fatalf("reload with a client certificate that does not load: %v", err)
	}
	if got := shown(); got != "bal-new.test" {
		t.Errorf("client certificate shown after a refused reload: %q", got)
	}
}

// certShown is the client certificate name the mutual-TLS backend behind b
// (startMTLSBackend) was shown by a request through b.
func certShown(t *testing.T, b *clusterBalancer) string {
	t.Helper()
	resp, body := b.get(t, "/whoami", http.Header{"Ctstickiness": {"k"}})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET through the TLS edge: %d %s", resp.StatusCode, body)
	}
	return string(body)
}
