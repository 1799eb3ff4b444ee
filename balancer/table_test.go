package balancer

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ringlb/ringlb/balancer/ring"
	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health/healthtest"
)

// keyMovedBy returns a key that edge `from` owns on the harness's ring and
// that `to` owns once `to` is added to it.
func (h *harness) keyMovedBy(t *testing.T, from string, to ring.Member) string {
	t.Helper()
	before := h.ring.Snapshot()
	var members []ring.Member
	members = append(members, before.Members()...)
	after := ring.New(ring.DefaultConfig())
	after.Update(append(members, to))
	for i := range 100000 {
		k := fmt.Sprintf("moved-%d", i)
		b, _ := before.Locate([]byte(k))
		a, _ := after.Locate([]byte(k))
		if b.Name == from && a.Name == to.Name {
			return k
		}
	}
	t.Fatalf("no key moving from %s to %s", from, to.Name)
	return ""
}

// The failure, without gossip: a fourth backend joins the ring
// while a session lives on its old owner. Its next participant (and every
// request of the key) goes to the session's backend, not the new owner; a
// new key goes to the new owner. A backend that leaves the ring loses its
// entries; when it comes back it gets none of them back.
func TestTableKeepsLiveSessionsOnTheirBackend(t *testing.T) {
	h := newHarness(t, configs.Balancer{})
	e4 := startTestEdge(t, "edge-4")
	m4 := ring.Member{Name: e4.name, URL: e4.url, Weight: 1}
	key := h.keyMovedBy(t, "edge-1", m4)

	first, resp := dialWS(t, h.addr, "/ws", http.Header{"Ctstickiness": {key}})
	defer first.Close()
	if got := resp.Header.Get("X-Ringlb-Edge"); got != "edge-1" {
		t.Fatalf("first participant on %s, want edge-1", got)
	}
	members := h.ring.Snapshot().Members()
	h.ring.Update(append(members, m4))
	if h.owner(t, key) != "edge-4" {
		t.Fatal("the key did not change owner")
	}

	second, resp := dialWS(t, h.addr, "/ws", http.Header{"Ctstickiness": {key}})
	defer second.Close()
	if got := resp.Header.Get("X-Ringlb-Edge"); got != "edge-1" {
		t.Fatalf("next participant on %s after the scale-out, want edge-1 with its session", got)
	}
	if _, w := h.whoami(t, "/whoami", http.Header{"Ctstickiness": {key}}); w.Edge != "edge-1" {
		t.Fatalf("a request of the live key went to %s, want edge-1", w.Edge)
	}
	fresh := h.keyOwnedBy(t, "edge-4")
	if _, w := h.whoami(t, "/whoami", http.Header{"Ctstickiness": {fresh}}); w.Edge != "edge-4" {
		t.Fatalf("a new key went to %s, want its ring owner edge-4", w.Edge)
	}

	// A key whose session sits on edge-2, and edge-1 and edge-2 leave the
	// ring (down). The live key's next participant goes to the ring owner:
	// it moves, with a new version.
	other := h.keyOwnedBy(t, "edge-2")
	quiet, _ := dialWS(t, h.addr, "/ws", http.Header{"Ctstickiness": {other}})
	defer quiet.Close()
	var rest []ring.Member
	for _, m := range h.ring.Snapshot().Members() {
		if m.Name != "edge-1" && m.Name != "edge-2" {
			rest = append(rest, m)
		}
	}
	h.ring.Update(rest)
	want := h.owner(t, key)
	third, resp := dialWS(t, h.addr, "/ws", http.Header{"Ctstickiness": {key}})
	defer third.Close()
	if got := resp.Header.Get("X-Ringlb-Edge"); got != want {
		t.Fatalf("with edge-1 gone the key went to %s, want its ring owner %s", got, want)
	}
	// Both come back: the moved key stays where its session is now; the
	// other, placed anew by nobody meanwhile, is on edge-2 still.
	h.ring.Update(append(rest, ring.Member{Name: "edge-1", URL: h.byName["edge-1"].url, Weight: 1}, ring.Member{Name: "edge-2", URL: h.byName["edge-2"].url, Weight: 1}))
	fourth, resp := dialWS(t, h.addr, "/ws", http.Header{"Ctstickiness": {key}})
	defer fourth.Close()
	if got := resp.Header.Get("X-Ringlb-Edge"); got != want {
		t.Fatalf("edge-1 back: the key went to %s, want %s where its session lives", got, want)
	}
	if v, _ := h.bal.table.view(xxhash.Sum64String(key), h.ring.Snapshot()); v.Version != 1 {
		t.Errorf("the moved key's version is %d, want 1", v.Version)
	}
	fifth, resp := dialWS(t, h.addr, "/ws", http.Header{"Ctstickiness": {other}})
	defer fifth.Close()
	if got := resp.Header.Get("X-Ringlb-Edge"); got != "edge-2" {
		t.Fatalf("edge-2 back: its untouched session's key went to %s, want edge-2", got)
	}
}

