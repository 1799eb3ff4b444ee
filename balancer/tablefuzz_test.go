package balancer

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/ringlb/ringlb/balancer/handoff"
	"github.com/ringlb/ringlb/balancer/ring"
	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health"
)

// FuzzTableEvents drives the live-session tables of two or three balancers
// of one cluster (docs/DESIGN.md, "Live-session table") through an order of
// events the input chooses, with their real code and a clock of the
// harness's: requests of a few keys at each balancer — a plain request or a
// WebSocket whose tunnel opens, looked up and recorded at once or with
// other events between the lookup and the answer —, tunnels closing (their
// client leaving), third-party backends (static edges) dying and coming
// back, a balancer's monitor changing its mind, a reload adding a backend or
// changing a weight, a drain started or ended through one balancer, the
// sync messages (the real deltas, refreshes, asks and answers of
// table_sync.go through a link of the harness) delivered in order, out of
// order, dropped or twice (packets; streams arrive, in any order), a
// balancer restarting empty (it asks for the table and waits, or its
// startup wait passes) or replaced by an upgrade that inherits its table and
// tunnels and serves at once, but joins gossip only later (until then what
// the others send it goes to the process it replaced, whose table is no
// longer anyone's, and what it places goes nowhere), a balancer cut off from the others (everything to and from it
// lost; its peers' copies of its open keys expire) until the network heals, time passing (maintenance every second, refreshes every linger/2,
// deltas flushed, late packets lost), and a small max_entries whose shards
// fill up.
//
// Checked after every event: each table's shards hold at most their share
// of max_entries; an entry's count of this balancer's tunnels is never
// negative and is the tunnels the table holds of its key, which are the
// harness's open ones; a tunnel open here on a backend that takes live keys
// here is where this balancer routes its key; a live placement only moves
// forward (a change to it wins over it by the rule every balancer applies);
// an entry with a tunnel open here or announced open elsewhere is not
// evicted; and an event that changes only rings (a monitor, a weight, a
// backend added or back) moves no entry, closes no tunnel and changes no
// route a table gives by its entry. At a quiescent point (every message
// delivered, every balancer refreshed, maintenance run) between balancers
// with one config and one drain state, for every key with a tunnel the
// table counts: all its tunnels are on one backend, every balancer that
// routes sends it there, and all their entries agree — and when no message
// was lost, no entry evicted for room and no record ignored for a backend
// past its drain deadline or not in the config that takes live keys again
// since the last such point, already before the refreshes that repair a lost one (a balancer that
// joined after an upgrade has asked the others and told them its changes).
//
// Not reached: gossip edges (their 421s and hand-offs move their sessions,
// not the table); a static edge removed from the config; a monitor's own
// timing (a flip is an event), weight 0 as a drain; clock skew beyond
// 1.5 s between two balancers; memberlist's stream failures (a stream
// always arrives, within a second of the clock, unless its balancer is
// cut off); a balancer down for a while (a restart is at once); the HTTP and relay paths around lookup and
// record (a dial's suspects, 421s, the relay's asynchronous close); the
// never-split check for keys with no tunnel (a request's linger) and for
// tunnels the table refused (a full shard, a client over its budget:
// routed by the ring alone, as documented); more than four keys and
// backends.
func FuzzTableEvents(f *testing.F) {
	f.Fuzz(func(t *testing.T, in []byte) {
		runTableEvents(t, in)
	})
}

// The events: two bytes each, what (mod numTableEvents) and an argument.
// The seeds from before tevCut came have their events below it.
const (
	tevRequest  = iota // arg: balancer (bits 0–1), key (2–3), a tunnel (4), the answer later (5), client (6)
	tevComplete        // the answer of a request looked up earlier comes (arg: which)
	tevClose           // a tunnel's client leaves (arg: which)
	tevBackend         // a backend dies or comes back (arg: backend 0–1; 2: its tunnels die with it; 3: monitors see it at once)
	tevMonitor         // one balancer's monitor of a backend flips (arg: balancer 0–1, backend 2–3)
	tevReload          // one balancer's reload: relay-d added, or a weight (arg: balancer 0–1, backend 2–3, weight 4–5)
	tevDrain           // a drain started or ended through one balancer (arg: balancer 0–1, backend 2–3, on 4, deadline 5–6)
	tevFlush           // one balancer sends its pending deltas (arg: balancer)
	tevRefresh         // one balancer sends its refresh (arg: balancer)
	tevDeliver         // a message in flight: delivered, reordered, dropped, duplicated (arg: mode 0–1, which 2–7)
	tevTime            // time passes (arg: how long, tableSteps)
	tevRestart         // a balancer restarts empty, or is replaced by an upgrade (arg: balancer 0–1, upgrade 2)
	tevAnswer          // one balancer answers the asks it received (arg: balancer)
	tevSettle          // every message delivered, every balancer refreshed: the quiescent checks
	tevCut             // a balancer is cut off from the others, or joins them again (arg: balancer)
	tevJoin            // the new process of an upgraded balancer joins gossip, the old one gone (arg: balancer)
	numTableEvents
)

// tableSteps are how far tevTime moves the clock: within the delta window,
// a maintenance round, a refresh interval, past the linger.
var tableSteps = [8]time.Duration{time.Millisecond, 20 * time.Millisecond, 300 * time.Millisecond, time.Second, 2500 * time.Millisecond, 5 * time.Second, 11 * time.Second, 16 * time.Second}

// tfLinger is the harness's linger: refreshes every 5 s.
const tfLinger = 10 * time.Second

var (
	tfBalancerNames = [3]string{"bal-1", "bal-2", "bal-3"}
	tfBackendNames  = [4]string{"relay-a", "relay-b", "relay-c", "relay-d"}
	tfClients       = [2]netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")}
)

