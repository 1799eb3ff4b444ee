package gslb

import (
	"fmt"
	"slices"
	"testing"

	"github.com/miekg/dns"

	"github.com/ringlb/ringlb/configs"
)

// familyYAML: ide.ringlb.test with dual-stack regions east (127.0.0.1)
// and west (127.0.0.2), each member monitored by its own fake balancer, and
// north (127.0.0.3), IPv4 only, failing over to west. extra goes into the
// name.
func familyYAML(east4, east6, west4, west6, north4 *fakeBalancer, extra string) string {
	return fmt.Sprintf(`gslb:
  listen: 127.0.0.1:0
  rate_limit: { responses_per_second: 0 }
  zones: [ { origin: ringlb.test, file: testdata/ringlb.test.zone } ]
  monitors:
    bal: { type: http, interval: 1s, timeout: 1s, rise: 1, fall: 1, jitter: 0.01 }
  names:
    - name: ide.ringlb.test
      ttl: 30
      failover_ttl: 5
      geo: { east: [127.0.0.1/32], west: [127.0.0.2/32], north: [127.0.0.3/32] }
      default_region: east
%s      regions:
        east: { monitor: bal, failover: [west], members: [ { name: e4, address: 192.0.2.1, probe: %q }, { name: e6, address: "2001:db8::1", probe: %q } ] }
        west: { monitor: bal, failover: [east], members: [ { name: w4, address: 192.0.2.2, probe: %q }, { name: w6, address: "2001:db8::2", probe: %q } ] }
        north: { monitor: bal, failover: [west], members: [ { name: n4, address: 192.0.2.3, probe: %q } ] }
`, extra, east4.addr(), east6.addr(), west4.addr(), west6.addr(), north4.addr())
}

// familyAnswer is what src is answered for ide.ringlb.test's qtype: the
// rcode, the addresses and their TTL.
func familyAnswer(t *testing.T, s *Server, src string, qtype uint16) string {
	m := queryFrom(t, s, "udp", src, "ide.ringlb.test.", qtype, nil)
	ttl := uint32(0)
	if len(m.Answer) > 0 {
		ttl = m.Answer[0].Header().Ttl
	}
	return fmt.Sprintf("%s %s ttl %d", dns.RcodeToString[m.Rcode], answerIPs(m), ttl)
}