// A key is released linger after its last tunnel closes (then it follows
// the ring again); an open tunnel keeps it however long.
func TestTableLingerStartsAtTheLastTunnel(t *testing.T) {
	h := newHarness(t, configs.Balancer{SessionTable: configs.SessionTable{Linger: configs.Duration(time.Second)}})
	e4 := startTestEdge(t, "edge-4")
	m4 := ring.Member{Name: e4.name, URL: e4.url, Weight: 1}
	key := h.keyMovedBy(t, "edge-2", m4)
	conn, _ := dialWS(t, h.addr, "/ws", http.Header{"Ctstickiness": {key}})
	h.ring.Update(append(h.ring.Snapshot().Members(), m4))
	hash := xxhash.Sum64String(key)
	// Longer than linger with the tunnel open: still there.
	time.Sleep(2 * time.Second)
	if v, ok := h.bal.table.view(hash, h.ring.Snapshot()); !ok || !v.Routable || v.Backend != "edge-2" || v.OpenHere != 1 {
		t.Fatalf("entry with an open tunnel after 2 linger: %+v %v", v, ok)
	}
	conn.Close()
	healthtest.WaitUntil(t, "the key released after its linger", func() bool {
		v, ok := h.bal.table.view(hash, h.ring.Snapshot())
		return !ok || !v.Routable
	})
	if _, w := h.whoami(t, "/whoami", http.Header{"Ctstickiness": {key}}); w.Edge != "edge-4" {
		t.Fatalf("released key went to %s, want its ring owner edge-4", w.Edge)
	}
}

// The attack: a client that invents keys as fast as it can must not push
// live sessions out of a full table. Its new keys beyond its budget are
// routed by the ring without an entry, and eviction takes only keys with
// no tunnel open.
func TestTableKeyFloodDoesNotEvictLiveSessions(t *testing.T) {
	h := newHarness(t, configs.Balancer{SessionTable: configs.SessionTable{MaxEntries: 1000, NewKeysPerIP: 1, NewKeysBurst: 200}})
	const live = 100
	var conns []interface{ Close() error }
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	keys := make([]string, live)
	for i := range live {
		keys[i] = fmt.Sprintf("live-%d", i)
		c, _ := dialWS(t, h.addr, "/ws", http.Header{"Ctstickiness": {keys[i]}})
		conns = append(conns, c)
	}
	// 5000 requests, each with a key never seen, from several addresses.
	const flood = 5000
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			src := &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+w))}
			client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: (&net.Dialer{LocalAddr: src}).DialContext}}
			defer client.CloseIdleConnections()
			for i := w; i < flood; i += 8 {
				req, _ := http.NewRequest(http.MethodGet, "http://"+h.addr+"/whoami", nil)
				req.Header.Set("Ctstickiness", fmt.Sprintf("invented-%d", i))
				resp, err := client.Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				resp.Body.Close()
			}
		}()
	}
	wg.Wait()
	lost := 0
	for _, k := range keys {
		if v, ok := h.bal.table.view(xxhash.Sum64String(k), h.ring.Snapshot()); !ok || !v.Routable || v.OpenHere != 1 {
			lost++
		}
	}
	budget := h.metric(t, "ringlb_balancer_session_table_refused_total", map[string]string{"reason": refusedBudget})
	capacity := h.metric(t, "ringlb_balancer_session_table_evictions_total", map[string]string{"reason": evictCapacity})
	t.Logf("after %d invented keys: %d of %d live sessions lost their entry; %v keys over budget, %v entries evicted for room, %d entries",
		flood, lost, live, budget, capacity, h.bal.table.len())
	if lost != 0 {
		t.Errorf("%d live sessions lost their entry to a key flood", lost)
	}
	if budget == 0 {
		t.Error("no key was refused over its client's budget")
	}
}

