package gslb

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"log/slog"
	"maps"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/ringlb/ringlb/configs"
)

// memberCA is the CA a test's pool members' certificates chain to.
type memberCA struct {
	key  *ecdsa.PrivateKey
	cert *x509.Certificate
	dir  string
	file string // its certificate, PEM
}

func newMemberCA(t *testing.T, name string) *memberCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	ca := &memberCA{key: key, cert: cert, dir: t.TempDir()}
	ca.file = filepath.Join(ca.dir, "ca.pem")
	if err := os.WriteFile(ca.file, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return ca
}

// selfSigned is a certificate for name that signs itself: what an
// impostor makes who has no certificate of the members' CA.
func selfSigned(t *testing.T, name string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		DNSNames: []string{name}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// issue returns a certificate for name (and 127.0.0.1) signed by ca, with
// usage, and writes it and its key to files.
func (ca *memberCA) issue(t *testing.T, name string, usage x509.ExtKeyUsage) (pair tls.Certificate, certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		DNSNames: []string{name}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
	certFile, keyFile = filepath.Join(ca.dir, name+".pem"), filepath.Join(ca.dir, name+"-key.pem")
	if err := os.WriteFile(certFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if pair, err = tls.X509KeyPair(certPEM, keyPEM); err != nil {
		t.Fatal(err)
	}
	return pair, certFile, keyFile
}

// tlsMember is a pool member's HTTPS health endpoint on 127.0.0.1: every
// path answers 200. conns counts the connections checks opened.
type tlsMember struct {
	srv   *httptest.Server
	conns atomic.Int64
}

// startTLSMember serves with cert (nil: httptest's own, for example.com).
// clientCA, when set, is required of the
// checks' client certificates.
func startTLSMember(t *testing.T, cert *tls.Certificate, clientCA *x509.Certificate) *tlsMember {
	t.Helper()
	m := &tlsMember{}
	m.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") }))
	m.srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the impostor's failed handshakes
	m.srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			m.conns.Add(1)
		}
	}
	m.srv.TLS = &tls.Config{}
	if cert != nil {
		m.srv.TLS.Certificates = []tls.Certificate{*cert}
	}
	if clientCA != nil {
		m.srv.TLS.ClientCAs = x509.NewCertPool()
		m.srv.TLS.ClientCAs.AddCert(clientCA)
		m.srv.TLS.ClientAuth = tls.RequireAndVerifyClientCert
	}
	m.srv.StartTLS()
	t.Cleanup(m.srv.Close)
	return m
}

func (m *tlsMember) addr() string { return strings.TrimPrefix(m.srv.URL, "https://") }

// syncBuffer is a log a test reads while the server writes it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// memberWhy is what /api/pools says of a member: serving, and why.
func memberWhy(t *testing.T, s *Server, region, member string) (bool, string) {
	t.Helper()
	for _, n := range s.state.Load().pools.status() {
		for _, r := range n["regions"].([]map[string]any) {
			if r["region"] != region {
				continue
			}
			for _, m := range r["members"].([]map[string]any) {
				if m["member"] == member {
					return m["serving"].(bool), m["why"].(string)
				}
			}
		}
	}
	t.Fatalf("no member %s/%s", region, member)
	return false, ""
}

// TestHTTPSMonitorVerifiesTheMember is the attack of an impostor at a pool
// member's address (a host that took over its IP, anything on the path):
// an https monitor was given the address and no name, so it checked that
// something answered there, not who: the impostor's self-signed
// certificate (for the member's name) passed, and the member stayed in the answers, sending
// clients to whoever answered. Now a monitor with tls.server_name (and
// tls.ca_file) verifies the member's certificate as HAProxy's "check-ssl
// verify required ca-file ... sni ..." does: the impostor is down,
// "certificate signed by unknown authority" in /api/pools and in one log
// line, however many checks fail after; the genuine member stays up.
func TestHTTPSMonitorVerifiesTheMember(t *testing.T) {
	ca := newMemberCA(t, "members CA")
	pair, _, _ := ca.issue(t, "bal.ringlb.test", x509.ExtKeyUsageServerAuth)
	genuine := startTLSMember(t, &pair, nil)
	fake := selfSigned(t, "bal.ringlb.test")
	impostor := startTLSMember(t, &fake, nil)
	cfg := tlsMonitorConfig(t, "sec", "sec", genuine.addr(), impostor.addr(), "sec: "+httpsMonitor(ca.file, "", ""))
	var log syncBuffer
	s := startGSLBLogging(t, cfg, slog.New(slog.NewTextHandler(&log, nil)), nil)
	waitFor(t, "both members checked", func() bool {
		for _, p := range []*tlsMember{genuine, impostor} {
			if p.conns.Load() == 0 {
				return false
			}
		}
		return allSettled(s)
	})
	// A few more failed checks of the impostor: its reason is logged once.
	seen := impostor.conns.Load()
	waitFor(t, "three more checks of the impostor", func() bool { return impostor.conns.Load() >= seen+3 })

	eastUp, eastWhy := memberWhy(t, s, "east", "bal-1")
	westUp, westWhy := memberWhy(t, s, "west", "bal-2")
	westAnswer := ""
	if m := queryFrom(t, s, "udp", "127.0.0.2", "ide.ringlb.test.", dns.TypeA, nil); len(m.Answer) > 0 {
		westAnswer = m.Answer[0].(*dns.A).A.String()
	}
	logged := strings.Count(log.String(), "certificate signed by unknown authority")
	t.Logf("genuine member: serving %v (%s); impostor: serving %v (%s); a west client is answered %s; the reason logged %d times",
		eastUp, eastWhy, westUp, westWhy, westAnswer, logged)
	if !eastUp {
		t.Errorf("the genuine member is down: %s", eastWhy)
	}
	if westUp || westAnswer != "192.0.2.1" {
		t.Errorf("the impostor keeps bal-2 serving (%s): a west client is answered %s", westWhy, westAnswer)
	}
	if !strings.Contains(westWhy, "certificate signed by unknown authority") {
		t.Errorf("bal-2 is down for %q, want the certificate named", westWhy)
	}
	if logged != 1 {
		t.Errorf("the impostor's reason logged %d times, want once (one transition)", logged)
	}
}