// tfKeys are the keys of the fuzz: the first three in one shard of the
// table (so a small max_entries fills it), the fourth in another.
var tfKeys = sync.OnceValue(func() (keys [4]string) {
	n := 0
	var shard uint64
	for i := 0; n < 3; i++ {
		k := fmt.Sprintf("key-%d", i)
		h := xxhash.Sum64String(k) & (tableShards - 1)
		if n == 0 || h == shard {
			shard, keys[n] = h, k
			n++
		}
	}
	for i := 0; ; i++ {
		k := fmt.Sprintf("other-%d", i)
		if xxhash.Sum64String(k)&(tableShards-1) != shard {
			keys[3] = k
			return keys
		}
	}
})

// tfMetrics are the tables' metrics, one set for every run.
var tfMetrics = sync.OnceValue(func() *metrics {
	m, err := newTestMetrics(prometheus.NewRegistry(), ring.New(ring.DefaultConfig()))
	if err != nil {
		panic(err)
	}
	return m
})

// tfRingConfig is a small ring: rebuilt often, in microseconds.
var tfRingConfig = ring.Config{Partitions: 211, Replication: 20, Load: 1.25}

// tfMsg is a message in flight between two balancers.
type tfMsg struct {
	from, to string
	payload  []byte
	stream   bool  // sent with Send: arrives (memberlist's streams are TCP)
	sent     int64 // when (the harness's clock)
}

// tfLink is a balancer's end of the harness's network.
type tfLink struct {
	w    *tfWorld
	from string
}

func (l *tfLink) SendPacket(to string, p []byte) error {
	if len(p) > health.MaxChannelPacket {
		return errors.New("packet too large")
	}
	if l.w.cut[l.from] || l.w.cut[to] {
		l.w.lost = true
		return nil // lost on the way
	}
	l.w.net = append(l.w.net, tfMsg{from: l.from, to: to, payload: slices.Clone(p), sent: l.w.now})
	return nil
}

func (l *tfLink) Send(to string, p []byte) error {
	if len(p) > health.MaxChannelMessage {
		return errors.New("message too large")
	}
	if l.w.cut[l.from] || l.w.cut[to] {
		l.w.lost = true
		return errors.New("no route to the member")
	}
	l.w.net = append(l.w.net, tfMsg{from: l.from, to: to, payload: slices.Clone(p), stream: true, sent: l.w.now})
	return nil
}

func (l *tfLink) Close() {}

// tfCluster is the membership a balancer sees: the balancers of the fuzz,
// but those it has not yet believed (tfWorld.unbelieved).
type tfCluster struct {
	Cluster // nil: nothing else is asked of it
	w       *tfWorld
	self    string
}

// tfMeta is what each balancer of the fuzz announces: this release's.
var tfMeta = health.Meta{Role: health.RoleBalancer, State: health.StateAlive, PeerSigning: health.PeerSigningTableAsk}

func (c tfCluster) Members() []health.Node {
	var out []health.Node
	for _, b := range c.w.bals {
		if !c.w.unbelieved[[2]string{c.self, b.name}] {
			out = append(out, health.Node{Name: b.name, Meta: tfMeta})
		}
	}
	return out
}

func (c tfCluster) Node(name string) (health.Node, bool) {
	for _, b := range c.w.bals {
		if b.name == name && !c.w.unbelieved[[2]string{c.self, name}] {
			return health.Node{Name: name, Meta: tfMeta}, true
		}
	}
	return health.Node{}, false
}

// tfBal is one balancer: its table (a new one at each restart: gen), the
// config and monitors it builds its ring from.
type tfBal struct {
	w           *tfWorld
	name        string
	gen         int
	t           *sessionTable
	sy          *tableSync
	b           *Balancer // holds its tunnels, as the real one does
	r           *ring.Ring
	skew        int64
	config      map[string]int // static edges: name → weight
	monitorUp   map[string]bool
	lastRefresh int64
	// offRoutes are the backends (name indexes) that took no live keys
	// here at some moment since the last observation (a drain merged, a
	// deadline passed at a tick), though they may again by the next: a
	// placement on one gave way to any other then (noteRoutes).
	offRoutes map[uint16]bool
	// past are the static edges past their drain deadline here as of the
	// last look (notePast).
	past map[string]bool
	// joining: replaced by an upgrade, the new process (t) serves but has
	// not joined gossip yet; sy is the replaced process's, which receives
	// what the others send until it leaves (tevJoin).
	joining bool
}

func (b *tfBal) now() int64 { return b.w.now + b.skew }

// tfTunnel is a tunnel the harness opened.
type tfTunnel struct {
	bal     *tfBal
	gen     int
	key     int
	edge    string
	tun     *tunnel
	tracked bool // the table counts it (record or attach took it)
	gone    bool // ended: closed, or its balancer's process is gone
}

// tfRequest is a request looked up and not yet answered.
type tfRequest struct {
	bal    *tfBal
	gen    int
	key    int
	edge   string // the backend that answers
	basis  placement
	tunnel bool
	client netip.Addr
}

// tfSeen is an entry as last observed.
type tfSeen struct {
	e        entry
	ok       bool
	gen      int
	routable bool // its backend took live keys here then
}

type tfWorld struct {
	t        *testing.T
	now      int64
	bals     []*tfBal
	alive    map[string]bool
	net      []tfMsg
	tunnels  []*tfTunnel
	pending  []tfRequest
	keys     [4]string
	hashes   [4]uint64
	cfg      configs.SessionTable
	perShard int
	seen     map[[2]int]tfSeen // (balancer, key) → entry
	cut      map[string]bool   // balancers cut off from the others (tevCut)
	lost     bool              // a message was lost since the last settle
	// evicted is the count of entries evicted for room (all tables) at the
	// last settle: one evicted since is, to the table that held it, a
	// message lost (evictions).
	evicted float64
	// regained: since the last settle where the views agreed, a record
	// was ignored because its backend took no live keys where it came
	// (past its drain deadline, or not in its config), and a balancer's
	// routes gained such a backend again (notePast, a reload adding one).
	regained        bool
	ignoredAtSettle [2]float64 // ignoredCounts at the last settle where the views agreed
	step            int
	trace           bool // RINGLB_TABLEFUZZ_TRACE: each event and the state after it logged

	// unbelieved are (viewer, member) pairs where the viewer has not yet
	// believed the member's join (health's join confirmation): it is no
	// member there, and what it sends is ignored.
	unbelieved map[[2]string]bool
}