// The per-address budget itself: a bucket per address (IPv6 by /64),
// refilled at its rate, bounded in addresses.
func TestKeyBudget(t *testing.T) {
	var k keyBudget
	k.set(10, 3)
	now := time.Now().UnixNano()
	a := netip.MustParseAddr("192.0.2.1")
	for i := range 3 {
		if !k.allow(a, now) {
			t.Fatalf("key %d of a burst of 3 refused", i)
		}
	}
	if k.allow(a, now) {
		t.Fatal("a fourth key at once allowed")
	}
	if !k.allow(a, now+int64(100*time.Millisecond)) {
		t.Fatal("no token after a tenth of a second at 10/s")
	}
	v6a, v6b := netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::ffff:1")
	for range 3 {
		k.allow(v6a, now)
	}
	if k.allow(v6b, now) {
		t.Fatal("another address of the same /64 has its own budget")
	}
	if !k.allow(netip.MustParseAddr("2001:db8:0:1::1"), now) {
		t.Fatal("another /64 shares the budget")
	}
	// Bounded: beyond maxBudgetAddrs spending addresses, new ones get no key.
	k.set(1e-9, 1)
	for i := range maxBudgetAddrs {
		k.allow(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), now)
	}
	if k.allow(netip.MustParseAddr("198.51.100.7"), now) || len(k.perIP) > maxBudgetAddrs {
		t.Fatalf("budget map grew to %d addresses", len(k.perIP))
	}
}

// newTestMetrics declares the balancer's metrics on reg for a table built
// without a Balancer: the gauges it would read answer 0.
func newTestMetrics(reg prometheus.Registerer, r *ring.Ring) (*metrics, error) {
	zero := func() float64 { return 0 }
	return newMetrics(reg, r, zero, tableGauges{entries: zero, ready: zero})
}

// memoryPerEntry measures the heap a table holds per entry: n entries
// inserted the way the balancer inserts them, the heap before and after.
func memoryPerEntry(n int) float64 {
	reg := prometheus.NewRegistry()
	r := ring.New(ring.DefaultConfig())
	m, err := newTestMetrics(reg, r)
	if err != nil {
		panic(err)
	}
	cfg := configs.SessionTable{}
	cfg.Linger = configs.Duration(time.Hour)
	cfg.MaxEntries = 2 * n
	cfg.NewKeysPerIP, cfg.NewKeysBurst = 1, 1
	before := settledHeap()
	t := newSessionTable("bal", cfg, r, m, nil, tableHooks{})
	defer t.close()
	bi, _ := t.names.intern("edge-1")
	now := time.Now().UnixNano()
	for i := range n {
		h := xxhash.Sum64String(fmt.Sprint(i))
		t.put(h, entry{placedAt: now, until: now + int64(time.Hour), backend: bi, placer: t.selfIdx})
	}
	after := settledHeap()
	runtime.KeepAlive(t)
	return float64(int64(after)-int64(before)) / float64(n)
}

// settledHeap is the live heap once what earlier tests left behind has
// been let go: collected until two readings a moment apart are within
// 1 MiB of each other (their servers' goroutines end on their own time, and
// what they free while an entry count is measured was read as the table's
// size going negative).
func settledHeap() uint64 {
	var ms runtime.MemStats
	prev := uint64(0)
	for range 50 {
		runtime.GC()
		runtime.ReadMemStats(&ms)
		if d := int64(ms.HeapAlloc) - int64(prev); d > -1<<20 && d < 1<<20 {
			break
		}
		prev = ms.HeapAlloc
		time.Sleep(20 * time.Millisecond)
	}
	return ms.HeapAlloc
}

