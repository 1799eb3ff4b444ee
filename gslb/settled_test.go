package gslb

import (
	"log/slog"
	"slices"
	"testing"

	"github.com/ringlb/ringlb/health/healthtest"
)

// Two nameservers: gslb-b sees east's member down, gslb-a was just
// started, its prober of the member up but not settled, so it goes by
// gslb-b's view (down for 1 of 1) and fails east over. Its checks then
// confirm the member up: a tie, so the member is served. But a prober
// calls onChange on a transition only, and confirming its start state is
// none: nothing rebuilt gslb-a's answers, and the next rounds, gslb-b's
// report unchanged, rebuilt nothing either — gslb-a answered east's
// clients from west for good while gslb-b, reading gslb-a's settled view,
// served the member. Found by FuzzPoolEvents.
func TestSettledProbeRebuildsTheAnswer(t *testing.T) {
	y := tcpCheckedYAML(t)
	cfg := parseGSLBYAML(t, y)
	logger := slog.New(slog.DiscardHandler)
	p, err := newPools(cfg, logger, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{name: "gslb-a", logger: logger}
	s.peers.Store(&peerViews{reports: map[string]peerReport{"gslb-b": {members: map[string]bool{"ide.ringlb.test./east/bal-1": false}}}})
	p.agree = s.agreed
	p.rebuild()
	east := func() []string {
		var out []string
		for _, a := range p.view.Load().names["ide.ringlb.test."].regions["east"].fam[ipv4].addrs {
			out = append(out, a.String())
		}
		return out
	}
	if got := east(); slices.Contains(got, "192.0.2.1") {
		t.Fatalf("before gslb-a's checks settle, east answers %v: want bal-1 out (down for 1 of 1)", got)
	}
	p.start()
	defer p.stop()
	var m *member
	for _, x := range p.names["ide.ringlb.test."].regions["east"].members {
		m = x
	}
	healthtest.WaitUntil(t, "gslb-a's checks confirm bal-1 up", m.prober.Settled)
	// Unfixed, no rebuild ever comes: the wait fails however long it is.
	// A bound of seconds could fail a loaded machine instead, whose 50 ms
	// checks can time out and take bal-1 down for a moment.
	healthtest.WaitUntil(t, "east answers bal-1 once gslb-a's checks confirmed it up (a tie)", func() bool {
		return slices.Contains(east(), "192.0.2.1")
	})
}