// tableEventNames name the events in a trace.
var tableEventNames = [numTableEvents]string{"request", "complete", "close", "backend", "monitor", "reload", "drain", "flush", "refresh", "deliver", "time", "restart", "answer", "settle", "cut", "join"}

// dump logs an event and the state after it.
func (w *tfWorld) dump(op, arg byte) {
	w.t.Logf("step %d: %s %#02x (t=%v, %d in flight, %d pending)", w.step, tableEventNames[op], arg, time.Duration(w.now%int64(time.Hour)), len(w.net), len(w.pending))
	for _, b := range w.bals {
		line := fmt.Sprintf("  %s gen %d joining %v ready %v ring %v config %v drains %v:", b.name, b.gen, b.joining, b.t.routable(), b.r.Snapshot().Members(), b.config, b.t.drains.all())
		for k, h := range w.hashes {
			if e, ok := b.entry(h); ok {
				line += fmt.Sprintf(" %s→%s v%d placed %v until %v open %d openUntil %v;", w.keys[k], b.t.names.name(e.backend), e.version,
					time.Duration(e.placedAt%int64(time.Hour)), time.Duration(e.until%int64(time.Hour)), e.open, time.Duration(e.openUntil%int64(time.Hour)))
			}
		}
		w.t.Log(line)
	}
	for _, tt := range w.tunnels {
		w.t.Logf("  tunnel %s %s on %s tracked %v", tt.bal.name, w.keys[tt.key], tt.edge, tt.tracked)
	}
}

// runTableEvents runs one input: a byte of config, then the events.
func runTableEvents(t *testing.T, in []byte) {
	if len(in) == 0 {
		return
	}
	w := newTableWorld(t, in[0])
	in = in[1:]
	w.trace = os.Getenv("RINGLB_TABLEFUZZ_TRACE") != ""
	for len(in) >= 2 {
		w.step++
		w.event(in[0]%numTableEvents, in[1])
		if w.trace {
			w.dump(in[0]%numTableEvents, in[1])
		}
		in = in[2:]
	}
	w.settle()
}

// newTableWorld is the harness's cluster as conf (an input's first byte)
// sets it up, its balancers up and routing before the first event.
func newTableWorld(t *testing.T, conf byte) *tfWorld {
	w := &tfWorld{t: t, now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano(), alive: map[string]bool{}, seen: map[[2]int]tfSeen{}, cut: map[string]bool{}, unbelieved: map[[2]string]bool{}}
	w.keys = tfKeys()
	for i, k := range w.keys {
		w.hashes[i] = xxhash.Sum64String(k)
	}
	w.perShard = [4]int{1, 2, 3, 100}[conf>>1&3]
	w.cfg = configs.SessionTable{Linger: configs.Duration(tfLinger), MaxEntries: w.perShard * tableShards,
		NewKeysPerIP: 1000, NewKeysBurst: 1000, StartupWait: configs.Duration(5 * time.Second), DrainDeadline: configs.Duration(time.Hour)}
	if conf&8 != 0 {
		w.cfg.NewKeysPerIP, w.cfg.NewKeysBurst = 0.5, 2
	}
	if conf&64 != 0 {
		w.cfg.StartupWait = configs.Duration(time.Second)
	}
	for _, name := range tfBackendNames {
		w.alive[name] = true
	}
	n := 2 + int(conf&1)
	skews := [4]int64{0, int64(time.Millisecond), -int64(time.Millisecond), int64(1500 * time.Millisecond)}
	for i := range n {
		b := &tfBal{w: w, name: tfBalancerNames[i], r: ring.New(tfRingConfig), config: map[string]int{}, monitorUp: map[string]bool{}, offRoutes: map[uint16]bool{}}
		if i == 1 {
			b.skew = skews[conf>>4&3]
		}
		for _, name := range tfBackendNames[:3] {
			b.config[name] = 1
			b.monitorUp[name] = true
		}
		w.bals = append(w.bals, b)
	}
	for _, b := range w.bals {
		b.start(nil)
		b.share()
		// The cluster was up before the input begins: nobody asks.
		b.t.markReady()
		b.sy.asking = false
	}
	for _, b := range w.bals {
		b.rebuildRing()
	}
	w.observe(false)
	w.evicted = w.evictions()
	w.ignoredAtSettle = w.ignoredCounts()
	return w
}

// start gives b a new, empty table (a process starting) with the harness's
// hooks, clock and link; drains kept over the restart (cluster.state_dir)
// are restored from old.
func (b *tfBal) start(old *sessionTable) {
	w := b.w
	b.gen++
	hooks := tableHooks{
		routesFor: b.routesFor,
		known:     func(name string) bool { _, ok := b.config[name]; return ok },
		isStatic:  func(name string) bool { _, ok := b.config[name]; return ok },
		onDrain: func() {
			b.rebuildRing()
			b.noteRoutes()
			b.notePast()
		},
		drainsPast: func() map[string]bool {
			past := map[string]bool{}
			for name := range b.config {
				if b.drainPast(name) {
					past[name] = true
				}
			}
			return past
		},
		clock: b.now,
	}
	t := newSessionTable(b.name, w.cfg, b.r, tfMetrics(), slog.New(slog.DiscardHandler), hooks)
	// Its maintenance runs when the harness says (tick), not on a timer.
	t.close()
	if old != nil {
		for name, st := range old.drains.all() {
			t.restoreDrain(name, st)
		}
	}
	b.t = t
	b.b = &Balancer{metrics: tfMetrics(), table: t, tunnels: map[*tunnel]struct{}{}, access: &accessLog{}}
	b.lastRefresh = w.now
	clear(b.past)
	b.notePast()
}