// tlsMonitorConfig is a gslb config whose name ide.ringlb.test has east
// (bal-1, 192.0.2.1) checked by monitor eastMon at eastProbe and west
// (bal-2, 192.0.2.2) by westMon at westProbe; monitors are the lines of
// gslb.monitors ("NAME: { ... }").
func tlsMonitorConfig(t *testing.T, eastMon, westMon, eastProbe, westProbe string, monitors ...string) configs.GSLB {
	t.Helper()
	return parseGSLBYAML(t, fmt.Sprintf(`gslb:
  listen: 127.0.0.1:0
  rate_limit: { responses_per_second: 0 }
  zones: [ { origin: ringlb.test, file: testdata/ringlb.test.zone } ]
  monitors:
    %s
  names:
    - name: ide.ringlb.test
      ttl: 30
      failover_ttl: 5
      geo: { east: [127.0.0.1/32], west: [127.0.0.2/32] }
      default_region: east
      regions:
        east: { monitor: %s, failover: [west], members: [ { name: bal-1, address: 192.0.2.1, probe: %q } ] }
        west: { monitor: %s, failover: [east], members: [ { name: bal-2, address: 192.0.2.2, probe: %q } ] }
`, strings.Join(monitors, "\n    "), eastMon, eastProbe, westMon, westProbe))
}

// httpsMonitor is an https monitor checking every 500ms, rise and fall 1,
// verifying bal.ringlb.test against caFile ("": no tls section), with a
// client certificate when certFile is set.
func httpsMonitor(caFile, certFile, keyFile string) string {
	m := "{ type: https, interval: 500ms, timeout: 500ms, rise: 1, fall: 1"
	if caFile != "" {
		m += fmt.Sprintf(", tls: { server_name: bal.ringlb.test, ca_file: %q", caFile)
		if certFile != "" {
			m += fmt.Sprintf(", cert_file: %q, key_file: %q", certFile, keyFile)
		}
		m += " }"
	}
	return m + " }"
}

// settled waits until every member of s has been checked to a state.
func settled(t *testing.T, s *Server) {
	t.Helper()
	waitFor(t, "every member checked", func() bool { return allSettled(s) })
}

// allSettled reports whether every member of s has been checked to a state.
func allSettled(s *Server) bool {
	for _, n := range s.state.Load().pools.names {
		for _, r := range n.regions {
			for _, m := range r.members {
				if !m.prober.Settled() {
					return false
				}
			}
		}
	}
	return true
}

// An https monitor presents its tls.cert_file to members that ask for a
// client certificate (HAProxy's "crt"); without one such a member is down.
func TestHTTPSMonitorClientCertificate(t *testing.T) {
	ca, clients := newMemberCA(t, "members CA"), newMemberCA(t, "gslb nodes CA")
	pair, _, _ := ca.issue(t, "bal.ringlb.test", x509.ExtKeyUsageServerAuth)
	_, certFile, keyFile := clients.issue(t, "gslb.ringlb.test", x509.ExtKeyUsageClientAuth)
	member := startTLSMember(t, &pair, clients.cert)
	cfg := tlsMonitorConfig(t, "with", "without", member.addr(), member.addr(),
		"with: "+httpsMonitor(ca.file, certFile, keyFile), "without: "+httpsMonitor(ca.file, "", ""))
	s := startGSLB(t, cfg)
	settled(t, s)
	withUp, withWhy := memberWhy(t, s, "east", "bal-1")
	withoutUp, withoutWhy := memberWhy(t, s, "west", "bal-2")
	t.Logf("with a client certificate: serving %v (%s); without: %v (%s)", withUp, withWhy, withoutUp, withoutWhy)
	if !withUp || withoutUp {
		t.Errorf("with a client certificate serving %v (%s), without %v (%s); want true, false", withUp, withWhy, withoutUp, withoutWhy)
	}
}

