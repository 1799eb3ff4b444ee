package gslb

import (
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
	"weak"

	"github.com/miekg/dns"

	"github.com/ringlb/ringlb/configs"
)

// texts is rrs in presentation form, one a record.
func texts(rrs []dns.RR) []string {
	out := make([]string, len(rrs))
	for i, rr := range rrs {
		out[i] = rr.String()
	}
	return out
}

// sameRecords reports where a and b first differ ("" when they do not).
func sameRecords(a, b []string) string {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return "record " + a[i] + " / " + b[i]
		}
	}
	if len(a) != len(b) {
		return fmt.Sprintf("%d records / %d", len(a), len(b))
	}
	return ""
}

// signedTransferServer is a signed zone of fuzzConfig's records and 200
// names more, transferred with TSIG, the resign bump out of the way (each
// test moves the serial itself), on clock.
func signedTransferServer(t *testing.T, clock *testClock) *Server {
	t.Helper()
	return transferServer(t, bigSignedZone(t, 200), clock)
}

// transferServer serves cfg, the resign bump out of the way, on clock.
func transferServer(t *testing.T, cfg configs.GSLB, clock *testClock) *Server {
	t.Helper()
	return startGSLBWith(t, cfg, func(s *Server) {
		if clock != nil {
			clock.use(s)
		}
		s.resignTick = time.Hour
	})
}

// bothZones is a zone of fuzzConfig's records and names names more,
// transferred with TSIG, unsigned, and one of signed names more, signed.
func bothZones(t *testing.T, names, signed int) []struct {
	name string
	cfg  configs.GSLB
} {
	return []struct {
		name string
		cfg  configs.GSLB
	}{{"unsigned", bigZone(t, names)}, {"signed", bigSignedZone(t, signed)}}
}

// freshTransfer is z's transfer built afresh, not cached.
func freshTransfer(t *testing.T, st *state, z *zone) []dns.RR {
	t.Helper()
	rrs := st.transferRecords(z)
	if z.signer == nil {
		return rrs
	}
	rrs, err := st.signedTransfer(z, rrs)
	if err != nil {
		t.Fatal(err)
	}
	return rrs
}

// A second transfer of a serial is the first one replayed — record for
// record what a transfer built afresh holds, every message signed with
// TSIG for its own request (dns.Transfer verifies each) — of an unsigned
// zone as of a signed one.
func TestCachedTransferEqualsAFreshOne(t *testing.T) {
	for _, tc := range bothZones(t, 200, 200) {
		t.Run(tc.name, func(t *testing.T) { testCachedTransferEqualsAFreshOne(t, transferServer(t, tc.cfg, nil)) })
	}
}

func testCachedTransferEqualsAFreshOne(t *testing.T, s *Server) {
	key := tsigConfig(t).Name
	first, err := axfr(t, s, key, testTSIGSecret)
	if err != nil {
		t.Fatal(err)
	}
	st := s.state.Load()
	z := st.zones[0]
	cached := z.xfr.cur
	if cached == nil {
		t.Fatal("nothing cached after a signed transfer")
	}
	second, err := axfr(t, s, key, testTSIGSecret)
	if err != nil {
		t.Fatal(err)
	}
	if z.xfr.cur != cached {
		t.Error("the second transfer of the serial was built again")
	}
	fresh := freshTransfer(t, st, z)
	t.Logf("%d records in %d messages, serial %d", len(second), len(cached.msgs), cached.serial)
	if d := sameRecords(texts(first), texts(second)); d != "" {
		t.Errorf("the replayed transfer differs from the first: %s", d)
	}
	if d := sameRecords(texts(fresh), texts(second)); d != "" {
		t.Errorf("the replayed transfer differs from one built afresh: %s", d)
	}
}

// A new serial (a managed answer changed) is a new transfer, built again
// with the new answer; the entry of the old serial is dropped (collected:
// one entry a zone), and a reload drops the zone's with the zone — of an
// unsigned zone as of a signed one.
func TestTransferCacheFollowsTheSerial(t *testing.T) {
	for _, tc := range bothZones(t, 200, 200) {
		t.Run(tc.name, func(t *testing.T) { testTransferCacheFollowsTheSerial(t, transferServer(t, tc.cfg, nil)) })
	}
}