// An entry costs at most 200 bytes with the map's overhead (the target of
// the design; 1,000,000 entries, the default bound, under 200 MB).
func TestTableMemoryPerEntry(t *testing.T) {
	per := memoryPerEntry(200_000)
	// The heap shrinking while the table grew is what other goroutines
	// freed meanwhile, not a measurement: measured again.
	for attempt := 1; per <= 0; attempt++ {
		if attempt == 3 {
			t.Fatalf("%.1f bytes per entry: the heap shrank while the table grew, three times", per)
		}
		t.Logf("%.1f bytes per entry: the heap shrank while the table grew (others freed it); once more", per)
		per = memoryPerEntry(200_000)
	}
	t.Logf("%.1f bytes per entry (200,000 entries)", per)
	if per > 200 {
		t.Errorf("%.1f bytes per entry, want at most 200", per)
	}
}

// BenchmarkTableMemoryPerEntry reports bytes per entry at the default bound.
func BenchmarkTableMemoryPerEntry(b *testing.B) {
	for range b.N {
		b.ReportMetric(memoryPerEntry(configs.DefaultSessionTableEntries), "B/entry")
	}
}

// benchTable is a table of a benchmark over edge-1 and edge-2, with hooks,
// closed when b ends; its ring and metrics.
func benchTable(b *testing.B, hooks tableHooks) (*sessionTable, *ring.Ring, *metrics) {
	b.Helper()
	r := ring.New(ring.DefaultConfig())
	r.Update([]ring.Member{{Name: "edge-1", URL: "http://127.0.0.1:1", Weight: 1}, {Name: "edge-2", URL: "http://127.0.0.1:2", Weight: 1}})
	m, err := newTestMetrics(prometheus.NewRegistry(), r)
	if err != nil {
		b.Fatal(err)
	}
	cfg := configs.SessionTable{}
	cfg.Linger, cfg.MaxEntries, cfg.NewKeysPerIP, cfg.NewKeysBurst = configs.Duration(time.Hour), 1_000_000, 1, 1
	t := newSessionTable("bal", cfg, r, m, slog.New(slog.DiscardHandler), hooks)
	b.Cleanup(t.close)
	return t, r, m
}

// BenchmarkTableLookup is the table's part of every request: a key with an
// entry, on a table of 100,000. It must not allocate.
func BenchmarkTableLookup(b *testing.B) {
	t, r, _ := benchTable(b, tableHooks{})
	bi, _ := t.names.intern("edge-2")
	now := time.Now().UnixNano()
	hashes := make([]uint64, 100_000)
	for i := range hashes {
		h := xxhash.Sum64String(fmt.Sprint("k", i))
		hashes[i] = h
		t.put(h, entry{placedAt: now, until: now + int64(time.Hour), backend: bi, placer: t.selfIdx})
	}
	snap := r.Snapshot()
	t.lookup(hashes[0], snap) // builds the route set
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if _, _, ok := t.lookup(hashes[i%len(hashes)], snap); !ok {
			b.Fatal("entry not found")
		}
	}
}

// BenchmarkTableGossipPerSession reports the bytes one new session costs
// the gossip channel, per peer balancer: its placement's share of a delta
// packet (alone, and in a burst of 100 placed within the batching window),
// and the record each refresh carries for it while a tunnel is open (every
// linger/2). The channel's framing (3 bytes and the sender's name) and
// memberlist's encryption (29 bytes a packet) come on top, per packet.
func BenchmarkTableGossipPerSession(b *testing.B) {
	reg := prometheus.NewRegistry()
	r := ring.New(ring.DefaultConfig())
	m, err := newTestMetrics(reg, r)
	if err != nil {
		b.Fatal(err)
	}
	cfg := configs.SessionTable{}
	cfg.Linger, cfg.MaxEntries, cfg.NewKeysPerIP, cfg.NewKeysBurst = configs.Duration(time.Minute), 1_000_000, 1, 1
	t := newSessionTable("bal-1", cfg, r, m, nil, tableHooks{})
	defer t.close()
	bi, _ := t.names.intern("relay-3")
	now := time.Now().UnixNano()
	batch := func(n int) float64 {
		pending := make([]pendingRecord, n)
		for i := range pending {
			pending[i] = pendingRecord{h: uint64(i)*0x9e3779b97f4a7c15 + 1, e: entry{placedAt: now, until: now + int64(time.Minute), backend: bi, placer: t.selfIdx, open: 1}}
		}
		total := 0
		for _, msg := range t.deltaMessages(pending, nil) {
			total += len(msg)
		}
		return float64(total) / float64(n)
	}
	for range b.N {
		b.ReportMetric(batch(1), "B/placement-alone")
		b.ReportMetric(batch(100), "B/placement-in-burst")
		b.ReportMetric(recordSize, "B/refresh")
	}
}

