package balancer

import (
	"context"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ringlb/ringlb/balancer/acceptguard"
	"github.com/ringlb/ringlb/balancer/httplog"
	"github.com/ringlb/ringlb/balancer/ring"
	"github.com/ringlb/ringlb/configs"
)

// The live-session table (docs/DESIGN.md, "Live-session table"): for every
// key with an open tunnel here or on another balancer, or a request within
// the last linger, the backend its session lives on. A key in the table goes
// to its backend while that backend takes live keys, whatever the ring says
// now; a new key goes to its ring owner and is entered. A key whose backend
// does not answer is placed anew with the next version, which supersedes the
// old placement on every balancer: only the sessions of a backend that is
// down move, whole, and a backend that comes back gets none of them back.
// The balancers share the table over gossip (table_sync.go), keyed by the
// key's 64-bit xxhash, as pins are: keys never travel.
//
// An entry is pointer-free (the map is not scanned by the garbage collector)
// and under 200 bytes with the map's own overhead
// (BenchmarkTableMemoryPerEntry). This balancer's open tunnels are kept
// apart, by key, for the few entries that have them.

// tableShards spreads the table over locks; a power of two.
const tableShards = 64

// entry is one key's placement.
type entry struct {
	// placedAt is when the placement was decided (unix ns): the earlier of
	// two placements of one key wins (table_sync.go, wins).
	placedAt int64
	// until is when the key stops being live unless something extends it
	// (unix ns): the latest any balancer announced.
	until int64
	// openUntil: another balancer announced open tunnels for the key, as
	// of its last announcement, until then (unix ns). Such an entry is not
	// evicted for room.
	openUntil int64
	// open counts this balancer's tunnels of the key.
	open int32
	// version counts moves of the key to another backend (a failover, a
	// redirect): a later version wins over any earlier placement.
	version uint16
	backend uint16 // name index (tableNames)
	placer  uint16 // name index of the balancer that placed it
	flags   uint8
}

// entryDirty: changed here since the last refresh sent to peers.
const entryDirty uint8 = 1

// entryGoneAnswered: a delta of the key on a backend past its drain
// deadline here was answered with this entry since the last refresh
// (answerGone). A delta is answered so once a refresh interval: two
// balancers whose drains differ would send theirs back and forth.
const entryGoneAnswered uint8 = 2

// entrySkewMoved: the key moved here off its backend, which another
// balancer does not route to, to one it may (answerGone): once an entry.
const entrySkewMoved uint8 = 4

// placement is what a lookup saw, handed back to record: the key's entry
// then (or none) and when the routing decision was taken.
type placement struct {
	found    bool
	version  uint16
	backend  uint16
	placedAt int64
	at       int64 // unix ns of the lookup: the placedAt of a placement made from it
	tomb     bool  // an entry existed but expired or its backend takes no keys now: its version carries on
}

// tableShard is one lock's part of the table.
type tableShard struct {
	mu      sync.Mutex
	entries map[uint64]entry
	// tunnels are this balancer's open tunnels, by key (only keys with some).
	tunnels map[uint64][]*tunnel
}

// tableSettings are what Reload may change.
type tableSettings struct {
	linger     time.Duration
	perShard   int // max_entries / tableShards
	drainAfter time.Duration
}

// sessionTable is the balancer's copy of the shared table.
type sessionTable struct {
	self     string
	selfIdx  uint16
	log      *slog.Logger
	metrics  *metrics
	settings atomic.Pointer[tableSettings]
	shards   [tableShards]tableShard
	names    tableNames
	budget   keyBudget

	// routes maps name indexes to where an entry's key goes now; rebuilt
	// when the ring or a drain changes (routesFor).
	routes    atomic.Pointer[routeSet]
	routesMu  sync.Mutex
	routesGen atomic.Uint64 // bumped when something routesFor reads besides the ring changed
	ring      *ring.Ring

	// tunnelKeys finds a tunnel's key when it closes.
	tunnelMu   sync.Mutex
	tunnelKeys map[*tunnel]uint64

	// drainsOver are the static edges past their drain deadline whose
	// tunnels were closed (maintain), until their drain ends.
	drainsOver map[string]bool

	// ready is closed once a table shared with other balancers may route
	// (table_sync.go); a table not shared routes at once (routable).
	ready     chan struct{}
	readyOnce sync.Once
	isReady   atomic.Bool
	// inheriting: this balancer replaces another process (an upgrade),
	// whose table it waits for (handoff.go).
	inheriting atomic.Bool
	// partial: that process still waited for its peers' table (its
	// startup wait) when it handed its own over, which is not the table:
	// this one routes once its own round of asks ends, as that one would
	// have, not at the hand-over.
	partial atomic.Bool

	sync   atomic.Pointer[tableSync] // nil without gossip
	drains drainStates
	// unwritten counts the records and drains no message could carry
	// (unwritable); unwrittenLog spaces the lines that say so.
	unwritten    atomic.Int64
	unwrittenLog acceptguard.LogLimit
	// referenced are the name indexes the entries name, as the last
	// expiry pass saw them (reclaimNames; the maintenance goroutine's).
	referenced nameBits
	tableHooks
	stop chan struct{}
	done chan struct{}
}

