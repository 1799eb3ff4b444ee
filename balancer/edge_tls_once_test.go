package balancer

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health/healthtest"
)

// mtlsBackend is a third-party HTTPS backend that wants a client
// certificate and tells which one it was shown: /whoami answers its name,
// and the balancer's checks (User-Agent ringlb-monitor) are counted by it.
type mtlsBackend struct {
	url  string
	port int
	mu   sync.Mutex
	seen map[string]int // a check's client certificate name → checks
}

func startMTLSBackend(t *testing.T, ca, clients *testCA) *mtlsBackend {
	t.Helper()
	certFile, keyFile := ca.issue(t, "relay-1", "relay-1.backends.test", x509.ExtKeyUsageServerAuth)
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{pair}, ClientCAs: x509.NewCertPool(), ClientAuth: tls.RequireAndVerifyClientCert}
	cfg.ClientCAs.AddCert(clients.cert)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &mtlsBackend{url: "https://" + ln.Addr().String(), port: ln.Addr().(*net.TCPAddr).Port, seen: map[string]int{}}
	srv := &fasthttp.Server{Logger: quietLog{}, Handler: func(ctx *fasthttp.RequestCtx) {
		shown := ctx.TLSConnectionState().PeerCertificates[0].Subject.CommonName
		ctx.Response.Header.Set("X-Ringlb-Edge", "relay-1")
		if string(ctx.UserAgent()) == "ringlb-monitor" {
			b.mu.Lock()
			b.seen[shown]++
			b.mu.Unlock()
		}
		ctx.SetBodyString(shown)
	}}
	go srv.Serve(tls.NewListener(ln, cfg))
	t.Cleanup(func() { srv.Shutdown(); ln.Close() })
	return b
}

// checkedWith returns the client certificate names the balancer's checks
// showed, but skip.
func (b *mtlsBackend) checkedWith(skip string) map[string]int {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := map[string]int{}
	for name, n := range b.seen {
		if name != skip {
			out[name] = n
		}
	}
	return out
}

// TestEdgeTLSAppliedAsChecked is the attack of a file swapped between the
// check of a start or reload and its apply — a renewal landing mid-reload,
// or anyone who can write where a static edge's tls files are: the check
// read the files and passed, then the edge pool read them again on the
// edge's next request and its monitor on its start, each taking what was
// there by then. A file caught mid-write left the edge failing closed (every
// request 502) after a reload reported success; a certificate renewed again
// had the requests and the checks present different ones than were
// checked. Now the files are read once, by the check, and the requests and
// the checks of the edge use the configuration it built.
func TestEdgeTLSAppliedAsChecked(t *testing.T) {
	for _, swap := range []struct {
		name string
		to   func(t *testing.T, clients *testCA, certFile string)
	}{
		{"renewed again", func(t *testing.T, clients *testCA, _ string) {
			clients.issue(t, "bal", "bal-swapped.test", x509.ExtKeyUsageClientAuth)
		}},
		{"caught mid-write", func(t *testing.T, _ *testCA, certFile string) {
			if err := os.WriteFile(certFile, []byte("-----BEGIN CERT"), 0o600); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		for _, when := range []string{"start", "reload"} {
			t.Run(when+", "+swap.name, func(t *testing.T) {
				ca := newTestCA(t, "backends CA")
				clients := newTestCA(t, "balancers CA")
				backend := startMTLSBackend(t, ca, clients)
				first := "bal-checked.test"
				if when == "reload" {
					first = "bal-old.test"
				}
				clientCert, clientKey := clients.issue(t, "bal", first, x509.ExtKeyUsageClientAuth)
				mon := &configs.Monitor{Type: configs.MonitorHTTPS, Port: backend.port, Path: "/", ExpectStatus: 200,
					Interval: configs.Duration(100 * time.Millisecond), Timeout: configs.Duration(time.Second), Rise: 1, Fall: 4}
				cfg := configs.Balancer{
					Edges: []configs.StaticEdge{{Name: "relay-1", URL: backend.url, Monitor: mon,
						TLS: configs.EdgeTLS{CAFile: ca.file, CertFile: clientCert, KeyFile: clientKey}}},
					SessionTable: configs.SessionTable{StartupWait: configs.Duration(time.Millisecond)},
				}
				var created func(*Balancer)
				if when == "start" {
					// New checked the files; the monitors start and
					// the first request comes after the swap.
					created = func(*Balancer) { swap.to(t, clients, clientCert) }
				}
				b := startClusterBalancerAfter(t, healthtest.New(t), "bal-1", cfg, created)
				waitRing(t, b, "relay-1")
				healthtest.WaitUntil(t, "table ready", b.bal.table.routable)
				shown := func() string { t.Helper(); return certShown(t, b) }
				skip := ""
				if when == "reload" {
					if got := shown(); got != "bal-old.test" {
						t.Fatalf("client certificate shown before the reload: %q", got)
					}
					clients.issue(t, "bal", "bal-checked.test", x509.ExtKeyUsageClientAuth) // renewed in place
					rl, err := b.bal.admitReload(b.bal.current.Load().cfg)
					if err != nil {
						t.Fatal(err)
					}
					swap.to(t, clients, clientCert)
					b.bal.applyReload(rl)
					skip = "bal-old.test" // the replaced monitor's
				}
				got := shown()
				t.Logf("client certificate shown by a request: %q", got)
				if got != "bal-checked.test" {
					t.Errorf("client certificate shown by a request: %q, want bal-checked.test, the one checked", got)
				}
				// One value: the one the edge's monitor was given.
				se, _ := b.bal.static.Load().edge("relay-1")
				if e, err := b.bal.edges.get(se.member); err != nil || e.tlsConfig != se.verify {
					t.Errorf("the edge pool's TLS config is not the one of the edge's monitor (%v)", err)
				}
				healthtest.WaitUntil(t, "a check of the edge since the apply", func() bool { return len(backend.checkedWith(skip)) > 0 })
				checks := backend.checkedWith(skip)
				t.Logf("client certificates shown by the checks since the apply: %v", checks)
				for name, n := range checks {
					if name != "bal-checked.test" {
						t.Errorf("%s shown by %s, want bal-checked.test, the one checked (and the one of the requests)", name, plural(n, "check"))
					}
				}
			})
		}
	}
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return strconv.Itoa(n) + " " + what + "s"
}