// put writes an entry as the maintenance loop may be reading.
func (t *sessionTable) put(h uint64, e entry) {
	s := t.shard(h)
	s.mu.Lock()
	s.entries[h] = e
	s.mu.Unlock()
}

// A balancer's session table is whole before its maintenance runs: New
// wired the table's hooks into it after starting the loop that reads them
// each second, so a balancer nothing else touched for that second (an
// empty ring, never updated) had the loop read what New wrote with nothing
// ordering the two — a data race, which the race detector reported.
func TestTableMaintenanceStartsWired(t *testing.T) {
	b, _ := serveBalancer(t, configs.Balancer{}, ring.New(ring.DefaultConfig()))
	first := b.table.routesGen.Load()
	healthtest.WaitUntil(t, "two rounds of the table's maintenance", func() bool { return b.table.routesGen.Load() >= first+2 })
}

// staticTable is a session table of balancer name on its own, in front of
// the static edges of r, as a balancer's hooks make it (a drained edge
// leaves r; one past its deadline takes no live keys), on the clock *now;
// its maintenance rounds (tick) are the caller's. The Balancer holds its
// tunnels.
func staticTable(t *testing.T, name string, r *ring.Ring, now *int64) (*sessionTable, *Balancer) {
	t.Helper()
	m, err := newTestMetrics(prometheus.NewRegistry(), r)
	if err != nil {
		t.Fatal(err)
	}
	var tb *sessionTable
	all := r.Snapshot().Members()
	static := func(name string) bool {
		return slices.ContainsFunc(all, func(m ring.Member) bool { return m.Name == name })
	}
	past := func(name string) bool {
		st, ok := tb.drains.get(name)
		return ok && st.on && st.deadline <= *now
	}
	hooks := tableHooks{
		routesFor: func(snap *ring.Snapshot) []ring.Member {
			out := snap.Members()
			for _, m := range all {
				if _, on := snap.Member(m.Name); !on && !past(m.Name) {
					out = append(out, m)
				}
			}
			return out
		},
		known:    static,
		isStatic: static,
		onDrain: func() {
			var up []ring.Member
			for _, m := range all {
				if st, _ := tb.drains.get(m.Name); !st.on {
					up = append(up, m)
				}
			}
			r.Update(up)
		},
		drainsPast: func() map[string]bool {
			out := map[string]bool{}
			for _, m := range all {
				if past(m.Name) {
					out[m.Name] = true
				}
			}
			return out
		},
		clock: func() int64 { return *now },
	}
	cfg := configs.SessionTable{}
	cfg.Linger, cfg.MaxEntries, cfg.NewKeysPerIP, cfg.NewKeysBurst = configs.Duration(time.Minute), 1000, 100, 100
	tb = newSessionTable(name, cfg, r, m, slog.New(slog.DiscardHandler), hooks)
	tb.close() // its rounds are the caller's
	return tb, &Balancer{metrics: m, table: tb, tunnels: map[*tunnel]struct{}{}, access: &accessLog{}}
}

