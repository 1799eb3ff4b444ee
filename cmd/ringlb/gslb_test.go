package main

import (
	"fmt"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// TestGSLBFailsOverWhenABalancerDies runs two real balancers and the gslb as
// separate processes; kill -9 of the west balancer flips west clients to the
// east address, within the monitor's interval × fall (+ 1 s).
func TestGSLBFailsOverWhenABalancerDies(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("end-to-end test of the real binary; skipped with -short")
	}
	bin := buildBinary(t)
	dir := t.TempDir()
	// A static edge puts a member on the ring, so /_ringlb/health is 200; it
	// must pass its (TCP) monitor to stay there.
	edge, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer edge.Close()
	go func() {
		for {
			c, err := edge.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	var listens []string
	var bals []*proc
	for i := 1; i <= 2; i++ {
		cfg := filepath.Join(dir, fmt.Sprintf("bal%d.yaml", i))
		writeFile(t, cfg, fmt.Sprintf("cluster: { name: bal-%d, bind: 127.0.0.1:0, profile: local }\n"+
			"balancer: { listen: 127.0.0.1:0, admin: { listen: 127.0.0.1:0 }, edges: [ { name: static, url: \"http://%s\" } ] }\n", i, edge.Addr()))
		p := startProc(t, bin, "balancer", "-config", cfg)
		listens = append(listens, p.waitLog(t, "balancer started")["listen"].(string))
		bals = append(bals, p)
	}
	gcfg := filepath.Join(dir, "gslb.yaml")
	writeFile(t, gcfg, fmt.Sprintf(`cluster: { name: gslb-1, bind: 127.0.0.1:0, profile: local }
gslb:
  listen: 127.0.0.1:0
  admin: { listen: 127.0.0.1:0 }
  zones: [ { origin: ringlb.test, records: [ "@ 3600 IN SOA ns1 hostmaster 1 7200 3600 1209600 60", "ns1 3600 IN A 127.0.0.1" ] } ]
  monitors: { bal: { type: http, interval: 200ms, timeout: 150ms, rise: 2, fall: 2 } }
  names:
    - name: ide.ringlb.test
      geo: { east: [127.0.0.1/32], west: [127.0.0.2/32] }
      regions:
        east: { monitor: bal, failover: [west], members: [ { name: bal-1, address: 127.0.0.1, probe: %q } ] }
        west: { monitor: bal, failover: [east], members: [ { name: bal-2, address: 127.0.0.2, probe: %q } ] }
`, listens[0], listens[1]))
	g := startProc(t, bin, "gslb", "-config", gcfg)
	server := g.waitLog(t, "gslb started")["dns"].(string)

	answer := func(src string) string {
		m := new(dns.Msg)
		m.SetQuestion("ide.ringlb.test.", dns.TypeA)
		c := &dns.Client{Timeout: 2 * time.Second, Dialer: &net.Dialer{LocalAddr: &net.UDPAddr{IP: net.ParseIP(src)}}}
		r, _, err := c.Exchange(m, server)
		if err != nil || len(r.Answer) == 0 {
			return fmt.Sprintf("error %v %v", err, r)
		}
		return r.Answer[0].(*dns.A).A.String()
	}
	if got := answer("127.0.0.2"); got != "127.0.0.2" {
		t.Fatalf("west before: %s", got)
	}
	killed := time.Now()
	bals[1].cmd.Process.Kill()
	for answer("127.0.0.2") != "127.0.0.1" {
		if time.Since(killed) > time.Minute { // liveness; the time is reported below
			t.Fatalf("west clients still answered %s a minute after bal-2 died", answer("127.0.0.2"))
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("failover %s after kill -9 of bal-2 (interval 200ms × fall 2 + 1s = 1.4s target)", time.Since(killed).Round(time.Millisecond))
	if got := answer("127.0.0.1"); got != "127.0.0.1" {
		t.Errorf("east during west's failover: %s", got)
	}
}