// tableHooks are what a session table asks of its balancer (the
// balancer's tableHooks): given to newSessionTable, so they are in place
// before the table's maintenance reads them, and never changed after. A
// table on its own (tests) has none.
type tableHooks struct {
	// routesFor returns the members keys route to on snap: the ring's,
	// less the static edges past their drain deadline.
	routesFor func(snap *ring.Snapshot) []ring.Member
	// known says whether a backend name is one this balancer knows (a
	// static edge of its config or a gossip edge); isStatic, a static edge.
	known, isStatic func(name string) bool
	// onDrain is called when a drain changes (the ring is rebuilt).
	onDrain func()
	// drainsPast names the static edges past their drain deadline.
	drainsPast func() map[string]bool
	// clock is the table's time (unix ns); nil: the wall clock. A test
	// moves it by hand (FuzzTableEvents).
	clock func() int64
}

// now is the table's time, unix ns.
func (t *sessionTable) now() int64 {
	if t.clock != nil {
		return t.clock()
	}
	return time.Now().UnixNano()
}

// routeSet is an immutable map from name index to route.
type routeSet struct {
	ringVersion uint64
	gen         uint64
	byIndex     []route
}

type route struct {
	member ring.Member
	ok     bool
}

func newSessionTable(self string, cfg configs.SessionTable, r *ring.Ring, m *metrics, log *slog.Logger, hooks tableHooks) *sessionTable {
	t := &sessionTable{
		self: self, log: log, metrics: m, ring: r, tableHooks: hooks,
		tunnelKeys: map[*tunnel]uint64{},
		drainsOver: map[string]bool{},
		ready:      make(chan struct{}),
		stop:       make(chan struct{}),
		done:       make(chan struct{}),
	}
	t.names.init()
	t.selfIdx, _ = t.names.intern(self)
	for i := range t.shards {
		t.shards[i].entries = map[uint64]entry{}
		t.shards[i].tunnels = map[uint64][]*tunnel{}
	}
	t.setSettings(cfg)
	t.routes.Store(&routeSet{ringVersion: ^uint64(0)})
	t.drains.init()
	go t.maintain()
	return t
}

func (t *sessionTable) setSettings(cfg configs.SessionTable) {
	t.settings.Store(&tableSettings{
		linger:     cfg.Linger.D(),
		perShard:   max(cfg.MaxEntries/tableShards, 1),
		drainAfter: cfg.DrainDeadline.D(),
	})
	t.budget.set(cfg.NewKeysPerIP, cfg.NewKeysBurst)
}

// close stops the maintenance loop and the gossip side.
func (t *sessionTable) close() {
	select {
	case <-t.stop:
	default:
		close(t.stop)
	}
	<-t.done
	if s := t.sync.Load(); s != nil {
		s.close()
	}
}

func (t *sessionTable) shard(h uint64) *tableShard { return &t.shards[h&(tableShards-1)] }

// currentRoutes returns the route set for snap, rebuilding it when the ring
// or a drain changed since it was built.
func (t *sessionTable) currentRoutes(snap *ring.Snapshot) *routeSet {
	rs := t.routes.Load()
	if rs.ringVersion == snap.Version() && rs.gen == t.routesGen.Load() {
		return rs
	}
	return t.rebuildRoutes(snap)
}

func (t *sessionTable) rebuildRoutes(snap *ring.Snapshot) *routeSet {
	t.routesMu.Lock()
	defer t.routesMu.Unlock()
	gen := t.routesGen.Load()
	old := t.routes.Load()
	if old.ringVersion == snap.Version() && old.gen == gen {
		return old
	}
	members := snap.Members()
	if t.routesFor != nil {
		members = t.routesFor(snap)
	}
	var rs *routeSet
	for again := true; again; {
		// Built again if names were retired meanwhile: an index taken
		// before may be one of them.
		names := t.names.gen.Load()
		rs = &routeSet{ringVersion: snap.Version(), gen: gen, byIndex: make([]route, t.names.len())}
		for _, m := range members {
			i, ok := t.names.intern(m.Name)
			if !ok {
				continue
			}
			for int(i) >= len(rs.byIndex) {
				rs.byIndex = append(rs.byIndex, route{})
			}
			rs.byIndex[i] = route{member: m, ok: true}
		}
		again = t.names.gen.Load() != names
	}
	t.routes.Store(rs)
	return rs
}