// A static edge's drain deadline closes its tunnels once, at the first
// maintenance round past it; a WebSocket whose handshake was under way
// then (looked up before the deadline, its 101 after that round) was
// entered on the drained edge and left open there: no round closed it
// again, and its key routed elsewhere. The table refuses it instead, as a
// placement that lost (the client is answered 503 and retries, placed
// anew).
func TestTunnelAnsweredPastItsDrainDeadlineCloses(t *testing.T) {
	r := ring.New(ring.DefaultConfig())
	r.Update([]ring.Member{{Name: "edge-a", URL: "http://127.0.0.1:1", Weight: 1}, {Name: "edge-b", URL: "http://127.0.0.1:2", Weight: 1}})
	now := time.Now().UnixNano()
	tb, bal := staticTable(t, "bal-1", r, &now)

	key := (&harness{ring: r}).keyOwnedBy(t, "edge-a")
	h := xxhash.Sum64String(key)
	_, basis, inTable := tb.lookup(h, r.Snapshot())
	if inTable {
		t.Fatal("a new key has an entry")
	}
	// The handshake is under way to edge-a, the key's ring owner, when
	// edge-a's drain reaches its deadline and the round passes.
	tb.setDrain("edge-a", true, time.Unix(0, now))
	now += int64(time.Second)
	tb.tick()

	tun := &tunnel{b: bal, edge: "edge-a", key: key}
	bal.registerTunnel(tun)
	res := tb.record(h, "edge-a", basis, netipLocal, tun)
	if res == recordStale {
		tun.close() // as serveUpgrade does
	}
	now += int64(time.Second)
	tb.tick()
	tun.mu.Lock()
	closed := tun.closed
	tun.mu.Unlock()
	target, _, inTable := tb.lookup(h, r.Snapshot())
	if !inTable {
		target, _ = r.Locate([]byte(key))
	}
	t.Logf("record: %d; tunnel closed: %v; the key routes to %s (by its entry: %v)", res, closed, target.Name, inTable)
	if !closed {
		t.Fatalf("a tunnel to edge-a answered past its drain deadline is open, its key routed elsewhere")
	}
}

// BenchmarkTableRecord is the table's part of a WebSocket of a live key to
// a static edge: its answer recorded with its tunnel, and the tunnel's end.
func BenchmarkTableRecord(b *testing.B) {
	static := func(name string) bool { return name == "edge-1" || name == "edge-2" }
	t, r, m := benchTable(b, tableHooks{isStatic: static, known: static})
	bal := &Balancer{metrics: m, table: t, tunnels: map[*tunnel]struct{}{}, access: &accessLog{}}
	h := xxhash.Sum64String("a live key")
	snap := r.Snapshot()
	_, basis, _ := t.lookup(h, snap)
	t.record(h, "edge-2", basis, netipLocal, nil)
	_, basis, _ = t.lookup(h, snap)
	tun := &tunnel{b: bal, edge: "edge-2"}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if t.record(h, "edge-2", basis, netipLocal, tun) != recorded {
			b.Fatal("not recorded")
		}
		t.closed(tun)
	}
}

// staticPairRings are the rings of two balancers over the static edges
// edge-a, edge-b and edge-c, and their shared clock (now).
func staticPairRings() (r1, r2 *ring.Ring, now *int64) {
	edges := []ring.Member{{Name: "edge-a", URL: "http://127.0.0.1:1", Weight: 1}, {Name: "edge-b", URL: "http://127.0.0.1:2", Weight: 1}, {Name: "edge-c", URL: "http://127.0.0.1:3", Weight: 1}}
	r1, r2 = ring.New(ring.DefaultConfig()), ring.New(ring.DefaultConfig())
	r1.Update(edges)
	r2.Update(edges)
	t := time.Now().UnixNano()
	return r1, r2, &t
}