// share starts b's table's gossip side on the harness's network.
func (b *tfBal) share() {
	b.sy = b.t.newSync(tfCluster{w: b.w, self: b.name}, b.w.cfg.StartupWait.D())
	b.sy.ch = &tfLink{w: b.w, from: b.name}
	b.t.sync.Store(b.sy)
}

// draining says whether name is drained here (an admin drain), and
// drainPast whether its deadline passed.
func (b *tfBal) draining(name string) bool {
	st, ok := b.t.drains.get(name)
	return ok && st.on
}

func (b *tfBal) drainPast(name string) bool {
	st, ok := b.t.drains.get(name)
	return ok && st.on && st.deadline <= b.now()
}

// routesFor is routeMembers over the harness's config: the ring, and every
// static edge of the config unless past its drain deadline.
func (b *tfBal) routesFor(snap *ring.Snapshot) []ring.Member {
	out := snap.Members()
	for _, name := range tfBackendNames {
		if _, ok := b.config[name]; !ok {
			continue
		}
		if _, on := snap.Member(name); on || b.drainPast(name) {
			continue
		}
		out = append(out, ring.Member{Name: name, URL: "http://" + name, Weight: b.config[name]})
	}
	return out
}

// tick is a round of b's table's maintenance: a drain's deadline passes.
func (b *tfBal) tick() {
	b.t.tick()
	b.noteRoutes()
	b.notePast()
}

// notePast notes the static edges past their drain deadline here, and
// whether a drain change gave one of them live keys here again (an undrain,
// a later deadline) after a record was ignored, since the last settle where
// the views agreed, for its backend taking no live keys where it came. Such a record is lost to
// that table as a message is: its balancer ignored the placement while the
// edge was past its deadline there (the drains differed), and holds none
// once the edge takes live keys again, until the placer's next refresh —
// routing the key by its ring meanwhile, as after a lost delta (documented:
// records of a backend a balancer does not route to are ignored, and the
// next refresh repairs what it missed). The check before the refreshes
// skips such a settle (seed drain-revived-after-a-placement-ignored).
func (b *tfBal) notePast() {
	if b.past == nil {
		b.past = map[string]bool{}
	}
	for name := range b.config {
		past := b.drainPast(name)
		if b.past[name] && !past && b.w.ignoredCounts()[0] > b.w.ignoredAtSettle[0] {
			b.w.regained = true
		}
		b.past[name] = past
	}
}

// noteRoutes notes the backends that take no live keys here now, for the
// next observation. A drain's state changes with each message that brings
// one, and one event (a settle, time passing) delivers many: a drain
// already past its deadline here, then a later change that ends it
// (stamped by a clock ahead), made the key's placement give way to
// another's between two observations, both of which saw its backend
// take live keys (seed drain-ended-by-a-later-stamp).
func (b *tfBal) noteRoutes() {
	rs := b.t.currentRoutes(b.r.Snapshot())
	for _, name := range tfBackendNames {
		if i, ok := b.t.names.lookup(name); ok && !routableHere(rs, i) {
			b.offRoutes[i] = true
		}
	}
}

// rebuildRing is ringMembers: the static edges its monitors see up and
// not draining.
func (b *tfBal) rebuildRing() {
	var ms []ring.Member
	for _, name := range tfBackendNames {
		wt, ok := b.config[name]
		if !ok || !b.monitorUp[name] || (b.t != nil && b.draining(name)) {
			continue
		}
		ms = append(ms, ring.Member{Name: name, URL: "http://" + name, Weight: wt})
	}
	b.r.Update(ms)
}

func (w *tfWorld) bal(arg byte) *tfBal { return w.bals[int(arg)%len(w.bals)] }