// routable reports whether backend index i takes its live keys now.
func (rs *routeSet) routable(i uint16) (route, bool) {
	if int(i) >= len(rs.byIndex) || !rs.byIndex[i].ok {
		return route{}, false
	}
	return rs.byIndex[i], true
}

// lookup returns the backend the table sends key hash h to, if the key has
// a live entry whose backend is routable, and the placement seen (for
// record). It does not allocate.
func (t *sessionTable) lookup(h uint64, snap *ring.Snapshot) (ring.Member, placement, bool) {
	rs := t.currentRoutes(snap)
	now := t.now()
	s := t.shard(h)
	s.mu.Lock()
	e, ok := s.entries[h]
	s.mu.Unlock()
	p := placement{at: now}
	if !ok {
		return ring.Member{}, p, false
	}
	// An expired entry, or one whose backend takes no live keys now (a
	// gossip edge gone or draining, a static edge past its drain
	// deadline): the key is placed anew, with the next version, which
	// supersedes the old placement on every balancer — its session moves,
	// and stays where it went. An entry nobody placed anew routes to its
	// backend again if it comes back (its session, if any, is there).
	r, routable := rs.routable(e.backend)
	if !routable || (e.open == 0 && e.until <= now) {
		p.tomb, p.version = true, e.version
		return ring.Member{}, p, false
	}
	p.found, p.version, p.backend, p.placedAt = true, e.version, e.backend, e.placedAt
	return r.member, p, true
}

// Outcomes of record.
const (
	recorded      = iota // entered, touched or moved
	recordStale          // another placement of the key won since the lookup, or its tunnel's static edge is past its drain deadline: the caller's backend is not the session's
	recordRefused        // a new key not entered (budget, room): routed by the ring alone
)

// record notes that a request or tunnel of key hash h was answered by the
// backend named edge, routed from basis; tun is the tunnel, if one opened.
// A key new here is entered (within its client's budget and the table's
// room); a key answered by its entry's backend is kept live; a key whose
// entry's backend did not answer (a failover, an edge's redirect) moves to
// edge with a new version, and this balancer's tunnels of the key to an old
// static backend close, so the session stays whole. When another placement of the key won
// meanwhile, or a tunnel's static edge passed its drain deadline since the
// lookup, the answer came from the wrong backend: recordStale.
func (t *sessionTable) record(h uint64, edge string, basis placement, client netip.Addr, tun *tunnel) int {
	names := t.names.gen.Load()
	bi, ok := t.names.intern(edge)
	if !ok {
		t.metrics.tableRefused.WithLabelValues(refusedFull).Inc()
		return recordRefused
	}
	set := t.settings.Load()
	now := t.now()
	s := t.shard(h)
	s.mu.Lock()
	if bi, ok = t.current(names, bi, edge); !ok {
		s.mu.Unlock()
		t.metrics.tableRefused.WithLabelValues(refusedFull).Inc()
		return recordRefused
	}
	if tun != nil && t.isStatic != nil && t.isStatic(edge) {
		// A static edge past its drain deadline takes no live keys, and
		// the round that closed its tunnels (endDrains) does not come
		// again: a tunnel whose handshake was under way then is refused
		// here, not left open on it. So is one to the URL a reload gave
		// the edge up for (applyReload's round). Under the shard's lock,
		// which that round takes after it rebuilt the routes: it sees
		// this tunnel, or this sees its routes.
		if r, ok := t.currentRoutes(t.ring.Snapshot()).routable(bi); !ok || tun.url != "" && r.member.URL != tun.url {
			s.mu.Unlock()
			return recordStale
		}
	}
	cur, exists := s.entries[h]
	live := exists && (cur.open > 0 || cur.until > now)
	var (
		delta     bool
		moved     string
		closeList []*tunnel
	)
	switch {
	case !live:
		if !exists && !t.budget.allow(client, now) {
			s.mu.Unlock()
			t.metrics.tableRefused.WithLabelValues(refusedBudget).Inc()
			return recordRefused
		}
		if !exists && !t.makeRoom(s, set, now) {
			s.mu.Unlock()
			t.metrics.tableRefused.WithLabelValues(refusedFull).Inc()
			return recordRefused
		}
		e := entry{placedAt: basis.at, until: now + int64(set.linger), backend: bi, placer: t.selfIdx, flags: entryDirty}
		if exists {
			// A lost or expired placement: the next one supersedes it
			// wherever it is still known.
			e.version = cur.version + 1
			e.open = cur.open
		}
		cur, delta = e, true
	case cur.backend == bi:
		// Kept live. Its first tunnel here is told now, not at the next
		// refresh, linger/2 later: a peer may not know the placement (its
		// delta lost, and the refresh that repairs it lost too, or gone
		// with the process an upgrade replaced, whose changes the new one
		// does not know) and route the live key by its ring, which can
		// differ (its monitor). So is a key near its end with no tunnel
		// open here: a peer whose clock runs ahead may have let it expire
		// already.
		delta = cur.open == 0 && (tun != nil || cur.until-now < int64(refreshInterval(set.linger)))
		cur.until = max(cur.until, now+int64(set.linger))
		cur.flags |= entryDirty
	case basis.found && basis.version == cur.version && basis.backend == cur.backend && basis.placedAt == cur.placedAt:
		// Routed by this very entry, answered elsewhere: the key moves.
		moved = t.names.name(cur.backend)
		cur.version++
		cur.backend, cur.placedAt, cur.placer = bi, basis.at, t.selfIdx
		cur.until = max(cur.until, now+int64(set.linger))
		cur.flags |= entryDirty
		closeList = t.tunnelsNotOn(s.tunnels[h], edge)
		delta = true
	default:
		// The entry changed after the lookup (a peer's placement came in).
		// Ours, had it been entered, would compete by the same rule as
		// any two placements.
		mine := entry{placedAt: basis.at, version: basis.version, backend: bi, placer: t.selfIdx}
		if !basis.found && basis.tomb {
			mine.version = basis.version + 1
		}
		if cur.backend == 0 {
			// A tomb came meanwhile (answerGone): a peer's placement on a
			// backend this balancer does not route to, which this one
			// supersedes as lookup would have.
			mine.version = max(mine.version, cur.version+1)
		}
		if cur.backend != 0 && !wins(mine, cur, &t.names) {
			// Stale either way; a conflict when the two placements had
			// one version (a later one is a move made elsewhere).
			theirs := cur
			s.mu.Unlock()
			if theirs.version == mine.version {
				t.metrics.tableConflicts.Inc()
				t.logConflict(h, mine, theirs)
			}
			return recordStale
		}
		moved = t.names.name(cur.backend)
		open := cur.open
		cur = entry{placedAt: mine.placedAt, version: mine.version, backend: bi, placer: t.selfIdx,
			until: max(cur.until, now+int64(set.linger)), openUntil: cur.openUntil, open: open, flags: entryDirty}
		closeList = t.tunnelsNotOn(s.tunnels[h], edge)
		delta = true
	}
	if tun != nil {
		cur.open++
		s.tunnels[h] = append(s.tunnels[h], tun)
	}
	s.entries[h] = cur
	s.mu.Unlock()
	if tun != nil {
		t.tunnelMu.Lock()
		t.tunnelKeys[tun] = h
		t.tunnelMu.Unlock()
	}
	if moved != "" {
		t.metrics.tableMoves.Inc()
		t.closeTunnels(closeList, closeMoved)
	}
	if delta {
		if sy := t.sync.Load(); sy != nil {
			sy.queue(h, cur)
		}
	}
	return recorded
}