// Two balancers place one new key at once, bal-2 on edge-a a moment
// before the drain of edge-a reaches its deadline there, bal-1 on the
// key's owner on its ring without edge-a a moment after. bal-2's
// placement is the earlier and won by the rule at bal-2, which kept it,
// though edge-a takes no live keys and bal-1 ignored it: the two tables
// never agreed, and bal-2, which routed the key by its ring, would have
// placed it anew with the next version and moved the live session (a
// split while its ring and bal-1's differ). A placement on a backend that takes no live keys here gives way
// to one of the same version on a backend that does, as lookup treats it.
func TestPlacementOnADrainedEdgeGivesWay(t *testing.T) {
	r1, r2, now := staticPairRings()
	b1, bal1 := staticTable(t, "bal-1", r1, now)
	b2, _ := staticTable(t, "bal-2", r2, now)
	key := (&harness{ring: r2}).keyOwnedBy(t, "edge-a")
	h := xxhash.Sum64String(key)

	_, basis, _ := b2.lookup(h, r2.Snapshot())
	if res := b2.record(h, "edge-a", basis, netipLocal, nil); res != recorded {
		t.Fatalf("bal-2's placement: %d", res)
	}
	*now += int64(time.Millisecond)
	for _, tb := range []*sessionTable{b1, b2} {
		tb.setDrain("edge-a", true, time.Unix(0, *now))
		tb.tick()
	}
	owner, _ := r1.Locate([]byte(key))
	_, basis, _ = b1.lookup(h, r1.Snapshot())
	tun := &tunnel{b: bal1, edge: owner.Name, key: key}
	bal1.registerTunnel(tun)
	if res := b1.record(h, owner.Name, basis, netipLocal, tun); res != recorded {
		t.Fatalf("bal-1's placement: %d", res)
	}
	// Each has the other's placement.
	exchange := func(from, to *sessionTable) {
		s := from.shard(h)
		s.mu.Lock()
		e := s.entries[h]
		s.mu.Unlock()
		to.merge(from.wireRecord(h, e, *now, from.settings.Load()), true)
	}
	exchange(b2, b1)
	exchange(b1, b2)
	v1, _ := b1.view(h, r1.Snapshot())
	v2, _ := b2.view(h, r2.Snapshot())
	t.Logf("bal-1: %s v%d; bal-2: %s v%d (routable %v); the live tunnel on %s", v1.Backend, v1.Version, v2.Backend, v2.Version, v2.Routable, owner.Name)
	if v1.Backend != owner.Name || v2.Backend != owner.Name || v1.Version != v2.Version {
		t.Fatalf("the tables disagree on a live key: bal-1 %s v%d, bal-2 %s v%d", v1.Backend, v1.Version, v2.Backend, v2.Version)
	}
	if target, _, ok := b2.lookup(h, r2.Snapshot()); !ok || target.Name != owner.Name {
		t.Fatalf("bal-2 routes the live key by its ring, not to %s", owner.Name)
	}
}

// A move reaches the other balancers only after its backend's drain
// deadline (its packet lost, the refresh later): they ignore it and keep
// the placement it moved from, where their tunnels are. The balancer that
// moved the key kept its move, which wins by its version: the tables never
// agreed, and it routed the key by its ring. The move on the drained edge
// gives way to the live placement, whatever their versions.
func TestMoveToADrainedEdgeGivesWay(t *testing.T) {
	r1, r2, now := staticPairRings()
	b1, bal1 := staticTable(t, "bal-1", r1, now)
	b2, bal2 := staticTable(t, "bal-2", r2, now)
	key := (&harness{ring: r1}).keyOwnedBy(t, "edge-b")
	h := xxhash.Sum64String(key)
	send := func(from, to *sessionTable) {
		s := from.shard(h)
		s.mu.Lock()
		e := s.entries[h]
		s.mu.Unlock()
		to.merge(from.wireRecord(h, e, *now, from.settings.Load()), true)
	}
	// The session on edge-b, through bal-1; bal-2 has it.
	_, basis, _ := b1.lookup(h, r1.Snapshot())
	t1 := &tunnel{b: bal1, edge: "edge-b", key: key}
	bal1.registerTunnel(t1)
	if res := b1.record(h, "edge-b", basis, netipLocal, t1); res != recorded {
		t.Fatalf("bal-1's placement: %d", res)
	}
	send(b1, b2)
	// edge-b does not answer bal-2 for a moment: its participant goes to
	// edge-a, a move (version 1) whose packet is lost.
	_, basis, _ = b2.lookup(h, r2.Snapshot())
	t2 := &tunnel{b: bal2, edge: "edge-a", key: key}
	bal2.registerTunnel(t2)
	if res := b2.record(h, "edge-a", basis, netipLocal, t2); res != recorded {
		t.Fatalf("bal-2's move: %d", res)
	}
	// edge-a's drain reaches its deadline on both; bal-2's tunnel there
	// closes. Then each balancer's refresh reaches the other.
	*now += int64(time.Second)
	for _, tb := range []*sessionTable{b1, b2} {
		tb.setDrain("edge-a", true, time.Unix(0, *now))
		tb.tick()
	}
	send(b2, b1)
	send(b1, b2)
	v1, _ := b1.view(h, r1.Snapshot())
	v2, _ := b2.view(h, r2.Snapshot())
	t.Logf("bal-1: %s v%d (open here %d); bal-2: %s v%d (routable %v)", v1.Backend, v1.Version, v1.OpenHere, v2.Backend, v2.Version, v2.Routable)
	if v2.Backend != "edge-b" || !v2.Routable {
		t.Fatalf("bal-2 holds %s v%d for a key live on edge-b through bal-1", v2.Backend, v2.Version)
	}
}