// event applies one event, then checks what holds after every event.
func (w *tfWorld) event(op, arg byte) {
	ringOnly := false
	before, routedBefore := w.entries(), w.routed()
	openBefore := w.openTunnels()
	switch op {
	case tevRequest:
		b := w.bal(arg & 3)
		w.request(b, int(arg>>2&3), arg&16 != 0, arg&32 != 0, tfClients[arg>>6&1])
	case tevComplete:
		if len(w.pending) > 0 {
			i := int(arg) % len(w.pending)
			r := w.pending[i]
			w.pending = slices.Delete(w.pending, i, i+1)
			w.complete(r)
		}
	case tevClose:
		if open := w.openList(); len(open) > 0 {
			open[int(arg)%len(open)].tun.close()
		}
	case tevBackend:
		name := tfBackendNames[arg&3]
		w.alive[name] = !w.alive[name]
		if !w.alive[name] && arg&4 != 0 {
			// Killed: its connections die, and each tunnel's relay ends it.
			for _, tt := range w.openList() {
				if tt.edge == name {
					tt.tun.close()
				}
			}
		}
		if arg&8 != 0 {
			for _, b := range w.bals {
				b.monitorUp[name] = w.alive[name]
				b.rebuildRing()
			}
		}
		ringOnly = w.alive[name] || arg&4 == 0
	case tevMonitor:
		b := w.bal(arg & 3)
		name := tfBackendNames[arg>>2&3]
		b.monitorUp[name] = !b.monitorUp[name]
		b.rebuildRing()
		ringOnly = true
	case tevReload:
		b := w.bal(arg & 3)
		name := tfBackendNames[arg>>2&3]
		if _, ok := b.config[name]; !ok && w.ignoredCounts()[1] > w.ignoredAtSettle[1] {
			// A record of the backend this balancer did not know was
			// ignored, maybe here: lost to it until the placer's next
			// refresh, as one of a backend past its drain deadline
			// (notePast; seed reload-after-a-placement-ignored).
			w.regained = true
		}
		b.config[name] = 1 + int(arg>>4&3)%3
		b.monitorUp[name] = b.monitorUp[name] || w.alive[name]
		b.t.routesGen.Add(1)
		b.rebuildRing()
		ringOnly = true
	case tevDrain:
		b := w.bal(arg & 3)
		name := tfBackendNames[arg>>2&3]
		if _, ok := b.config[name]; ok {
			deadline := [4]time.Duration{0, 3 * time.Second, 12 * time.Second, time.Hour}[arg>>5&3]
			b.t.setDrain(name, arg&16 != 0, time.Unix(0, b.now()+int64(deadline)))
		}
	case tevFlush:
		w.bal(arg).sy.flushDeltas()
	case tevRefresh:
		b := w.bal(arg)
		b.sy.sendRefresh()
	case tevDeliver:
		w.deliver(arg)
	case tevTime:
		w.advance(tableSteps[arg&7])
	case tevRestart:
		w.restart(w.bal(arg&3), arg&4 != 0)
	case tevAnswer:
		w.answer(w.bal(arg))
	case tevSettle:
		w.settle()
		return
	case tevCut:
		b := w.bal(arg)
		w.cut[b.name] = !w.cut[b.name]
	case tevJoin:
		w.join(w.bal(arg))
	}
	w.reap()
	if ringOnly {
		// Only a ring changed (a monitor, a weight, a backend added or
		// back): a live session never moves on a ring change, and a
		// backend that comes back gets none of the sessions that left it.
		// Every entry stays as it was, no tunnel closes, and every key a
		// table routed by its entry goes where it went.
		after := w.entries()
		for k, e := range before {
			if a, ok := after[k]; ok && (a.backend != e.backend || a.version != e.version || a.placedAt != e.placedAt) {
				w.fail("a ring change (event %d %d) moved %s's entry at %s from %s v%d to %s v%d", op, arg, w.keys[k[1]], w.bals[k[0]].name,
					w.bals[k[0]].t.names.name(e.backend), e.version, w.bals[k[0]].t.names.name(a.backend), a.version)
			}
		}
		for _, tt := range openBefore {
			if tt.gone {
				w.fail("a ring change (event %d %d) closed a tunnel of %s on %s", op, arg, w.keys[tt.key], tt.edge)
			}
		}
		routedAfter := w.routed()
		for k, to := range routedBefore {
			if routedAfter[k] != to {
				w.fail("a ring change (event %d %d): %s routed %s by its entry to %s, now %q", op, arg, w.bals[k[0]].name, w.keys[k[1]], to, routedAfter[k])
			}
		}
	}
	w.observe(true)
}

// request is a client's request of key k at b: the table looked up, the
// backend it names (else the key's ring owner) dialed, the next candidate
// when it does not answer, and the answer recorded — now or later.
func (w *tfWorld) request(b *tfBal, k int, tunnel, later bool, client netip.Addr) {
	if !b.t.routable() {
		return // it waits for the table (waitRoutable)
	}
	snap := b.r.Snapshot()
	key := []byte(w.keys[k])
	target, basis, inTable := b.t.lookup(w.hashes[k], snap)
	if !inTable {
		owner, ok := snap.Locate(key)
		if !ok {
			return // 503: no edge on the ring
		}
		target = owner
	}
	edge, ok := w.dial(snap, key, target)
	if !ok {
		return // 502
	}
	r := tfRequest{bal: b, gen: b.gen, key: k, edge: edge, basis: basis, tunnel: tunnel, client: client}
	if later {
		w.pending = append(w.pending, r)
		return
	}
	w.complete(r)
}

// dial is forward's order without suspects: the target, then on a failed
// dial its owner on the ring without it, else the next candidate not
// tried, at most maxDialAttempts dials.
func (w *tfWorld) dial(snap *ring.Snapshot, key []byte, target ring.Member) (string, bool) {
	var tried []string
	for range maxDialAttempts {
		if w.alive[target.Name] {
			return target.Name, true
		}
		tried = append(tried, target.Name)
		next, ok := snap.Without(target.Name).Locate(key)
		if !ok || slices.Contains(tried, next.Name) {
			ok = false
			for _, c := range snap.Candidates(key, nil) {
				if !slices.Contains(tried, c.Name) {
					next, ok = c, true
					break
				}
			}
		}
		if !ok {
			return "", false
		}
		target = next
	}
	return "", false
}

// complete records a request's answer, as serveHTTP and serveUpgrade do: a
// tunnel registered first, closed when another placement won meanwhile.
func (w *tfWorld) complete(r tfRequest) {
	b := r.bal
	if b.gen != r.gen {
		return // the process that looked it up is gone
	}
	var tun *tunnel
	if r.tunnel {
		tun = &tunnel{b: b.b, edge: r.edge, key: w.keys[r.key]}
		if !b.b.registerTunnel(tun) {
			w.fail("tunnel not registered")
		}
	}
	res := b.t.record(w.hashes[r.key], r.edge, r.basis, r.client, tun)
	if tun == nil {
		return
	}
	tt := &tfTunnel{bal: b, gen: b.gen, key: r.key, edge: r.edge, tun: tun, tracked: res == recorded}
	w.tunnels = append(w.tunnels, tt)
	if res == recordStale {
		tun.close()
	}
}

// tunnelClosed says whether tun was closed.
func tunnelClosed(tun *tunnel) bool {
	tun.mu.Lock()
	defer tun.mu.Unlock()
	return tun.closed
}