// current returns name's index as it is now, given index i interned when
// the names' generation was gen: looked up again if names were retired
// since (reclaimNames), which i may be one of. Called under the lock of
// the shard the entry is stored in: an entry stored after the scan that
// frees an index passed its shard was stored after the index's
// retirement, and so holds the new one.
func (t *sessionTable) current(gen uint64, i uint16, name string) (uint16, bool) {
	if t.names.gen.Load() == gen {
		return i, true
	}
	return t.names.intern(name)
}

// logConflict says, at debug level, that this balancer's placement of key
// hash h lost to another's.
func (t *sessionTable) logConflict(h uint64, mine, theirs entry) {
	if !t.log.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	t.log.Debug("session table: a placement made here lost to another balancer's", "key", httplog.KeyHash(h),
		"mine", t.names.name(mine.backend), "mine_version", mine.version, "mine_placed", time.Unix(0, mine.placedAt),
		"theirs", t.names.name(theirs.backend), "theirs_version", theirs.version, "theirs_placed", time.Unix(0, theirs.placedAt), "theirs_by", t.names.name(theirs.placer))
}

// tunnelsNotOn returns the tunnels of list to static edges other than
// backend: their key's session is on backend now, and a third-party backend
// will not send them there — a static edge now, or when the tunnel opened
// (one a reload took out of the config since, still running, kept the old
// participants beside the newcomers placed elsewhere).
// Tunnels to gossip edges are left to the edges, which move their sessions
// themselves (a drain's hand-off and 1012, a 421 to a pinned or claimed
// session) and would lose what a hand-off carries if the balancer cut in.
func (t *sessionTable) tunnelsNotOn(list []*tunnel, backend string) []*tunnel {
	var out []*tunnel
	for _, tn := range list {
		if tn.edge != backend && (tn.static || t.isStatic != nil && t.isStatic(tn.edge)) {
			out = append(out, tn)
		}
	}
	return out
}

// closeTunnels closes tunnels whose key now lives on another backend, so
// their clients reconnect to it. Never under a shard lock: a closing tunnel
// releases itself (closed) through the same lock.
func (t *sessionTable) closeTunnels(list []*tunnel, reason string) {
	for _, tn := range list {
		t.metrics.tableTunnelsClosed.WithLabelValues(reason).Inc()
		tn.close()
	}
}

