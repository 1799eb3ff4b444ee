package balancer

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health/healthtest"
)

func holdConn(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "GET /_ringlb/health HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("held connection: %v %v", resp, err)
	}
	return c
}

// Reload changes key sources and limits for new requests while a live
// WebSocket tunnel goes on untouched; a reload that needs a restart changes
// nothing.
func TestReloadKeepsTunnels(t *testing.T) {
	f := false
	cfg := configs.Balancer{Key: configs.Key{Sources: []string{"header:ctstickiness"}, AssignCookie: &f}}
	h := newHarness(t, cfg)

	ws, _, err := websocket.DefaultDialer.Dial("ws://"+h.addr+"/ws", http.Header{"Ctstickiness": {"live"}})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	echo := func(msg string) {
		t.Helper()
		ws.SetReadDeadline(time.Now().Add(10 * time.Second))
		if err := ws.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
			t.Fatalf("tunnel write: %v", err)
		}
		if _, got, err := ws.ReadMessage(); err != nil || string(got) != msg {
			t.Fatalf("tunnel echo: %q %v", got, err)
		}
	}
	echo("before")
	if resp, _ := h.get(t, "/whoami?token=abc", nil); resp.StatusCode != 400 {
		t.Fatalf("query key before reload: %d, want 400", resp.StatusCode)
	}

	next := cfg
	next.Key.Sources = []string{"header:ctstickiness", "query:token"}
	next.Limits.MaxConnectionsPerIP = 2
	if err := h.bal.Reload(provision(next)); err != nil {
		t.Fatal(err)
	}
	echo("after")
	if resp, body := h.get(t, "/whoami?token=abc", nil); resp.StatusCode != 200 {
		t.Fatalf("query key after reload: %d %s", resp.StatusCode, body)
	}
	h.client.CloseIdleConnections()
	holdConn(t, h.addr)
	holdConn(t, h.addr)
	if resp, body := proxiedRequest(t, h.addr, nil, "k"); resp == nil || resp.StatusCode != 429 {
		t.Fatalf("connection over the reloaded per-address limit: %v %s", resp, body)
	}
	echo("still")

	bad := next
	bad.Listen = "127.0.0.1:1"
	bad.Key.Sources = []string{"header:ctstickiness"}
	if err := h.bal.Reload(provision(bad)); err == nil || !strings.Contains(err.Error(), "needs a restart") {
		t.Fatalf("reload with a new listen address: %v", err)
	}
	if got := h.bal.current.Load().cfg.Key.Sources; len(got) != 2 {
		t.Fatalf("refused reload changed the key sources to %v", got)
	}
	if h.bal.Tunnels() != 1 {
		t.Fatalf("tunnels = %d, want the live one", h.bal.Tunnels())
	}
}

func TestReloadSwapsCertificate(t *testing.T) {
	certA, keyA, poolA := writeTestCert(t)
	certB, keyB, poolB := writeTestCert(t)
	cfg := configs.Balancer{TLS: configs.TLS{CertFile: certA, KeyFile: keyA}}
	h := newHarness(t, cfg)
	served := func(pool *x509.CertPool) error {
		c, err := tls.Dial("tcp", h.addr, &tls.Config{RootCAs: pool})
		if err == nil {
			c.Close()
		}
		return err
	}
	if err := served(poolA); err != nil {
		t.Fatalf("certificate A: %v", err)
	}
	// A connection made before the reload keeps working after it.
	old, err := tls.Dial("tcp", h.addr, &tls.Config{RootCAs: poolA})
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()

	next := cfg
	next.TLS = configs.TLS{CertFile: certB, KeyFile: keyB}
	if err := h.bal.Reload(provision(next)); err != nil {
		t.Fatal(err)
	}
	if err := served(poolB); err != nil {
		t.Fatalf("certificate B after reload: %v", err)
	}
	if err := served(poolA); err == nil {
		t.Fatal("certificate A still served after reload")
	}
	old.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(old, "GET /_ringlb/health HTTP/1.1\r\nHost: x\r\n\r\n")
	line, _ := bufio.NewReader(old).ReadString('\n')
	if !bytes.HasPrefix([]byte(line), []byte("HTTP/1.1 200")) {
		t.Fatalf("connection from before the reload: %q", line)
	}
	bad := next
	bad.TLS = configs.TLS{}
	if err := h.bal.Reload(provision(bad)); err == nil || !strings.Contains(err.Error(), "balancer.tls: changing on to off needs a restart") {
		t.Fatalf("reload turning TLS off: %v", err)
	}
}