// reap marks the tunnels that closed (their clients', the table's doing).
func (w *tfWorld) reap() {
	for _, tt := range w.tunnels {
		if !tt.gone && tunnelClosed(tt.tun) {
			tt.gone = true
		}
	}
	w.tunnels = slices.DeleteFunc(w.tunnels, func(tt *tfTunnel) bool { return tt.gone })
}

func (w *tfWorld) openList() []*tfTunnel {
	w.reap()
	return slices.Clone(w.tunnels)
}

// openTunnels are the open tunnels, for an event's before and after.
func (w *tfWorld) openTunnels() []*tfTunnel { return w.openList() }

// deliver hands a message in flight to its balancer: the oldest, one
// further on (reordered), or drops or duplicates a packet.
func (w *tfWorld) deliver(arg byte) {
	if len(w.net) == 0 {
		return
	}
	i := int(arg>>2) % len(w.net)
	m := w.net[i]
	switch arg & 3 {
	case 0, 1:
		w.net = slices.Delete(w.net, i, i+1)
		w.receive(m)
	case 2: // lost (a stream is not: it arrives)
		w.net = slices.Delete(w.net, i, i+1)
		if m.stream {
			w.receive(m)
		} else {
			w.lost = true
		}
	case 3: // twice (a packet); a stream arrives once
		if m.stream {
			w.net = slices.Delete(w.net, i, i+1)
		}
		w.receive(m)
	}
}

func (w *tfWorld) receive(m tfMsg) {
	if w.cut[m.from] || w.cut[m.to] {
		w.lost = true
		return // cut off: lost
	}
	for _, b := range w.bals {
		if b.name == m.to {
			b.sy.receive(m.from, m.payload)
		}
	}
}

// deliverAll flushes every balancer's deltas and delivers every message
// in flight, in order, and the answers they bring about, until none is
// left.
func (w *tfWorld) deliverAll() {
	for range 100 {
		for _, b := range w.bals {
			b.sy.flushDeltas()
			w.answer(b)
		}
		if len(w.net) == 0 {
			return
		}
		for len(w.net) > 0 {
			m := w.net[0]
			w.net = w.net[1:]
			w.receive(m)
		}
	}
	w.fail("messages never end")
}

// answer sends the table to the balancers that asked b for it, and the
// tells its sync wants sent now (runStreams).
func (w *tfWorld) answer(b *tfBal) {
	for {
		select {
		case job := <-b.sy.answers:
			b.sy.answer(job)
		case <-b.sy.refresh:
			b.sy.sendTells()
		default:
			return
		}
	}
}

// advance moves the clock by d, a second at most at a time, doing at each
// what the tables' loops do on their timers: deltas flushed (their window
// is 5 ms), packets older than a second lost, asks answered and streams
// delivered (memberlist's TCP), maintenance, a starting balancer's check,
// and each balancer's refresh every linger/2.
func (w *tfWorld) advance(d time.Duration) {
	for d > 0 {
		s := min(d, time.Second)
		d -= s
		w.now += int64(s)
		for _, b := range w.bals {
			b.sy.flushDeltas()
		}
		w.net = slices.DeleteFunc(w.net, func(m tfMsg) bool {
			late := !m.stream && m.sent < w.now-int64(time.Second)
			w.lost = w.lost || late
			return late
		})
		for _, b := range w.bals {
			b.tick()
			b.sy.checkAsks()
			if w.now-b.lastRefresh >= int64(refreshInterval(tfLinger)) {
				b.lastRefresh = w.now
				b.sy.sendRefresh()
			}
			w.answer(b)
		}
		w.deliverStreams()
	}
}

// deliverStreams delivers every stream in flight, in order, and what they
// bring about.
func (w *tfWorld) deliverStreams() {
	for range 100 {
		i := slices.IndexFunc(w.net, func(m tfMsg) bool { return m.stream })
		if i < 0 {
			return
		}
		m := w.net[i]
		w.net = slices.Delete(w.net, i, i+1)
		w.receive(m)
		for _, b := range w.bals {
			w.answer(b)
		}
	}
	w.fail("streams never end")
}

// restart replaces b's process: empty (its tunnels die with it; it asks
// the others for the table), or by an upgrade that hands its table and
// tunnels to the new one, which serves at once — unless the old one still
// waited for the others' table: then it waits for it too — and joins
// gossip later (join). A process still joining joins first.
func (w *tfWorld) restart(b *tfBal, upgrade bool) {
	w.join(b)
	old := b.t
	var moving []*tfTunnel
	for _, tt := range w.openList() {
		if tt.bal == b {
			tt.gone = true // the old process's (ends with it, or moves)
			moving = append(moving, tt)
		}
	}
	if upgrade {
		b.sy.flushDeltas() // its last deltas go before it leaves
	}
	w.pending = slices.DeleteFunc(w.pending, func(r tfRequest) bool { return r.bal == b })
	b.start(old)
	if !upgrade {
		b.share()
		b.sy.checkAsks()
		return
	}
	// The upgrade (handoff.go): the table first, then each tunnel, saying
	// whether the old table counted it (movedCounted).
	b.t.beginInherit(old.routable())
	for _, body := range old.bodies(handoff.MaxFrame) {
		if _, err := b.t.inherit(body.bytes()); err != nil {
			w.fail("inherit: %v", err)
		}
	}
	for _, tt := range moving {
		tun := &tunnel{b: b.b, edge: tt.edge, key: w.keys[tt.key], started: true}
		b.b.registerTunnel(tun)
		b.t.attach(w.hashes[tt.key], tt.edge, tun, tt.tracked)
		b.t.tunnelMu.Lock()
		_, tracked := b.t.tunnelKeys[tun]
		b.t.tunnelMu.Unlock()
		w.tunnels = append(w.tunnels, &tfTunnel{bal: b, gen: b.gen, key: tt.key, edge: tt.edge, tun: tun, tracked: tracked})
	}
	b.t.endInherit()
	b.joining = true
}