// closed forgets a tunnel that ended; the last of its key starts the key's
// linger.
func (t *sessionTable) closed(tun *tunnel) {
	t.tunnelMu.Lock()
	h, ok := t.tunnelKeys[tun]
	delete(t.tunnelKeys, tun)
	t.tunnelMu.Unlock()
	if !ok {
		return
	}
	linger := int64(t.settings.Load().linger)
	now := t.now()
	s := t.shard(h)
	s.mu.Lock()
	defer s.mu.Unlock()
	list := s.tunnels[h]
	if i := slices.Index(list, tun); i >= 0 {
		list = slices.Delete(list, i, i+1)
	}
	if len(list) == 0 {
		delete(s.tunnels, h)
	} else {
		s.tunnels[h] = list
	}
	if e, ok := s.entries[h]; ok && e.open > 0 {
		e.open--
		if e.open == 0 {
			e.until = max(e.until, now+linger)
			e.flags |= entryDirty
		}
		s.entries[h] = e
	}
}

// evictSample is how many entries of a full shard are looked at for the
// one to evict: map iteration starts at a random place, so this is a random
// sample, and the oldest idle entry of it goes (as Redis approximates LRU).
const evictSample = 32

// makeRoom frees a slot in full shard s for a new entry, evicting the
// oldest entry of a sample that has no open tunnel, here or (as last
// announced) on another balancer. It reports false when the sample holds
// only live sessions: then the new key is not entered. s.mu is held.
func (t *sessionTable) makeRoom(s *tableShard, set *tableSettings, now int64) bool {
	if len(s.entries) < set.perShard {
		return true
	}
	var (
		victim uint64
		oldest int64
		found  bool
		n      int
	)
	for h, e := range s.entries {
		if n++; n > evictSample {
			break
		}
		reason := ""
		switch {
		case e.open == 0 && e.until <= now:
			reason = evictExpired
		case e.open == 0 && e.openUntil <= now && (!found || e.until < oldest):
			victim, oldest, found = h, e.until, true
		}
		if reason != "" {
			delete(s.entries, h)
			t.metrics.tableEvictions.WithLabelValues(reason).Inc()
			return true
		}
	}
	if !found {
		return false
	}
	delete(s.entries, victim)
	t.metrics.tableEvictions.WithLabelValues(evictCapacity).Inc()
	return true
}

// len returns the number of entries held.
func (t *sessionTable) len() int {
	n := 0
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		n += len(s.entries)
		s.mu.Unlock()
	}
	return n
}

// Label values of the table's metrics.
const (
	evictExpired  = "expired"
	evictCapacity = "capacity"
	refusedBudget = "new_key_budget"
	refusedFull   = "full"
	closeMoved    = "moved"
	closeConflict = "conflict"
	closeDrained  = "drain_deadline"
)

// maintain runs until close: entries expire, the route set follows drain
// deadlines, and a drain past its deadline closes its tunnels.
func (t *sessionTable) maintain() {
	defer close(t.done)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-t.stop:
			return
		case <-tick.C:
			t.tick()
		}
	}
}

// tick is one round of maintenance: entries expire, the route set follows
// drain deadlines, a drain past its deadline closes its tunnels.
func (t *sessionTable) tick() {
	t.expire()
	t.reclaimNames()
	// A drain's deadline is a time, not an event: look again.
	t.routesGen.Add(1)
	t.currentRoutes(t.ring.Snapshot())
	t.endDrains()
}

// expire deletes the entries whose linger has passed, a shard at a time,
// and notes the names the others name (referenced).
func (t *sessionTable) expire() {
	now := t.now()
	t.referenced = nameBits{}
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		n := 0
		for h, e := range s.entries {
			if e.open == 0 && e.until <= now {
				delete(s.entries, h)
				n++
				continue
			}
			t.referenced.set(e.backend)
			t.referenced.set(e.placer)
		}
		s.mu.Unlock()
		if n > 0 {
			t.metrics.tableEvictions.WithLabelValues(evictExpired).Add(float64(n))
		}
	}
	t.budget.forget(now)
}

// reclaimNames forgets the names of backends and balancers gone from the
// cluster that no entry names any more (expire's scan), keeping every
// index an entry holds: retired at one round, freed at the next unless an
// entry took one meanwhile (a request answered by an edge as it left).
// A name routed to, known as a backend (a static edge of the config, a
// gossip edge) or a balancer member stays.
func (t *sessionTable) reclaimNames() {
	candidates := t.names.unreferenced(&t.referenced, t.selfIdx)
	if len(candidates) == 0 {
		return
	}
	routed := map[string]bool{}
	for _, r := range t.routes.Load().byIndex {
		if r.ok {
			routed[r.member.Name] = true
		}
	}
	gone := candidates[:0]
	for _, c := range candidates {
		if !routed[c.name] && (t.known == nil || !t.known(c.name)) && !t.isBalancer(c.name) {
			gone = append(gone, c)
		}
	}
	if len(gone) > 0 {
		t.names.retire(gone)
		t.routesGen.Add(1)
	}
}