// Renewed certificate files are picked up without a SIGHUP.
func TestCertificateFilesWatched(t *testing.T) {
	certA, keyA, _ := writeTestCert(t)
	h := newHarness(t, configs.Balancer{TLS: configs.TLS{CertFile: certA, KeyFile: keyA}})
	certB, keyB, poolB := writeTestCert(t)
	watchCertificates(t, h)
	renewCertificate(t, certA, keyA, certB, keyB)
	waitRenewedServed(t, h, poolB)
}

// renewCertificate writes the certificate and key at certB and keyB over
// those at certA and keyA, as a renewal does.
func renewCertificate(t *testing.T, certA, keyA, certB, keyB string) {
	t.Helper()
	for _, f := range [][2]string{{certB, certA}, {keyB, keyA}} {
		data, err := os.ReadFile(f[0])
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f[1], data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// watchCertificates runs h's certificate watcher, looking every 10 ms,
// until the test ends.
func watchCertificates(t *testing.T, h *harness) {
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.bal.watchCertificates(stop, 10*time.Millisecond)
	}()
	t.Cleanup(func() { close(stop); <-done })
}

// waitRenewedServed waits until h's TLS port serves a certificate that
// pool, the renewed certificate's, verifies.
func waitRenewedServed(t *testing.T, h *harness, pool *x509.CertPool) {
	t.Helper()
	healthtest.WaitUntil(t, "the renewed certificate served", func() bool {
		c, err := tls.Dial("tcp", h.addr, &tls.Config{RootCAs: pool})
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

func TestRedirectToHTTPS(t *testing.T) {
	certA, keyA, _ := writeTestCert(t)
	h := newHarness(t, configs.Balancer{Listen: "127.0.0.1:8443", TLS: configs.TLS{CertFile: certA, KeyFile: keyA}})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go h.bal.ServeRedirect(ln)
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }, Timeout: 10 * time.Second}
	resp, err := client.Get("http://" + ln.Addr().String() + "/pad/index.html?s=1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 301 || resp.Header.Get("Location") != "https://127.0.0.1:8443/pad/index.html?s=1" {
		t.Fatalf("redirect: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, err = client.Get("http://" + ln.Addr().String() + HealthPath)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("health on the redirect port: %d", resp.StatusCode)
	}
}

// A certificate renewed between the check's read of its files and the
// start or reload that takes what the check read is picked up by the
// watcher. The stamp of the files was taken by the start or reload, after
// the read: the renewal's stamp was recorded with the old certificate in
// memory, and the watcher, seeing no change, served the old one until it
// expired. The stamp is now the one taken before the check's read.
func TestCertificateRenewedAfterTheCheckIsWatched(t *testing.T) {
	for _, when := range []string{"start", "reload"} {
		t.Run(when, func(t *testing.T) {
			certA, keyA, _ := writeTestCert(t)
			certB, keyB, poolB := writeTestCert(t)
			check := func() configs.Balancer {
				t.Helper()
				yaml := "cluster:\n  bind: 127.0.0.1:0\nbalancer:\n  listen: 127.0.0.1:0\n  tls:\n    cert_file: " + certA + "\n    key_file: " + keyA + "\n"
				cfg, err := configs.Parse("ringlb.yaml", []byte(yaml))
				if err != nil {
					t.Fatal(err)
				}
				return cfg.Balancer
			}
			// The renewal lands once the check has read the files, with a
			// modification time of its own (whatever the clock's grain).
			renew := func() {
				t.Helper()
				later := time.Now().Add(time.Hour)
				renewCertificate(t, certA, keyA, certB, keyB)
				for _, f := range []string{certA, keyA} {
					if err := os.Chtimes(f, later, later); err != nil {
						t.Fatal(err)
					}
				}
			}
			var h *harness
			if when == "start" {
				cfg := check()
				renew()
				h = newHarness(t, cfg)
			} else {
				h = newHarness(t, check())
				cfg := check()
				renew()
				if err := h.bal.Reload(cfg); err != nil {
					t.Fatal(err)
				}
			}
			watchCertificates(t, h)
			waitRenewedServed(t, h, poolB)
		})
	}
}