// One key on one backend at two balancers, with different versions: bal-2
// moved it there (version 1) before bal-1, restarted, placed it there anew
// (version 0). bal-1's refresh taught bal-2 nothing new, and bal-2, which
// kept its version, said nothing back. When that backend then failed a
// dial at bal-1, bal-1's move had version 1, tied with bal-2's placement
// and lost to it as the later one: the move was undone and its tunnel
// closed. A record older than the entry of its backend here is answered,
// so the tables agree on versions too.
func TestOlderVersionOfOnePlacementIsAnswered(t *testing.T) {
	r1, r2, now := staticPairRings()
	b1, bal1 := staticTable(t, "bal-1", r1, now)
	b2, _ := staticTable(t, "bal-2", r2, now)
	// What each tells the other waits in its sync's queue (deltas and
	// answers), delivered by hand.
	for _, tb := range []*sessionTable{b1, b2} {
		tb.sync.Store(tb.newSync(nil, time.Second))
	}
	deliver := func(from, to *sessionTable) {
		sy := from.sync.Load()
		sy.mu.Lock()
		pending := sy.pending
		sy.pending = nil
		sy.mu.Unlock()
		for _, m := range from.deltaMessages(pending, nil) {
			if err := readBody(m[1:], to.mergeDrain, func(r tableRecord) { to.merge(r, true) }); err != nil {
				t.Fatal(err)
			}
		}
	}
	refresh := func(from, to *sessionTable) {
		from.each(func(h uint64, e *entry) {
			to.merge(from.wireRecord(h, *e, *now, from.settings.Load()), false)
		})
	}
	key := "a session"
	h := xxhash.Sum64String(key)

	// bal-2 placed it on edge-a, then moved it to edge-b (edge-a did not
	// answer): version 1.
	_, basis, _ := b2.lookup(h, r2.Snapshot())
	b2.record(h, "edge-a", basis, netipLocal, nil)
	_, basis, _ = b2.lookup(h, r2.Snapshot())
	if b2.record(h, "edge-b", basis, netipLocal, nil) != recorded {
		t.Fatal("bal-2's move")
	}
	b2.sync.Load().mu.Lock()
	b2.sync.Load().pending = nil // lost
	b2.sync.Load().mu.Unlock()
	// bal-1, restarted and knowing none of it, places it on edge-b.
	*now += int64(time.Millisecond)
	_, basis, _ = b1.lookup(h, r1.Snapshot())
	t1 := &tunnel{b: bal1, edge: "edge-b", key: key}
	bal1.registerTunnel(t1)
	if b1.record(h, "edge-b", basis, netipLocal, t1) != recorded {
		t.Fatal("bal-1's placement")
	}
	refresh(b1, b2)
	deliver(b2, b1) // what bal-2 has to say about it
	// edge-b fails a dial at bal-1: its next participant goes to edge-c.
	*now += int64(time.Millisecond)
	_, basis, _ = b1.lookup(h, r1.Snapshot())
	t2 := &tunnel{b: bal1, edge: "edge-c", key: key}
	bal1.registerTunnel(t2)
	if res := b1.record(h, "edge-c", basis, netipLocal, t2); res != recorded {
		t.Fatalf("bal-1's move: %d", res)
	}
	deliver(b1, b2)
	deliver(b2, b1)
	v1, _ := b1.view(h, r1.Snapshot())
	v2, _ := b2.view(h, r2.Snapshot())
	t2.mu.Lock()
	closed := t2.closed
	t2.mu.Unlock()
	t.Logf("bal-1: %s v%d; bal-2: %s v%d; the moved participant's tunnel closed: %v", v1.Backend, v1.Version, v2.Backend, v2.Version, closed)
	if v1.Backend != "edge-c" || v2.Backend != "edge-c" || closed {
		t.Fatalf("bal-1's move to edge-c was undone by bal-2's older placement on edge-b")
	}
}