// endDrains closes this balancer's tunnels to static edges past their
// drain deadline, once per drain: their sessions move, whole, to the next
// backend (the entries no longer route there, so the reconnecting clients
// are placed anew). A backend that is down keeps its tunnels: if it is dead
// they are dead, and if only its monitor failed its sessions go on, moving
// only when a participant of theirs comes and is placed elsewhere.
func (t *sessionTable) endDrains() {
	if t.drainsPast == nil {
		return
	}
	past := t.drainsPast()
	for name := range t.drainsOver {
		if !past[name] {
			delete(t.drainsOver, name)
		}
	}
	var closeList []*tunnel
	for name := range past {
		if t.drainsOver[name] {
			continue
		}
		t.drainsOver[name] = true
		n := len(closeList)
		closeList = t.tunnelsTo(name, closeList)
		t.log.Info("static edge drain deadline passed: its remaining sessions move", "edge", name, "tunnels_closed", len(closeList)-n)
	}
	t.closeTunnels(closeList, closeDrained)
}

// tunnelsTo appends this balancer's tunnels to backend name to list.
func (t *sessionTable) tunnelsTo(name string, list []*tunnel) []*tunnel {
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		for _, tl := range s.tunnels {
			for _, tn := range tl {
				if tn.edge == name {
					list = append(list, tn)
				}
			}
		}
		s.mu.Unlock()
	}
	return list
}

// tableGauges are the table's gauges, read at scrape time.
func (b *Balancer) tableGauges() tableGauges {
	return tableGauges{
		entries: func() float64 { return float64(b.table.len()) },
		ready: func() float64 {
			if b.table.routable() {
				return 1
			}
			return 0
		},
	}
}

// routable reports whether the table routes: it has what it waited for,
// or it is neither shared nor waiting for the process this balancer
// replaced to hand it over, or for the peers' table that process waited
// for.
func (t *sessionTable) routable() bool {
	return t.isReady.Load() || (t.sync.Load() == nil && !t.inheriting.Load() && !t.partial.Load())
}

// waitRoutable waits until the table routes or the startup wait is over
// (the table is made ready then), or ctx is done.
func (t *sessionTable) waitRoutable(done <-chan struct{}) bool {
	if t.routable() {
		return true
	}
	select {
	case <-t.ready:
		return true
	case <-done:
		return false
	}
}

// markReady lets the table route; requests waiting for it go on.
func (t *sessionTable) markReady() {
	t.readyOnce.Do(func() {
		t.isReady.Store(true)
		close(t.ready)
	})
}

// inherit applies one part of the table of the process this balancer
// replaces (an upgrade), as a peer's answer is applied. It returns how many
// entries the part held.
func (t *sessionTable) inherit(body []byte) (int, error) {
	n := 0
	err := readBody(body, t.mergeDrain, func(r tableRecord) {
		n++
		// The placers that process names are names it held: interned.
		t.mergeRecord(r, false, true)
	})
	return n, err
}

// beginInherit starts the wait for the table of the process this balancer
// replaces; ready says that table routed there.
func (t *sessionTable) beginInherit(ready bool) {
	t.partial.Store(!ready)
	t.inheriting.Store(true)
}

// endInherit ends the wait for the replaced process's table: what arrived
// of it is the table, and it routes (a peer's table would add nothing the
// replaced process did not have) — unless that process was still waiting
// for its peers' table: then this one waits for it (partial).
func (t *sessionTable) endInherit() {
	if t.inheriting.Swap(false) {
		if t.partial.Load() {
			t.log.Info("session table taken over from a process still waiting for the other balancers' table: waiting for it", "entries", t.len())
			return
		}
		t.markReady()
		t.log.Info("session table ready: routing", "why", "taken over from the process this one replaced", "entries", t.len())
	}
}

