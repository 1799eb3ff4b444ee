package balancer

import (
	neturl "net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health/healthtest"
)

// TestHTTPSCheckOfAStaticEdgeVerifiesIt is the attack of an impostor on
// the path to a static HTTPS backend: its https health check skipped
// certificate verification, so anything answering 200 at the backend's
// address — with any certificate — kept it "up" on the ring while every
// dial to it failed verification. Now the check verifies as the balancer's
// own dials do (the edge's tls: ca_file, server_name, client certificate):
// the impostor is down, the genuine backend up.
func TestHTTPSCheckOfAStaticEdgeVerifiesIt(t *testing.T) {
	ca, other := newTestCA(t, "backends CA"), newTestCA(t, "another CA")
	genuine := startTLSBackend(t, "relay-1", ca, nil)
	impostor := startTLSBackend(t, "relay-1", other, nil)
	mon := &configs.Monitor{Type: configs.MonitorHTTPS, Path: "/", ExpectStatus: 200, Interval: configs.Duration(100 * time.Millisecond),
		Timeout: configs.Duration(time.Second), Rise: 1, Fall: 1}
	edges := make([]configs.StaticEdge, 0, 2)
	for name, url := range map[string]string{"genuine": genuine, "impostor": impostor} {
		m := *mon
		u, err := neturl.Parse(url)
		if err != nil {
			t.Fatal(err)
		}
		if m.Port, err = strconv.Atoi(u.Port()); err != nil {
			t.Fatal(err)
		}
		edges = append(edges, configs.StaticEdge{Name: name, URL: url, Monitor: &m,
			TLS: configs.EdgeTLS{CAFile: ca.file, ServerName: "relay-1.backends.test"}})
	}
	verify, errs := edgeTLSConfigs(edges)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	s := newStaticEdges(edges, verify, nil, nil, nil, nil)
	defer s.Close()
	healthtest.WaitUntil(t, "both checks settled", func() bool {
		for _, e := range s.edges {
			if !e.prober.Settled() {
				return false
			}
		}
		return true
	})
	for _, e := range s.edges {
		up, why := e.prober.Up()
		t.Logf("%s: up %v (%s)", e.member.Name, up, why)
		if want := e.member.Name == "genuine"; up != want {
			t.Errorf("%s: up %v (%s), want %v", e.member.Name, up, why, want)
		}
		if e.member.Name == "impostor" && !strings.Contains(why, "certificate") {
			t.Errorf("impostor down for %q, want its certificate named", why)
		}
	}
}
