package gslb

import (
	"log/slog"
	"net/netip"
	"slices"
	"testing"
)

// An operator removes east's IPv6 member; a reload takes the member out of
// the config, a later one puts it back (a new machine under the name). The
// override went on with the pools though its member was gone: saved in the
// operator state for no member, and back on the member the second reload
// added, which answered nothing — while a restart in between (restore)
// dropped it as a saved entry of a member no longer configured. Overrides,
// like latches, are taken over for members still configured. Found by
// FuzzPoolEvents.
func TestReloadDropsOverridesOfRemovedMembers(t *testing.T) {
	logger := slog.New(slog.DiscardHandler)
	build := func(variant byte) *pools {
		p, err := newPools(pfConfig(t, variant), logger, nil)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	with := build(1) // east: e1, e2 (2001:db8::1)
	if err := with.setOverride(pfName, "east", "e2", "remove"); err != nil {
		t.Fatal(err)
	}
	without := build(0) // east: e1
	without.inherit(with)
	if o, _ := without.saved(); len(o) != 0 {
		t.Errorf("after the reload without e2, the operator state keeps %v", o)
	}
	again := build(1)
	again.inherit(without)
	if v6 := again.view.Load().names[pfName].regions["east"].fam[ipv6].addrs; !slices.Equal(v6, []netip.Addr{netip.MustParseAddr("2001:db8::1")}) {
		t.Errorf("e2, added again by a reload, answers %v: the override of the member removed before still holds it out", v6)
	}
}