// attach counts here a tunnel of key hash h to backend edge that the
// process this balancer replaced opened (an upgrade); counted says that
// process's table counted it. Its entry came with that process's table; a
// missing one (no room, or the table did not arrive) is entered as placed
// here now: the session is where its tunnel is. A tunnel that table did
// not count was routed by the ring alone (its shard was full, its client
// over its budget), and an entry of its key that names another backend
// came later (a peer's placement, once there was room): it is not counted
// into that entry either, whose open tunnels are on its backend — counted,
// the entry claimed its session live there while it was on this tunnel's
// backend (FuzzTableEvents: seed ring-routed-tunnel-handed-over). A
// tunnel from a release that does not say (movedCounted) is taken as not
// counted: one that was is on another backend than its entry only after a
// move of its key, and then its edge moves it or this table closes it.
func (t *sessionTable) attach(h uint64, edge string, tun *tunnel, counted bool) {
	names := t.names.gen.Load()
	bi, ok := t.names.intern(edge)
	if !ok {
		return
	}
	set := t.settings.Load()
	now := t.now()
	s := t.shard(h)
	s.mu.Lock()
	if bi, ok = t.current(names, bi, edge); !ok {
		s.mu.Unlock()
		return
	}
	e, ok := s.entries[h]
	switch {
	case !ok:
		if !t.makeRoom(s, set, now) {
			s.mu.Unlock()
			t.metrics.tableRefused.WithLabelValues(refusedFull).Inc()
			return
		}
		e = entry{placedAt: now, until: now + int64(set.linger), backend: bi, placer: t.selfIdx, flags: entryDirty}
	case !counted && e.backend != bi:
		s.mu.Unlock()
		return
	}
	e.open++
	s.entries[h] = e
	s.tunnels[h] = append(s.tunnels[h], tun)
	s.mu.Unlock()
	t.tunnelMu.Lock()
	t.tunnelKeys[tun] = h
	t.tunnelMu.Unlock()
}

// counts reports whether the table counts tun in its key's entry (record
// or attach took it).
func (t *sessionTable) counts(tun *tunnel) bool {
	t.tunnelMu.Lock()
	defer t.tunnelMu.Unlock()
	_, ok := t.tunnelKeys[tun]
	return ok
}

// tableNames interns backend and balancer names: entries hold a 16-bit
// index. Only names of known backends and balancer members are interned
// (merge interns no placer another balancer names unless it is one), and a
// name gone from the cluster is forgotten once no entry names it (reclaim),
// so the list is bounded by the cluster's size, whatever joined and left
// before. Before, every received record's placer was interned for good: a
// member with the cluster's key announcing the balancer role filled the
// 65,536 indexes with invented placers in a fifth of a second, and from
// then on a newly joined edge could be no route — keys placed on it were
// refused as full, other balancers' placements on it ignored, the
// balancers disagreed on where its sessions were. Edges named after pods
// coming and going grew the list the same way, and every ring change
// allocated a route for each name ever seen.
type tableNames struct {
	mu     sync.RWMutex
	byName map[string]uint16
	names  []string // index 0 is "" (no name: a placer not known here); a freed index holds "" until reused
	free   []uint16 // freed indexes, reused before the list grows
	// retired are indexes taken out of byName by the last reclaim: freed
	// at the next unless an entry names them (one stored meanwhile).
	retired []uint16
	// gen changes when names leave byName: who interned a name before
	// looks it up again under its shard's lock (current), so no entry
	// takes an index once the scan that frees it has passed its shard.
	gen atomic.Uint64
}

func (n *tableNames) init() {
	n.byName = map[string]uint16{}
	n.names = []string{""}
}