// join ends an upgrade of b: the replaced process has left gossip, its
// table with it, and the new one joins — its round of asks begins (as
// runPackets begins it).
func (w *tfWorld) join(b *tfBal) {
	if !b.joining {
		return
	}
	b.joining = false
	b.share()
	b.sy.checkAsks()
}

// settle brings the cluster to a quiescent point — every delta flushed,
// every ask answered, every message delivered, every balancer's refresh
// sent and delivered, maintenance run — and checks that no session is
// split.
func (w *tfWorld) settle() {
	clear(w.cut) // the network heals
	for _, b := range w.bals {
		w.join(b)
	}
	w.deliverAll()
	evicted := w.evictions()
	if !w.lost && evicted == w.evicted && !w.regained {
		// Nothing lost: what every balancer sent as it happened, and the
		// asks and answers of those that started or joined, are enough
		// (with a maintenance round: a drain's deadline closes tunnels).
		// An entry evicted for room is lost as a message is: a full
		// shard (max_entries of 1 or 2 a shard) evicts a key's entry open
		// nowhere as far as its table knows — a move made there, say —
		// for another key's delta, and the key comes back with a peer's
		// older placement, its version put right by the next refresh of a
		// balancer with a tunnel of it (seed evicted-move-comes-back-older).
		// So is a record ignored for its backend past its drain deadline
		// where it came, once a drain change gives that backend live keys
		// there again (notePast), or for its backend not in the config
		// there, once a reload adds it.
		for _, b := range w.bals {
			b.tick()
		}
		w.reap()
		w.observe(true)
		w.checkQuiescent()
	}
	for _, b := range w.bals {
		b.sy.sendRefresh()
	}
	w.deliverAll()
	for _, b := range w.bals {
		b.tick()
	}
	w.reap()
	w.observe(true)
	w.checkQuiescent()
	w.lost, w.evicted = false, w.evictions()
	w.regained = false
	if w.viewsAgree() {
		// Else a record ignored where its backend took no live keys is
		// still missed there, until the views agree and a refresh comes.
		w.ignoredAtSettle = w.ignoredCounts()
	}
}

// viewsAgree says whether every balancer routes to the same backends.
func (w *tfWorld) viewsAgree() bool {
	for _, b := range w.bals[1:] {
		if !sameViews(w.bals[0], b) {
			return false
		}
	}
	return true
}

// ignoredCounts count the records ignored because their backend took no
// live keys where they came, all tables together: past its drain deadline
// (ignored{backend_down}), not in the config (ignored{unknown_backend}).
func (w *tfWorld) ignoredCounts() (n [2]float64) {
	for i, reason := range [2]string{ignoredDown, ignoredUnknown} {
		var m dto.Metric
		if err := tfMetrics().tableIgnored.WithLabelValues(reason).Write(&m); err != nil {
			w.t.Fatal(err)
		}
		n[i] = m.GetCounter().GetValue()
	}
	return n
}

