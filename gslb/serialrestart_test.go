package gslb

import (
	"context"
	"slices"
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
