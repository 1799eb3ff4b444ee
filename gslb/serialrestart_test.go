package gslb

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/ringlb/ringlb/configs"
)

// A secondary transfers only a serial newer than the one it holds (RFC
// 1982). The serial grows by an offset the server adds to the zone file's
// (every change of a managed answer, a reload that changes the zone, the
// signatures' refresh): a restart that began the offset again at 0 went
// back to the file's serial, and the secondaries kept their copy — the
// managed answers of before, and in a signed zone signatures that then
// expire — until as many changes had passed again. With cluster.state_dir
// the offset is kept, and a start goes one past it: the secondaries
// transfer what this process serves.
func TestRestartKeepsTheSerialGoing(t *testing.T) {
	cfg := withTransfer(t, fuzzConfig(t), configs.Transfer{Allow: []string{"127.0.0.0/8"}})
	cfg.Admin.StateDir = t.TempDir()
	soa := func(s *Server) uint32 {
		m := query(t, s, "tcp", "ringlb.test.", dns.TypeSOA, nil)
		return m.Answer[0].(*dns.SOA).Serial
	}
	first, err := New(cfg, "gslb-test", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	// Three changes of the zone, as three reloads.
	for i := range 3 {
		next := cfg
		next.Names = slices.Clone(cfg.Names)
		next.Names[0].TTL = 30 + i + 1
		if err := first.Reload(next); err != nil {
			t.Fatal(err)
		}
	}
	held := soa(first) // what a secondary transferred
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := first.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	second := startGSLB(t, cfg)
	now := soa(second)
	t.Logf("a secondary holds serial %d; after a restart the primary says %d", held, now)
	if int32(now-held) <= 0 { // RFC 1982: not newer
		t.Errorf("after a restart the serial is %d, not newer than the %d a secondary holds: it transfers nothing", now, held)
	}
}

// The serial a reload serves is never older than the one served before it
// (RFC 1982), whatever the zone file's serial did: the served one is the
// file's plus this server's offset, and a zone file rolled back to an
// earlier version (git revert, a backup restored) brings its earlier
// serial. Before, that reload served the earlier serial, a secondary
// holding the newer one took the IXFR answer for "nothing to transfer",
// and kept the version rolled back from — answers and, in a signed zone,
// signatures that then expire — until the file's serial passed it again.
func TestReloadNeverSendsTheSerialBack(t *testing.T) {
	cfg, write := rollbackZone(t)
	s := startGSLB(t, cfg)
	soa := func() uint32 { return query(t, s, "tcp", "ringlb.test.", dns.TypeSOA, nil).Answer[0].(*dns.SOA).Serial }
	// A change, with its serial bumped, that a secondary transfers...
	write("2026112205", "bad 300 IN A 192.0.2.66\n")
	if err := s.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	held := soa()
	// ...then the file rolled back, serial and all.
	write("2026112201", "")
	if err := s.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	now := soa()
	t.Logf("a secondary holds %d; after the rollback the primary serves %d", held, now)
	if int32(now-held) <= 0 {
		t.Fatalf("after the rollback the serial is %d, not newer than the %d a secondary holds", now, held)
	}
	// The secondary's IXFR from the serial it holds gets the zone without the rolled back record.
	q := new(dns.Msg)
	q.SetIxfr("ringlb.test.", held, "ns1.ringlb.test.", "hostmaster.ringlb.test.")
	tr := &dns.Transfer{}
	env, err := tr.In(q, s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	var rrs []dns.RR
	for e := range env {
		if e.Error != nil {
			t.Fatal(e.Error)
		}
		rrs = append(rrs, e.RR...)
	}
	if len(rrs) < 3 {
		t.Fatalf("IXFR from %d: %d records, want the zone", held, len(rrs))
	}
	for _, rr := range rrs {
		if strings.HasPrefix(rr.Header().Name, "bad.") {
			t.Errorf("the transfer still holds the rolled back %s", rr)
		}
	}
	// A reload that changes nothing leaves the serial where it is.
	if err := s.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	if again := soa(); again != now {
		t.Errorf("a reload without a change moved the serial from %d to %d", now, again)
	}
}

// rollbackZone is a config serving ringlb.test from a copy of its test
// zone file, with transfers allowed, and write, which rewrites that copy
// with serial and extra records.
func rollbackZone(t *testing.T) (configs.GSLB, func(serial, extra string)) {
	t.Helper()
	zoneFile := filepath.Join(t.TempDir(), "ringlb.test.zone")
	orig, err := os.ReadFile("testdata/ringlb.test.zone")
	if err != nil {
		t.Fatal(err)
	}
	write := func(serial, extra string) {
		t.Helper()
		z := strings.Replace(string(orig), " 2026112201 ", " "+serial+" ", 1)
		if z == string(orig) && serial != "2026112201" {
			t.Fatal("the test zone's serial is no longer 2026112201")
		}
		if err := os.WriteFile(zoneFile, []byte(z+extra), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg := withTransfer(t, gslbConfig(t, newFakeBalancer(t), newFakeBalancer(t), ""), configs.Transfer{Allow: []string{"127.0.0.0/8"}})
	cfg.Zones[0].File = zoneFile
	write("2026112201", "")
	return cfg, write
}

// A zone file rolled back while the server was down — a restart with
// cluster.state_dir, or an in-place upgrade carrying the offset — no more
// sends the serial back than a reload does: each zone's serial served
// last is kept with the offset, and the next process goes one past it.
// Before, it went one past the offset alone, back by the file's rollback.
func TestRestartAndUpgradeNeverSendTheSerialBack(t *testing.T) {
	cfg, write := rollbackZone(t)
	cfg.Admin.StateDir = t.TempDir()
	soa := func(s *Server) uint32 {
		return query(t, s, "tcp", "ringlb.test.", dns.TypeSOA, nil).Answer[0].(*dns.SOA).Serial
	}
	write("2026112205", "bad 300 IN A 192.0.2.66\n")
	first := startGSLB(t, cfg)
	held := soa(first)
	handOff := first.HandOffState()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := first.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	write("2026112201", "")
	restarted := startGSLB(t, cfg)
	now := soa(restarted)
	t.Logf("restart: a secondary holds %d; the primary serves %d", held, now)
	if int32(now-held) <= 0 {
		t.Errorf("after a restart with the file rolled back the serial is %d, not newer than the %d a secondary holds", now, held)
	}
	if err := restarted.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}

	// An upgrade: the new process has no state directory of its own.
	cfg.Admin.StateDir = ""
	upgraded := startGSLB(t, cfg)
	if err := upgraded.TakeHandOffState(handOff); err != nil {
		t.Fatal(err)
	}
	now = soa(upgraded)
	t.Logf("upgrade: a secondary holds %d; the new process serves %d", held, now)
	if int32(now-held) <= 0 {
		t.Errorf("after an upgrade with the file rolled back the serial is %d, not newer than the %d a secondary holds", now, held)
	}
}