// A dual-stack region fails over per address family, as gdnsd's plugins
// decide per family: whose IPv4 members are all down answers A from its
// failover region while its own IPv6 members still answer AAAA, and the
// other way round. A region without members of a family (north, IPv4
// only) answers that family NODATA, as before: nothing of it failed, and
// its clients are not sent across the world for it. Before, failover was
// decided per region, on any member serving: with east's one IPv4 member
// dead, east's clients got NODATA for A (cached for the SOA minimum) —
// IPv4-only clients of a region with a live failover had no address.
func TestFailoverPerAddressFamily(t *testing.T) {
	// Its own server and fake balancers (ports of their own) and no package
	// state: it waits on the monitors, beside the others.
	t.Parallel()
	east4, east6, west4, west6, north4 := newFakeBalancer(t), newFakeBalancer(t), newFakeBalancer(t), newFakeBalancer(t), newFakeBalancer(t)
	s := startGSLB(t, parseGSLBYAML(t, familyYAML(east4, east6, west4, west6, north4, "")))
	expect := func(what, src string, qtype uint16, want string) {
		t.Helper()
		last := ""
		defer func() {
			if last != want {
				t.Errorf("%s: %s from %s last answered %q", what, dns.TypeToString[qtype], src, last)
			}
		}()
		waitFor(t, fmt.Sprintf("%s: %s from %s answered %q", what, dns.TypeToString[qtype], src, want), func() bool {
			last = familyAnswer(t, s, src, qtype)
			return last == want
		})
	}
	expect("all up", "127.0.0.1", dns.TypeA, "NOERROR 192.0.2.1 ttl 30")
	expect("all up", "127.0.0.1", dns.TypeAAAA, "NOERROR 2001:db8::1 ttl 30")
	expect("all up, IPv4 only", "127.0.0.3", dns.TypeAAAA, "NOERROR  ttl 0")

	east4.healthy.Store(false)
	expect("east's IPv4 member down", "127.0.0.1", dns.TypeA, "NOERROR 192.0.2.2 ttl 5")
	expect("east's IPv4 member down", "127.0.0.1", dns.TypeAAAA, "NOERROR 2001:db8::1 ttl 30")
	if p := s.state.Load().pools; !slices.Equal(latchList(p), []string{"east/ipv4"}) {
		t.Errorf("latches %v, want east's IPv4 alone", latchList(p))
	}
	// ANY: one address (RFC 8482), of the family still served here.
	if m := queryFrom(t, s, "udp", "127.0.0.1", "ide.ringlb.test.", dns.TypeANY, nil); len(m.Answer) != 1 {
		t.Errorf("ANY: %v, want one address", m.Answer)
	}

	east4.healthy.Store(true)
	east6.healthy.Store(false)
	expect("east's IPv6 member down", "127.0.0.1", dns.TypeA, "NOERROR 192.0.2.1 ttl 30")
	expect("east's IPv6 member down", "127.0.0.1", dns.TypeAAAA, "NOERROR 2001:db8::2 ttl 5")

	// north has no IPv6 member: its IPv4 member down fails A over; AAAA
	// stays NODATA, not west's IPv6 member.
	north4.healthy.Store(false)
	expect("north's member down", "127.0.0.3", dns.TypeA, "NOERROR 192.0.2.2 ttl 5")
	expect("north's member down", "127.0.0.3", dns.TypeAAAA, "NOERROR  ttl 0")

	// Every IPv4 member down, serve_all: each region its own IPv4 members,
	// IPv6 still from where it is served.
	east4.healthy.Store(false)
	west4.healthy.Store(false)
	expect("every IPv4 member down", "127.0.0.1", dns.TypeA, "NOERROR 192.0.2.1 ttl 5")
	expect("every IPv4 member down", "127.0.0.1", dns.TypeAAAA, "NOERROR 2001:db8::2 ttl 5")
	expect("every IPv4 member down", "127.0.0.2", dns.TypeAAAA, "NOERROR 2001:db8::2 ttl 30")
}

// latchList is p's failover latches as region/family, sorted.
func latchList(p *pools) []string {
	_, latches := p.saved()
	var out []string
	for _, l := range latches {
		out = append(out, l.Region+"/"+l.Family)
	}
	return out
}

// ANY at a managed name is answered with one address (RFC 8482 4.2: one
// RRset is enough), of a family the region answers: a region of IPv6
// members gets its IPv6 address, over UDP and TCP, signed with DO. Before,
// ANY took the IPv4 addresses alone, and a region of IPv6 members was
// answered NODATA, with DO and without.
func TestANYAtAnIPv6OnlyRegion(t *testing.T) {
	ksk, zsk := testKeys(t)
	s := startGSLB(t, signed(parseGSLBYAML(t, `gslb:
  listen: 127.0.0.1:0
  rate_limit: { responses_per_second: 0 }
  zones: [ { origin: ringlb.test, file: testdata/ringlb.test.zone } ]
  names:
    - name: ide.ringlb.test
      geo: { east: [127.0.0.1/32], west: [127.0.0.2/32] }
      regions:
        east: { serve_mode: always, members: [ { name: e6, address: "2001:db8::1" } ] }
        west: { serve_mode: always, members: [ { name: w4, address: 192.0.2.2 } ] }
`), ksk, zsk))
	for _, c := range []struct{ src, want string }{{"127.0.0.1", "2001:db8::1"}, {"127.0.0.2", "192.0.2.2"}} {
		for _, network := range []string{"udp", "tcp"} {
			for _, edit := range []func(*dns.Msg){nil, withDO(false)} {
				m := queryFrom(t, s, network, c.src, "ide.ringlb.test.", dns.TypeANY, edit)
				if got := answerIPs(m); m.Rcode != dns.RcodeSuccess || got != c.want {
					t.Errorf("ANY from %s over %s, DO %v: %s %q, want %s", c.src, network, edit != nil, dns.RcodeToString[m.Rcode], got, c.want)
				}
			}
		}
	}
	// The NSEC of a NODATA there lists the address type answered, no other.
	for src, want := range map[string]uint16{"127.0.0.1": dns.TypeAAAA, "127.0.0.2": dns.TypeA} {
		m := queryFrom(t, s, "udp", src, "ide.ringlb.test.", dns.TypeTXT, withDO(false))
		n := nsecOf(m)
		if n == nil || !slices.Contains(n.TypeBitMap, want) || slices.Contains(n.TypeBitMap, dns.TypeA+dns.TypeAAAA-want) {
			t.Errorf("TXT from %s: NSEC %v, want %s alone of A and AAAA", src, n, dns.TypeToString[want])
		}
	}
}