// evictions counts the entries evicted for room, all tables together (the
// fuzz's tables share one set of metrics, and one input runs at a time).
func (w *tfWorld) evictions() float64 {
	var m dto.Metric
	if err := tfMetrics().tableEvictions.WithLabelValues(evictCapacity).Write(&m); err != nil {
		w.t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// checkQuiescent is the property the table is for: a session never splits.
// Between balancers with the same backends and drains (their configs and
// the states shared), once every message sent has been delivered: every
// tunnel of a key is on one backend, every balancer that routes sends the
// key there (a balancer whose shard of the key is full routes it by the
// ring without an entry: documented), and their entries agree.
func (w *tfWorld) checkQuiescent() {
	if !w.viewsAgree() {
		return // a reload or drain not shared: views differ
	}
	for k := range w.keys {
		var on string
		for _, tt := range w.tunnels {
			if tt.key != k || !tt.tracked {
				continue // a tunnel the table refused (no room, budget) is routed by the ring alone
			}
			if on == "" {
				on = tt.edge
			} else if tt.edge != on {
				w.fail("%s is split: tunnels on %s and %s", w.keys[k], on, tt.edge)
			}
		}
		if on == "" {
			continue
		}
		var agreed *tfBal
		for _, b := range w.bals {
			if !b.t.routable() {
				continue
			}
			snap := b.r.Snapshot()
			target, _, inTable := b.t.lookup(w.hashes[k], snap)
			e, ok := b.entry(w.hashes[k])
			if !inTable {
				// No backend on its ring: it answers 503 (target "").
				target, _ = snap.Locate([]byte(w.keys[k]))
			}
			if !ok && b.shardFull(w.hashes[k]) {
				continue
			}
			if target.Name != on && target.Name != "" {
				w.fail("%s has tunnels on %s, but %s routes it to %s (entry %+v %v)", w.keys[k], on, b.name, target.Name, e, ok)
			}
			if !ok {
				continue
			}
			if agreed != nil {
				a, _ := agreed.entry(w.hashes[k])
				if agreed.t.names.name(a.backend) != b.t.names.name(e.backend) || a.version != e.version {
					w.fail("%s: %s's entry is %s v%d, %s's %s v%d", w.keys[k], agreed.name, agreed.t.names.name(a.backend), a.version,
						b.name, b.t.names.name(e.backend), e.version)
				}
			}
			agreed = b
		}
	}
}

// sameViews says whether a and b route to the same backends: one config,
// one drain state.
func sameViews(a, b *tfBal) bool {
	if len(a.config) != len(b.config) {
		return false
	}
	for name := range a.config {
		if _, ok := b.config[name]; !ok || a.draining(name) != b.draining(name) || a.drainPast(name) != b.drainPast(name) {
			return false
		}
	}
	return true
}

func (b *tfBal) entry(h uint64) (entry, bool) {
	s := b.t.shard(h)
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.entries[h]
	return e, ok
}

func (b *tfBal) shardFull(h uint64) bool {
	s := b.t.shard(h)
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.entries) >= b.w.perShard
}

// entries are every balancer's entries of the fuzz's keys, by (balancer,
// key).
func (w *tfWorld) entries() map[[2]int]entry {
	out := map[[2]int]entry{}
	for i, b := range w.bals {
		for k, h := range w.hashes {
			if e, ok := b.entry(h); ok {
				out[[2]int{i, k}] = e
			}
		}
	}
	return out
}

// routed are where every balancer's table sends the fuzz's keys, by
// (balancer, key): the keys it has a live entry of on a backend that takes
// live keys.
func (w *tfWorld) routed() map[[2]int]string {
	out := map[[2]int]string{}
	for i, b := range w.bals {
		for k, h := range w.hashes {
			if target, _, ok := b.t.lookup(h, b.r.Snapshot()); ok {
				out[[2]int{i, k}] = target.Name
			}
		}
	}
	return out
}

// observe checks what holds after every event, and keeps the entries seen
// for the next.
func (w *tfWorld) observe(check bool) {
	for i, b := range w.bals {
		now := b.now()
		// Bounded: a shard holds at most its share of max_entries.
		for si := range b.t.shards {
			s := &b.t.shards[si]
			s.mu.Lock()
			n := len(s.entries)
			for h, list := range s.tunnels {
				e, ok := s.entries[h]
				// Counts: this balancer's tunnels of a key are its entry's
				// open count, never negative, never without an entry.
				if !ok || int(e.open) != len(list) {
					s.mu.Unlock()
					w.fail("%s: %d tunnels of a key held, entry %+v %v", b.name, len(list), e, ok)
					return
				}
			}
			for _, e := range s.entries {
				if e.open < 0 {
					s.mu.Unlock()
					w.fail("%s: entry with open %d", b.name, e.open)
					return
				}
			}
			s.mu.Unlock()
			if n > w.perShard {
				w.fail("%s: a shard holds %d entries, max_entries allows %d", b.name, n, w.perShard)
			}
		}
		for k, h := range w.hashes {
			e, ok := b.entry(h)
			open := 0
			for _, tt := range w.tunnels {
				if tt.bal == b && tt.key == k && tt.tracked {
					open++
					// A tunnel open here on a backend that takes live
					// keys here is where this balancer routes its key,
					// whatever the ring says.
					snap := b.r.Snapshot()
					bi, _ := b.t.names.lookup(tt.edge)
					if _, routable := b.t.currentRoutes(snap).routable(bi); routable {
						if target, _, in := b.t.lookup(h, snap); !in || target.Name != tt.edge {
							w.fail("%s has a tunnel of %s open on %s but routes it to %s (%v)", b.name, w.keys[k], tt.edge, target.Name, in)
						}
					}
				}
			}
			if open > 0 && (!ok || int(e.open) != open) {
				w.fail("%s: %d tunnels of %s open, entry %+v %v", b.name, open, w.keys[k], e, ok)
			}
			prev := w.seen[[2]int{i, k}]
			if check && prev.ok && prev.gen == b.gen {
				p := prev.e
				// An entry announced open elsewhere is not evicted for
				// room (nor expires); one with a tunnel open here neither
				// (above: its tunnels are its entry's). One on a backend
				// that takes no live keys here now (past its drain
				// deadline) is no placement: a record of it leaves a
				// tomb, which room may take (keepTomb).
				if _, routable := b.t.currentRoutes(b.r.Snapshot()).routable(p.backend); !ok && p.openUntil > now && routable {
					w.fail("%s: %s's entry, open elsewhere until %d, was evicted", b.name, w.keys[k], p.openUntil)
				}
				// Placements only move forward: while an entry is live,
				// what replaces its placement wins over it by the rule
				// every balancer applies (a higher version, else the
				// earlier placement, else the lower backend name; one on
				// a backend that takes no live keys here gives way to any
				// other). An
				// entry open nowhere may be evicted for room and the key
				// entered again as it comes (documented): only one that
				// cannot be, or in a shard that never fills (the fuzz's
				// keys share one shard three at a time), is held to it.
				live := p.open > 0 || p.until > now
				evictable := p.open == 0 && p.openUntil <= now && w.perShard < 3
				if ok && live && !evictable && (e.backend != p.backend || e.version != p.version || e.placedAt != p.placedAt) {
					forward := false
					_, routable := b.t.currentRoutes(b.r.Snapshot()).routable(p.backend)
					switch {
					case !routable || !prev.routable || b.offRoutes[p.backend]:
						// No placement to lookup (now, at the last
						// observation, or between): it gives way to
						// one on a backend that takes live keys.
						forward = true
					case e.version != p.version:
						forward = e.version > p.version
					case e.backend == p.backend:
						forward = e.placedAt < p.placedAt
					default:
						forward = wins(e, p, &b.t.names)
					}
					if !forward {
						w.fail("%s: %s's live placement went back from %s v%d at %d to %s v%d at %d", b.name, w.keys[k],
							b.t.names.name(p.backend), p.version, p.placedAt, b.t.names.name(e.backend), e.version, e.placedAt)
					}
				}
			}
			_, routable := b.t.currentRoutes(b.r.Snapshot()).routable(e.backend)
			w.seen[[2]int{i, k}] = tfSeen{e: e, ok: ok, gen: b.gen, routable: routable}
		}
		clear(b.offRoutes)
	}
}

func (w *tfWorld) fail(format string, args ...any) {
	w.t.Helper()
	w.t.Fatalf("step %d: "+format, append([]any{w.step}, args...)...)
}