// A monitor's files are read at start and on every reload, not once for
// the process's life: a CA bundle (or client certificate) renewed in place
// is taken up by a SIGHUP. Files that no longer load refuse the reload.
// Each reload reads its config anew, as a SIGHUP does (its check's read of
// the files is the one the reload uses: configs.EdgeTLS.ClientConfig).
func TestHTTPSMonitorFilesReadOnReload(t *testing.T) {
	ca, old := newMemberCA(t, "members CA"), newMemberCA(t, "members CA") // the old one, under the same name
	pair, _, _ := ca.issue(t, "bal.ringlb.test", x509.ExtKeyUsageServerAuth)
	member := startTLSMember(t, &pair, nil)
	bundle := filepath.Join(t.TempDir(), "members-ca.pem")
	copyFile(t, old.file, bundle) // the wrong CA: the member is down
	cfg := tlsMonitorConfig(t, "sec", "sec", member.addr(), member.addr(), "sec: "+httpsMonitor(bundle, "", ""))
	s := startGSLB(t, cfg)
	settled(t, s)
	if up, why := memberWhy(t, s, "east", "bal-1"); up || !strings.Contains(why, "certificate signed by unknown authority") {
		t.Fatalf("verified against another CA: serving %v (%s)", up, why)
	}
	copyFile(t, ca.file, bundle)
	cfgOf := func() configs.GSLB {
		return tlsMonitorConfig(t, "sec", "sec", member.addr(), member.addr(), "sec: "+httpsMonitor(bundle, "", ""))
	}
	if err := s.Reload(cfgOf()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the member up against the renewed bundle", func() bool { up, _ := memberWhy(t, s, "east", "bal-1"); return up })
	if err := os.WriteFile(bundle, []byte("not PEM\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A config built here, never checked, as one that reaches Reload
	// without the file's check: the reload reads the files itself.
	unchecked := cfg
	mon := cfg.Monitors["sec"]
	files := *mon.TLS
	mon.TLS = &configs.EdgeTLS{CAFile: files.CAFile, ServerName: files.ServerName, CertFile: files.CertFile, KeyFile: files.KeyFile}
	unchecked.Monitors = map[string]configs.Monitor{"sec": mon}
	err := s.Reload(unchecked)
	t.Logf("a reload with a bundle that holds no certificate: %v", err)
	if err == nil || !strings.Contains(err.Error(), "gslb.monitors.sec.tls.ca_file") {
		t.Errorf("reload with a broken ca_file: %v, want it refused naming the field", err)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// A member serving several names by their Host (a virtual-hosted web
// server) answers its health check for the name it serves: an https
// monitor with tls.server_name asks for that name, in the Host header as
// in SNI, with the port the check goes to (not 443). Before, the Host was
// the member's address, which such a server does not serve (421 here), and
// a member whose certificate verified was down. A monitor that verifies
// nothing has no name to ask for and asks for the address, as before.
func TestHTTPSMonitorAsksForTheServerName(t *testing.T) {
	ca := newMemberCA(t, "members CA")
	pair, _, _ := ca.issue(t, "bal.ringlb.test", x509.ExtKeyUsageServerAuth)
	var mu sync.Mutex
	hosts := map[string]bool{}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hosts[r.Host] = true
		mu.Unlock()
		if host, _, err := net.SplitHostPort(r.Host); err != nil || host != "bal.ringlb.test" {
			http.Error(w, "no such site here", http.StatusMisdirectedRequest)
			return
		}
		fmt.Fprint(w, "ok")
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{pair}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	member := strings.TrimPrefix(srv.URL, "https://")
	cfg := tlsMonitorConfig(t, "named", "unnamed", member, member,
		"named: "+httpsMonitor(ca.file, "", ""), "unnamed: "+httpsMonitor("", "", ""))
	s := startGSLB(t, cfg)
	settled(t, s)
	namedUp, namedWhy := memberWhy(t, s, "east", "bal-1")
	unnamedUp, unnamedWhy := memberWhy(t, s, "west", "bal-2")
	mu.Lock()
	seen := slices.Sorted(maps.Keys(hosts))
	mu.Unlock()
	_, port, _ := net.SplitHostPort(member)
	t.Logf("Host headers seen: %v; with tls.server_name serving %v (%s), without %v (%s)", seen, namedUp, namedWhy, unnamedUp, unnamedWhy)
	if !namedUp {
		t.Errorf("the member checked for bal.ringlb.test is down: %s", namedWhy)
	}
	if !slices.Contains(seen, "bal.ringlb.test:"+port) {
		t.Errorf("no check asked for bal.ringlb.test:%s: %v", port, seen)
	}
	if unnamedUp || !slices.Contains(seen, member) {
		t.Errorf("without tls.server_name: serving %v (%s), Host headers %v; want down, asked for %s", unnamedUp, unnamedWhy, seen, member)
	}
}