// A latch saved by a release that latched a region whole (no family) is
// restored to every family the region has members of, and one of a family
// the region has none of is skipped; a recover ends both families'.
func TestLatchWithoutAFamilyRestoresEveryFamily(t *testing.T) {
	s := startGSLB(t, parseGSLBYAML(t, `gslb:
  listen: 127.0.0.1:0
  rate_limit: { responses_per_second: 0 }
  zones: [ { origin: ringlb.test, file: testdata/ringlb.test.zone } ]
  names:
    - name: ide.ringlb.test
      auto_recover: false
      regions:
        east: { serve_mode: always, failover: [west], members: [ { name: e4, address: 192.0.2.1 }, { name: e6, address: "2001:db8::1" } ] }
        west: { serve_mode: always, failover: [east], members: [ { name: w4, address: 192.0.2.2 } ] }
`))
	p := s.state.Load().pools
	skipped := p.restore(nil, []savedLatch{{Name: "ide.ringlb.test.", Region: "east", Why: "saved"}, {Name: "ide.ringlb.test.", Region: "west", Family: "ipv6", Why: "saved"}})
	if got := latchList(p); !slices.Equal(got, []string{"east/ipv4", "east/ipv6"}) || !slices.Equal(skipped, []string{"ide.ringlb.test./west/ipv6"}) {
		t.Errorf("restored %v, skipped %v; want east's two families, west's IPv6 skipped", got, skipped)
	}
	if got := familyAnswer(t, s, "127.0.0.1", dns.TypeA); got != "NOERROR 192.0.2.2 ttl 10" {
		t.Errorf("A while east's IPv4 is latched: %s, want west's", got)
	}
	if err := p.recover("ide.ringlb.test.", "east"); err != nil || len(latchList(p)) != 0 {
		t.Errorf("recover: %v, latches %v left", err, latchList(p))
	}
}