func testTransferCacheFollowsTheSerial(t *testing.T, s *Server) {
	key := tsigConfig(t).Name
	soaOf := func(rrs []dns.RR) uint32 { return rrs[0].(*dns.SOA).Serial }
	rrs, err := axfr(t, s, key, testTSIGSecret)
	if err != nil {
		t.Fatal(err)
	}
	st := s.state.Load()
	z := st.zones[0]
	var heap runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&heap)
	base := heap.HeapAlloc
	olds := []weak.Pointer[builtTransfer]{weak.Make(z.xfr.cur)}
	serial := soaOf(rrs)
	for i, mode := range []string{configs.ServeRemove, "", configs.ServeRemove, ""} {
		// bal-1 leaves east's answer (east fails over to west) and comes back.
		if err := st.pools.setOverride("ide.ringlb.test.", "east", "bal-1", mode); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the serial bumped", func() bool { return st.soa(z).Serial != serial })
		rrs, err = axfr(t, s, key, testTSIGSecret)
		if err != nil {
			t.Fatal(err)
		}
		if soaOf(rrs) == serial {
			t.Fatalf("change %d: transferred serial %d again", i, serial)
		}
		serial = soaOf(rrs)
		want := "ide.ringlb.test.\t30\tIN\tA\t192.0.2.1"
		if mode == configs.ServeRemove {
			want = "ide.ringlb.test.\t5\tIN\tA\t192.0.2.2" // west's member, failover_ttl
		}
		if !strings.Contains(strings.Join(texts(rrs), "\n"), want) {
			t.Errorf("change %d (bal-1 %q): the transfer lacks %q", i, mode, want)
		}
		if z.xfr.cur == nil || z.xfr.cur.serial != serial {
			t.Fatalf("change %d: the cached transfer is not of serial %d", i, serial)
		}
		olds = append(olds, weak.Make(z.xfr.cur))
	}
	runtime.GC()
	kept := 0
	for _, w := range olds[:len(olds)-1] {
		if w.Value() != nil {
			kept++
		}
	}
	runtime.ReadMemStats(&heap)
	t.Logf("5 serials transferred: %d of the 4 older transfers still in memory; heap %+.1f MiB since the first",
		kept, (float64(heap.HeapAlloc)-float64(base))/(1<<20))
	if kept > 0 {
		t.Errorf("%d transfers of old serials still held", kept)
	}
	last := olds[len(olds)-1]
	if err := s.Reload(st.cfg); err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	if last.Value() != nil || s.state.Load().zones[0].xfr.cur != nil {
		t.Error("a reload kept the transfer of the zone it replaced")
	}
}

// A cached transfer hands out no signature that one built afresh would not:
// none due for replacement (less than signature_refresh left), none not yet
// valid. The serial changes every signature_refresh / 2, which alone would
// keep a signature that had just over signature_refresh left at the build
// for half of that again, and the serial does not change when the clock is
// set back: the entry keeps its signatures' window, and is built again
// outside it.
func TestCachedTransferSignaturesFresh(t *testing.T) {
	key := tsigConfig(t).Name
	check := func(t *testing.T, s *Server, clock *testClock) (rebuilt bool) {
		t.Helper()
		z := s.state.Load().zones[0]
		before := z.xfr.cur
		rrs, err := axfr(t, s, key, testTSIGSecret)
		if err != nil {
			t.Fatal(err)
		}
		now, refresh := clock.now(), z.signer.refresh
		sigs, stale, early := 0, 0, 0
		for _, rr := range rrs {
			if sig, ok := rr.(*dns.RRSIG); ok {
				sigs++
				if !now.Before(time.Unix(int64(sig.Expiration), 0).Add(-refresh)) {
					stale++
				}
				if now.Before(time.Unix(int64(sig.Inception), 0)) {
					early++
				}
			}
		}
		t.Logf("%d signatures: %d due for replacement, %d not yet valid", sigs, stale, early)
		if stale+early > 0 {
			t.Errorf("the transfer hands out %d signatures due for replacement and %d not yet valid", stale, early)
		}
		return z.xfr.cur != before
	}
	t.Run("due for replacement", func(t *testing.T) {
		clock := newTestClock()
		s := signedTransferServer(t, clock)
		check(t, s, clock)
		serial := s.state.Load().soa(s.state.Load().zones[0]).Serial
		// Past the point where the signatures are due (validity 168h,
		// refresh 72h): 96h and a minute.
		clock.add(96*time.Hour + time.Minute)
		if !check(t, s, clock) {
			t.Error("the transfer was replayed with signatures due for replacement")
		}
		if now := s.state.Load().soa(s.state.Load().zones[0]).Serial; now != serial {
			t.Fatalf("the serial moved (%d → %d): this is the window's test, not the serial's", serial, now)
		}
	})
	t.Run("clock set back", func(t *testing.T) {
		clock := newTestClock()
		clock.add(25 * time.Hour)
		s := signedTransferServer(t, clock)
		check(t, s, clock)
		clock.add(-25 * time.Hour)
		if !check(t, s, clock) {
			t.Error("the transfer was replayed with signatures not yet valid")
		}
	})
}

// Transfers of one serial at once share one build and its messages (read
// only: each copies a message to make it its own and sign it), and each
// gets the whole zone; the race detector watches the sharing.
func TestConcurrentTransfersShareOneBuild(t *testing.T) {
	s := signedTransferServer(t, nil)
	key := tsigConfig(t).Name
	const n = 4
	got := make([][]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			rrs, err := axfr(t, s, key, testTSIGSecret)
			got[i], errs[i] = texts(rrs), err
		})
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("transfer %d: %v", i, errs[i])
		}
		if d := sameRecords(got[0], got[i]); d != "" {
			t.Errorf("transfer %d differs from transfer 0: %s", i, d)
		}
	}
	t.Logf("%d transfers at once, %d records each", n, len(got[0]))
}