func (n *tableNames) intern(name string) (uint16, bool) {
	n.mu.RLock()
	i, ok := n.byName[name]
	n.mu.RUnlock()
	if ok {
		return i, true
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if i, ok := n.byName[name]; ok {
		return i, true
	}
	if k := len(n.free); k > 0 {
		i = n.free[k-1]
		n.free = n.free[:k-1]
		n.names[i] = name
	} else {
		if len(n.names) > 0xffff {
			return 0, false
		}
		i = uint16(len(n.names))
		n.names = append(n.names, name)
	}
	n.byName[name] = i
	return i, true
}

func (n *tableNames) lookup(name string) (uint16, bool) {
	n.mu.RLock()
	defer n.mu.RUnlock()
	i, ok := n.byName[name]
	return i, ok
}

func (n *tableNames) name(i uint16) string {
	n.mu.RLock()
	defer n.mu.RUnlock()
	if int(i) < len(n.names) {
		return n.names[i]
	}
	return ""
}

// len is the list's length: the most names held at once (a freed index
// is reused first).
func (n *tableNames) len() int {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return len(n.names)
}

// namedIndex is an interned name and its index.
type namedIndex struct {
	i    uint16
	name string
}

// unreferenced frees the indexes retired at the last reclaim that no entry
// names now (referenced: the scan since), puts back in byName one an entry
// still names, and returns the names interned, other than keep, that no
// entry names: candidates to retire.
func (n *tableNames) unreferenced(referenced *nameBits, keep uint16) []namedIndex {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, i := range n.retired {
		name := n.names[i]
		if !referenced.has(i) {
			n.names[i] = ""
			n.free = append(n.free, i)
		} else if _, again := n.byName[name]; !again {
			n.byName[name] = i
		}
	}
	n.retired = n.retired[:0]
	var out []namedIndex
	for i := 1; i < len(n.names); i++ {
		if name := n.names[i]; name != "" && uint16(i) != keep && !referenced.has(uint16(i)) && n.byName[name] == uint16(i) {
			out = append(out, namedIndex{uint16(i), name})
		}
	}
	return out
}

// retire takes gone out of byName: a later intern of one of those names
// gets a fresh index, and the next reclaim frees them unless an entry
// took one meanwhile.
func (n *tableNames) retire(gone []namedIndex) {
	if len(gone) == 0 {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, g := range gone {
		if n.byName[g.name] == g.i {
			delete(n.byName, g.name)
			n.retired = append(n.retired, g.i)
		}
	}
	n.gen.Add(1)
}

// nameBits is a set of name indexes.
type nameBits [1 << 16 / 64]uint64

func (b *nameBits) set(i uint16)      { b[i/64] |= 1 << (i % 64) }
func (b *nameBits) has(i uint16) bool { return b[i/64]&(1<<(i%64)) != 0 }

// keyBudget is the per-address token bucket for new keys: a client that
// invents keys fast enters only its budget's worth, the rest is routed by
// the ring without an entry, so it cannot push live sessions out. IPv6
// addresses count by /64 (one subscriber's prefix).
type keyBudget struct {
	mu     sync.Mutex
	rate   float64
	burst  float64
	perIP  map[netip.Addr]bucket
	sweepT int64
}

type bucket struct {
	tokens float64
	last   int64 // unix ns
}

// maxBudgetAddrs bounds the addresses with a bucket; an address beyond it
// (with the map full of addresses still spending) gets no new keys entered.
const maxBudgetAddrs = 1 << 16

func (k *keyBudget) set(rate float64, burst int) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.rate, k.burst = rate, float64(burst)
	if k.perIP == nil {
		k.perIP = map[netip.Addr]bucket{}
	}
}

// allow spends one token of client's bucket.
func (k *keyBudget) allow(client netip.Addr, now int64) bool {
	a := acceptguard.ClientNetwork(client)
	k.mu.Lock()
	defer k.mu.Unlock()
	b, ok := k.perIP[a]
	if !ok {
		if len(k.perIP) >= maxBudgetAddrs {
			k.forgetLocked(now)
			if len(k.perIP) >= maxBudgetAddrs {
				return false
			}
		}
		b = bucket{tokens: k.burst, last: now}
	}
	b.tokens = min(b.tokens+float64(now-b.last)/1e9*k.rate, k.burst)
	b.last = now
	if b.tokens < 1 {
		k.perIP[a] = b
		return false
	}
	b.tokens--
	k.perIP[a] = b
	return true
}

// forget drops the buckets that have filled up again (at most once a
// second): the map holds only addresses spending now.
func (k *keyBudget) forget(now int64) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.forgetLocked(now)
}

func (k *keyBudget) forgetLocked(now int64) {
	if now-k.sweepT < int64(time.Second) {
		return
	}
	k.sweepT = now
	for a, b := range k.perIP {
		if b.tokens+float64(now-b.last)/1e9*k.rate >= k.burst {
			delete(k.perIP, a)
		}
	}
}

// entryView is an entry as GET /api/lookup shows it.
type entryView struct {
	Backend  string    `json:"backend"`
	Version  uint16    `json:"version"`
	PlacedAt time.Time `json:"placed_at"`
	PlacedBy string    `json:"placed_by"`
	// LiveUntil is when the key is released unless a tunnel or request
	// keeps it; tunnels open here keep it live whatever it says.
	LiveUntil time.Time `json:"live_until"`
	// OpenHere counts this balancer's tunnels of the key; OpenElsewhere
	// says another balancer announced open tunnels lately.
	OpenHere      int  `json:"open_here"`
	OpenElsewhere bool `json:"open_elsewhere"`
	// Routable says the key goes to Backend now; false when the backend
	// was lost (the key goes to its ring owner and is placed anew).
	Routable bool `json:"routable"`
}

// view returns key hash h's entry, if any.
func (t *sessionTable) view(h uint64, snap *ring.Snapshot) (entryView, bool) {
	rs := t.currentRoutes(snap)
	now := t.now()
	s := t.shard(h)
	s.mu.Lock()
	e, ok := s.entries[h]
	s.mu.Unlock()
	if !ok || e.backend == 0 {
		return entryView{}, false // none, or a tomb: no placement (answerGone)
	}
	_, routable := rs.routable(e.backend)
	return entryView{
		Backend: t.names.name(e.backend), Version: e.version, PlacedAt: time.Unix(0, e.placedAt).UTC(), PlacedBy: t.names.name(e.placer),
		LiveUntil: time.Unix(0, e.until).UTC(), OpenHere: int(e.open), OpenElsewhere: e.openUntil > now,
		Routable: routable && (e.open > 0 || e.until > now),
	}, true
}
