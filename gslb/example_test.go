package gslb

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/ringlb/ringlb/configs"
)

// The shipped example (configs/examples/gslb.yaml and its zone) answers
// small queries within the UDP budget, whatever buffer a client advertises,
// and ANY minimally (RFC 8482): what a spoofed query can reflect from it is
// bounded. Members are served without probing (their addresses are not on
// this machine). bench/peers/dns-amplification.sh measures the same queries
// against NSD.
func TestExampleZoneAnswersWithinBudget(t *testing.T) {
	// As an operator runs it: with the cluster key and admin token its
	// comments say to make.
	data, err := os.ReadFile("../configs/examples/gslb.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, file := range []string{"/etc/ringlb/gossip.key", "/etc/ringlb/admin.token"} {
		f := filepath.Join(t.TempDir(), filepath.Base(file))
		if err := os.WriteFile(f, []byte(configs.GenerateKey()+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		data = []byte(strings.ReplaceAll(string(data), file, f))
	}
	c, err := configs.Parse("../configs/examples/gslb.yaml", data)
	if err != nil {
		t.Fatal(err)
	}
	cfg := c.GSLB
	cfg.Listen = "127.0.0.1:0"
	cfg.Names = append([]configs.ManagedName(nil), cfg.Names...)
	for i := range cfg.Names {
		regions := map[string]configs.Region{}
		for name, r := range cfg.Names[i].Regions {
			r.Monitor, r.ServeMode = "", configs.ServeAlways
			r.Members = append([]configs.Member(nil), r.Members...)
			for j := range r.Members {
				r.Members[j].ServeMode = configs.ServeAlways
			}
			regions[name] = r
		}
		cfg.Names[i].Regions = regions
	}
	s := startGSLB(t, cfg)
	origin := cfg.Zones[0].Origin
	managed := cfg.Names[0].Name
	for _, q := range []struct {
		name  string
		qtype uint16
	}{
		{origin, dns.TypeANY}, {managed, dns.TypeANY}, {"www." + origin, dns.TypeANY},
		{origin, dns.TypeTXT}, {managed, dns.TypeA}, {managed, dns.TypeAAAA}, {"www." + origin, dns.TypeA},
		{origin, dns.TypeDNSKEY}, {origin, dns.TypeNS}, {origin, dns.TypeMX}, {origin, dns.TypeCAA},
		{origin, dns.TypeSOA}, {"nxdomain-test." + origin, dns.TypeA},
	} {
		for _, udpSize := range []uint16{0, 1232, 4096, 65535} {
			query := question(q.name, q.qtype, udpSize)
			qb, _ := query.Pack()
			m, n := exchangeSized(t, s, "udp", query)
			if udpSize == 4096 {
				t.Logf("%s %s: %d-byte query, %d-byte answer (%.1fx), %s", q.name, dns.TypeToString[q.qtype], len(qb), n, float64(n)/float64(len(qb)), dns.RcodeToString[m.Rcode])
			}
			if n > cfg.MaxUDPSize {
				t.Errorf("%s %s buffer %d: %d-byte answer, over max_udp_size %d", q.name, dns.TypeToString[q.qtype], udpSize, n, cfg.MaxUDPSize)
			}
			if q.qtype != dns.TypeANY {
				continue
			}
			if len(m.Answer) != 1 {
				t.Errorf("ANY %s: %d records, want one (RFC 8482)", q.name, len(m.Answer))
				continue
			}
			switch rr := m.Answer[0].(type) {
			case *dns.HINFO:
				if rr.Cpu != "RFC8482" {
					t.Errorf("ANY %s: %v", q.name, rr)
				}
			case *dns.A:
				if q.name != managed {
					t.Errorf("ANY %s: an address, want the RFC 8482 HINFO", q.name)
				}
			case *dns.CNAME:
				// www is a CNAME to the managed name: its CNAME, not
				// followed (RFC 8482 4.2: no HINFO where a CNAME is).
				if q.name != "www."+origin {
					t.Errorf("ANY %s: a CNAME, want the RFC 8482 HINFO", q.name)
				}
			default:
				t.Errorf("ANY %s: %v, want the RFC 8482 HINFO, one address or a CNAME", q.name, rr)
			}
		}
	}
}