// A family served only by a member an operator's override serves (serve
// mode no in the config, always by the API) is not latched by a reload or
// a restart: the new pools' first rebuild, made before the override is
// taken over, saw nothing to serve, and with auto_recover false that latch
// stayed, AAAA answered from elsewhere until someone recovered the region
// by hand. Found by FuzzPoolEvents once failover went per family (a
// family of one member is common); a region of such members latched alike.
func TestReloadAndRestartKeepNoLatchAnOverrideServes(t *testing.T) {
	cfg := parseGSLBYAML(t, `gslb:
  listen: 127.0.0.1:0
  rate_limit: { responses_per_second: 0 }
  zones: [ { origin: ringlb.test, file: testdata/ringlb.test.zone } ]
  names:
    - name: ide.ringlb.test
      auto_recover: false
      geo: { east: [127.0.0.1/32], west: [127.0.0.2/32] }
      regions:
        east: { serve_mode: always, failover: [west], members: [ { name: e4, address: 192.0.2.1 }, { name: e6, address: "2001:db8::1" } ] }
        west: { serve_mode: always, failover: [east], members: [ { name: w4, address: 192.0.2.2 }, { name: w6, address: "2001:db8::2", serve_mode: no } ] }
`)
	s := startGSLB(t, cfg)
	p := s.state.Load().pools
	if err := p.setOverride("ide.ringlb.test.", "west", "w6", configs.ServeAlways); err != nil {
		t.Fatal(err)
	}
	if err := p.recover("ide.ringlb.test.", "west"); err != nil {
		t.Fatal(err)
	}
	if got := familyAnswer(t, s, "127.0.0.2", dns.TypeAAAA); got != "NOERROR 2001:db8::2 ttl 30" || len(latchList(p)) != 0 {
		t.Fatalf("west's AAAA with w6 served by the override: %s, latches %v", got, latchList(p))
	}
	if err := s.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	if got := familyAnswer(t, s, "127.0.0.2", dns.TypeAAAA); got != "NOERROR 2001:db8::2 ttl 30" || len(latchList(s.state.Load().pools)) != 0 {
		t.Errorf("after a reload: %s, latches %v; want west's own, none", got, latchList(s.state.Load().pools))
	}
	overrides, latches := s.state.Load().pools.saved()
	again := startGSLB(t, cfg)
	again.state.Load().pools.restore(overrides, latches)
	if got := familyAnswer(t, again, "127.0.0.2", dns.TypeAAAA); got != "NOERROR 2001:db8::2 ttl 30" || len(latchList(again.state.Load().pools)) != 0 {
		t.Errorf("after a restart: %s, latches %v; want west's own, none", got, latchList(again.state.Load().pools))
	}
}

// A steering region's steered clients get from the region it steers to the
// families that region serves, and from their own region the others: east
// (dual-stack) steering to west (IPv4 only) answers its steered clients
// west's A and east's own AAAA. Before, they got west's answer whole,
// AAAA NODATA (cached for the SOA minimum), while east served IPv6 — the
// per-region rule failover had.
func TestSteeredClientsKeepTheFamiliesTheTargetLacks(t *testing.T) {
	s := startGSLB(t, parseGSLBYAML(t, `gslb:
  listen: 127.0.0.1:0
  rate_limit: { responses_per_second: 0 }
  zones: [ { origin: ringlb.test, file: testdata/ringlb.test.zone } ]
  names:
    - name: ide.ringlb.test
      geo: { east: [10.1.0.0/16], west: [10.2.0.0/16] }
      default_region: east
      regions:
        east: { serve_mode: always, failover: [west], steer: { sessions_per_edge: 100, share: 0.5 }, members: [ { name: e4, address: 192.0.2.1 }, { name: e6, address: "2001:db8::1" } ] }
        west: { serve_mode: always, failover: [east], members: [ { name: w4, address: 192.0.2.2 } ] }
`))
	s.state.Load().pools.setLoads(map[string]regionLoad{"east": {Edges: 3, Sessions: 150}})
	steered, wrong := 0, 0
	for i := range 100 {
		client := ecs(fmt.Sprintf("10.1.%d.0", i), 24)
		if answerIPs(query(t, s, "udp", "ide.ringlb.test.", dns.TypeA, client)) != "192.0.2.2" {
			continue
		}
		steered++
		if m := query(t, s, "udp", "ide.ringlb.test.", dns.TypeAAAA, client); answerIPs(m) != "2001:db8::1" {
			wrong++
			t.Errorf("10.1.%d.0/24, steered to west: AAAA %s %q, want east's own", i, dns.RcodeToString[m.Rcode], answerIPs(m))
		}
	}
	t.Logf("%d of 100 east client networks steered, %d of them without east's AAAA", steered, wrong)
	if steered == 0 {
		t.Fatal("no client steered")
	}
}
