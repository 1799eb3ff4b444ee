package gslb

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health"
)

// FuzzPoolEvents drives the pools of two or three gslb nodes of one domain
// (their real code: newPools, setOverride, recover, inherit, saved and
// restore, the agreement's exchange round exchangeOnce and its vote agreed,
// setLoads) through an order of events the input chooses, and after each
// checks what gslb/README.md promises against a model of its own.
//
// Monitors are not run: a member's probe result is fed as the prober's
// goroutine would leave it (Seed, then memberChanged on a transition, as a
// prober calls onChange only then, and the pools rebuild when checks first
// confirm the state it started with, as OnSettled's hook is called). Peers are read through the real
// exchangeOnce over an http.Client whose transport answers each node's GET
// /api/monitors with that node's own localMonitors (or 503 while it
// fails), so the round's selection of peers, its stale count and what a
// report keeps are the real ones. Strangers sit in every membership — an
// edge announcing an admin address, a gslb node announcing none, a node
// under the reader's own name — and each would report every member down.
// Time does not pass: rounds are events.
//
// The input is a byte of setup (nodes, the first config), then two bytes
// an event (what, then whom and how).
//
// Not reached: the probes' network checks and timers, the HTTP admin
// handlers (setOverride and recover are called as they call them), the
// saving to disk (saved and restore are called as a restart would),
// signed peer answers, peers' loads for regions this node does not see, the
// answer path itself (the view it reads is checked), metrics.
func FuzzPoolEvents(f *testing.F) {
	f.Fuzz(func(t *testing.T, in []byte) {
		runPoolEvents(t, in)
	})
}

const (
	pfProbe    = iota // node's probe of a member: up, down or confirmed as it is
	pfOverride        // operator's serve mode on node for a member (or cleared)
	pfRecover         // operator's recover of a region on node
	pfRound           // every live node runs one exchange round
	pfFail            // node's /api/monitors fails (or answers again)
	pfJoin            // node leaves the gossip (or joins again)
	pfReload          // every node reloads to a config variant
	pfRestart         // node restarts: saved, new pools, restore
	pfLoad            // east's edges announce a load
	pfEvents
)

const pfName = "ide.ringlb.test."

// pfVariant is one config of the reloads: bit 0 east has a second member
// (IPv6), bit 1 region south exists, bit 2 auto_recover false, bit 3
// all_down servfail, bit 4 east steers, bit 5 west's IPv6 member is serve
// mode no, bit 6 east's third member is serve mode always.
func pfVariant(v byte) string {
	east := `{ name: e1, address: 192.0.2.1 }`
	if v&1 != 0 {
		east += `, { name: e2, address: "2001:db8::1" }`
	}
	if v&64 != 0 {
		east += `, { name: e3, address: 192.0.2.3, serve_mode: always }`
	}
	eastFail := "[west]"
	south := ""
	if v&2 != 0 {
		eastFail = "[west, south]"
		south = "        south: { monitor: bal, failover: [west], members: [ { name: s1, address: 192.0.2.4 } ] }\n"
	}
	steer := ""
	if v&16 != 0 {
		steer = ", steer: { sessions_per_edge: 100, share: 0.5, hysteresis: 0.2 }"
	}
	w2 := "obey"
	if v&32 != 0 {
		w2 = "no"
	}
	return fmt.Sprintf(`gslb:
  listen: 127.0.0.1:0
  zones: [ { origin: ringlb.test, file: testdata/ringlb.test.zone } ]
  monitors:
    bal: { type: tcp, port: 8080, interval: 1s, timeout: 1s, rise: 2, fall: 2 }
  names:
    - name: ide.ringlb.test
      ttl: 30
      failover_ttl: 5
      default_region: east
      auto_recover: %v
      all_down: %s
      regions:
        east: { monitor: bal, failover: %s%s, members: [ %s ] }
        west: { monitor: bal, failover: [east], members: [ { name: w1, address: 192.0.2.2 }, { name: w2, address: "2001:db8::2", serve_mode: %s } ] }
%s`, v&4 == 0, map[bool]string{true: "servfail", false: "serve_all"}[v&8 != 0], eastFail, steer, east, w2, south)
}

var (
	pfConfigsMu sync.Mutex
	pfConfigs   = map[byte]configs.GSLB{}
)

func pfConfig(t testing.TB, v byte) configs.GSLB {
	v &= 127
	pfConfigsMu.Lock()
	defer pfConfigsMu.Unlock()
	if c, ok := pfConfigs[v]; ok {
		return c
	}
	c := parseGSLBYAML(t, pfVariant(v))
	pfConfigs[v] = c
	return c
}

// pfProbeState is what the model holds of one node's prober of a member.
type pfProbeState struct{ up, settled bool }

// pfReport is what the model holds of one peer's report on a node.
type pfReport struct {
	members map[string]bool
	missed  int
}

type pfNode struct {
	name   string
	s      *Server
	joined bool // in the gossip membership of the others
	fails  bool // its /api/monitors answers 503

	// The model.
	probes    map[string]pfProbeState // by memberKey.String(), of members with a prober
	overrides map[memberKey]string
	latched   map[latchKey]bool
	reports   map[string]pfReport
	steering  map[regionKey]bool
}

type pfHarness struct {
	t       *testing.T
	cfg     configs.GSLB
	variant byte
	nodes   []*pfNode
	load    int // east's edges' sessions each
	client  *http.Client
	// clean: the last event was a round in which every live node heard
	// every other joined one, and no probe changed since.
	clean bool
}

// pfTransport answers GET /api/monitors of the fuzz nodes (host = name).
type pfTransport struct{ h *pfHarness }

func (tr pfTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	status, body := http.StatusOK, []byte(nil)
	var n *pfNode
	for _, x := range tr.h.nodes {
		if x.name == r.URL.Host {
			n = x
		}
	}
	switch {
	case n == nil: // a stranger: it says every member is down
		members := map[string]bool{}
		probed, _ := tr.h.nodes[0].s.state.Load().pools.known()
		for k := range probed {
			members[k] = false
		}
		body, _ = json.Marshal(map[string]any{"members": members})
	case n.fails:
		status = http.StatusServiceUnavailable
	default:
		members := n.s.state.Load().pools.localMonitors()
		members[pfName+"east/ghost"] = false // a member nobody here probes
		body, _ = json.Marshal(map[string]any{"node": n.name, "members": members})
	}
	return &http.Response{StatusCode: status, Body: io.NopCloser(bytes.NewReader(body)), Header: http.Header{}, Request: r}, nil
}

// pfPeers is one node's gossip membership.
type pfPeers struct {
	h    *pfHarness
	self string
}

func (pp pfPeers) Keyring() *health.Keyring { return nil }

func (pp pfPeers) Members() []health.Node {
	var out []health.Node
	for _, n := range pp.h.nodes {
		if n.joined || n.name == pp.self {
			out = append(out, health.Node{Name: n.name, Meta: health.Meta{Role: health.RoleGSLB, Admin: "http://" + n.name, State: health.StateAlive}})
		}
	}
	out = append(out,
		health.Node{Name: "edge-x", Meta: health.Meta{Role: health.RoleEdge, Region: "west", Admin: "http://edge-x", State: health.StateAlive}},
		health.Node{Name: "gslb-quiet", Meta: health.Meta{Role: health.RoleGSLB, State: health.StateAlive}},
		health.Node{Name: pp.self, Meta: health.Meta{Role: health.RoleGSLB, Admin: "http://self-twin", State: health.StateAlive}},
	)
	for i := range 2 {
		out = append(out, health.Node{Name: fmt.Sprintf("edge-east-%d", i), Meta: health.Meta{Role: health.RoleEdge, Region: "east", State: health.StateAlive, Load: &health.Load{Sessions: pp.h.load}}})
	}
	return out
}

// newNodeServer builds a node's Server around fresh pools of cfg, without
// sockets or monitors running: what agreed and exchangeOnce read.
func (h *pfHarness) newNodeServer(name string) *Server {
	logger := slog.New(slog.DiscardHandler)
	p, err := newPools(h.cfg, logger, nil)
	if err != nil {
		h.t.Fatal(err)
	}
	s := &Server{name: name, logger: logger}
	p.agree = s.agreed
	s.state.Store(&state{cfg: h.cfg, pools: p})
	return s
}

func runPoolEvents(t *testing.T, in []byte) {
	if len(in) == 0 {
		return
	}
	h := &pfHarness{t: t, variant: in[0] & 127}
	h.cfg = pfConfig(t, h.variant)
	h.client = &http.Client{Transport: pfTransport{h}}
	nn := 2 + int(in[0]>>7)
	for i := range nn {
		n := &pfNode{name: fmt.Sprintf("gslb-%c", 'a'+i), joined: true,
			overrides: map[memberKey]string{}, latched: map[latchKey]bool{}, reports: map[string]pfReport{}, steering: map[regionKey]bool{}}
		n.s = h.newNodeServer(n.name)
		n.probes = h.freshProbes(n, nil)
		h.nodes = append(h.nodes, n)
	}
	for _, n := range h.nodes {
		h.modelLatches(n)
		h.check(n, "setup")
	}
	in = in[1:]
	for i := 0; i+1 < len(in); i += 2 {
		op, arg := in[i]%pfEvents, in[i+1]
		n := h.nodes[int(arg&3)%len(h.nodes)]
		what := h.event(op, arg, n)
		for _, x := range h.nodes {
			h.check(x, fmt.Sprintf("event %d (%s)", i/2, what))
		}
		if h.clean {
			h.checkAgreement(fmt.Sprintf("event %d (%s)", i/2, what))
		}
	}
}

// members lists the configured members of the pools in order.
func (p *pools) fuzzMembers() []*member {
	var out []*member
	for _, n := range p.names {
		for _, rname := range n.order {
			out = append(out, n.regions[rname].members...)
		}
	}
	return out
}

// freshProbes is a node's probe states after a (re)build: a member still
// probed at the same target keeps what old held of it if settled (inherit),
// any other starts up, unsettled.
func (h *pfHarness) freshProbes(n *pfNode, old map[string]pfProbeState) map[string]pfProbeState {
	out := map[string]pfProbeState{}
	for _, m := range n.s.state.Load().pools.fuzzMembers() {
		if m.prober == nil {
			continue
		}
		k := m.key.String()
		if o, ok := old[k]; ok && o.settled {
			out[k] = o
		} else {
			out[k] = pfProbeState{up: true}
		}
	}
	return out
}

func (h *pfHarness) event(op, arg byte, n *pfNode) string {
	p := n.s.state.Load().pools
	ms := p.fuzzMembers()
	switch op {
	case pfProbe:
		m := ms[int(arg>>2&7)%len(ms)]
		if m.prober == nil {
			return "probe of an unmonitored member"
		}
		k := m.key.String()
		was := n.probes[k]
		up := was.up
		switch (arg >> 5) % 3 {
		case 0:
			up = true
		case 1:
			up = false
		} // 2: checks confirm the state it has
		m.prober.Seed(up, map[bool]string{true: "check passed", false: "connection refused"}[up])
		n.probes[k] = pfProbeState{up: up, settled: true}
		switch {
		case up != was.up: // a transition: onChange
			p.memberChanged(m.key, up, "")
		case !was.settled: // its start state confirmed: OnSettled
			p.rebuild()
		}
		h.modelLatches(n)
		h.clean = false
		return fmt.Sprintf("%s probes %s: up %v (was %v, settled %v)", n.name, k, up, was.up, was.settled)
	case pfOverride:
		m := ms[int(arg>>2&7)%len(ms)]
		mode := []string{"", configs.ServeAlways, configs.ServeObey, configs.ServeRemove, configs.ServeNo}[int(arg>>5)%5]
		err := p.setOverride(m.key.name, m.key.region, m.key.member, mode)
		switch {
		case mode == configs.ServeObey && m.prober == nil:
			// Nothing to obey: refused, nothing changed.
			if err == nil {
				h.t.Fatalf("%s: obey set on %s, which no monitor checks", n.name, m.key)
			}
			return fmt.Sprintf("%s sets %s to obey: refused (no monitor)", n.name, m.key)
		case err != nil:
			h.t.Fatalf("setOverride: %v", err)
		}
		if mode == "" {
			delete(n.overrides, m.key)
		} else {
			n.overrides[m.key] = mode
		}
		h.modelLatches(n)
		return fmt.Sprintf("%s sets %s to %q", n.name, m.key, mode)
	case pfRecover:
		nm := p.names[pfName]
		r := nm.order[int(arg>>2)%len(nm.order)]
		if err := p.recover(pfName, r); err != nil {
			h.t.Fatalf("recover: %v", err)
		}
		delete(n.latched, latchKey{regionKey{pfName, r}, ipv4})
		delete(n.latched, latchKey{regionKey{pfName, r}, ipv6})
		h.modelLatches(n)
		return fmt.Sprintf("%s recovers %s", n.name, r)
	case pfRound:
		h.round()
		return "round"
	case pfFail:
		n.fails = !n.fails
		h.clean = false
		return fmt.Sprintf("%s fails %v", n.name, n.fails)
	case pfJoin:
		n.joined = !n.joined
		h.clean = false
		return fmt.Sprintf("%s joined %v", n.name, n.joined)
	case pfReload:
		h.reload(arg >> 1)
		return fmt.Sprintf("reload to variant %d", arg>>1&127)
	case pfRestart:
		h.restart(n)
		return fmt.Sprintf("%s restarts", n.name)
	case pfLoad:
		h.load = []int{0, 50, 79, 80, 99, 100, 150, 10_000}[int(arg>>2)%8]
		return fmt.Sprintf("east's load %d", h.load)
	}
	return "?"
}

// round runs one exchange round on every node, in order, and the model's.
func (h *pfHarness) round() {
	clean := true
	for _, n := range h.nodes {
		// The model: what this node's round hears, from the model's probes.
		next := map[string]pfReport{}
		for _, o := range h.nodes {
			if o == n || !o.joined {
				continue
			}
			prev, known := n.reports[o.name]
			switch {
			case !o.fails:
				members := map[string]bool{}
				for k, ps := range o.probes {
					if _, probed := n.probes[k]; probed && ps.settled {
						members[k] = ps.up
					}
				}
				next[o.name] = pfReport{members: members}
			case known && prev.missed+1 < peerStaleRounds:
				prev.missed++
				next[o.name] = prev
				clean = false
			default:
				clean = false
			}
		}
		n.reports = next
		n.s.exchangeOnce(context.Background(), h.client, pfPeers{h, n.name}, time.Second)
		h.modelLatches(n)
		h.modelSteering(n)
	}
	h.clean = clean
}

func (h *pfHarness) reload(v byte) {
	h.variant = v & 127
	h.cfg = pfConfig(h.t, h.variant)
	for _, n := range h.nodes {
		before := servableByMember(n.s.state.Load().pools)
		old := n.s.state.Load()
		s := h.newNodeServer(n.name)
		st := s.state.Load()
		st.pools.agree = n.s.agreed
		st.pools.inherit(old.pools)
		n.s.state.Store(st)
		// The model: probes of members still there kept, latches of
		// regions still there, overrides as they were (inherit's comment:
		// of members still there; an obey only where a monitor still runs,
		// overrideFits), steering where the region still steers.
		n.probes = h.freshProbes(n, n.probes)
		nm := st.pools.names[pfName]
		for k := range n.latched {
			if r := nm.regions[k.region]; r == nil || !pfHas(r, k.family) {
				delete(n.latched, k)
			}
		}
		for k, mode := range n.overrides {
			r := nm.regions[k.region]
			i := -1
			if r != nil {
				i = slices.IndexFunc(r.members, func(m *member) bool { return m.cfg.Name == k.member })
			}
			if i < 0 || mode == configs.ServeObey && r.members[i].prober == nil {
				delete(n.overrides, k)
			}
		}
		for k := range n.steering {
			if r := nm.regions[k.region]; r == nil || r.cfg.Steer == nil {
				delete(n.steering, k)
			}
		}
		h.modelLatches(n)
		// A reload changes nothing for members still configured (no
		// flap): each keeps being served or left out as before, unless
		// its serve mode in the config changed.
		after := servableByMember(st.pools)
		for k, a := range after {
			if b, ok := before[k]; ok && b.mode == a.mode && b.serving != a.serving {
				h.t.Fatalf("reload to variant %d: %s on %s: serving %v before, %v after (no flap)", h.variant, k, n.name, b.serving, a.serving)
			}
		}
	}
	h.clean = false
}

type pfServing struct {
	mode    string
	serving bool
}

func servableByMember(p *pools) map[memberKey]pfServing {
	out := map[memberKey]pfServing{}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, m := range p.fuzzMembers() {
		ok, _ := p.servable(m)
		out[m.key] = pfServing{m.cfg.ServeMode, ok}
	}
	return out
}

func (h *pfHarness) restart(n *pfNode) {
	overrides, latches := n.s.state.Load().pools.saved()
	n.s = h.newNodeServer(n.name)
	skipped := n.s.state.Load().pools.restore(overrides, latches)
	if len(skipped) != 0 {
		h.t.Fatalf("restart of %s skipped %v of its own pools", n.name, skipped)
	}
	// A restart restores overrides and latches; probes start afresh, no
	// peer is heard yet, no steering.
	n.probes = h.freshProbes(n, nil)
	n.reports = map[string]pfReport{}
	n.steering = map[regionKey]bool{}
	h.modelLatches(n)
	// A restart restores overrides and latches (the latches then as the
	// rule leaves them: one of a region serving again clears with
	// auto_recover; check compares them with the model's).
	o2, _ := n.s.state.Load().pools.saved()
	if !slices.Equal(o2, overrides) {
		h.t.Fatalf("restart of %s: overrides %v restored as %v", n.name, overrides, o2)
	}
	for _, l := range latches {
		if f := slices.Index(familyNames[:], l.Family); !n.latched[latchKey{regionKey{l.Name, l.Region}, f}] && !(*h.cfg.Names[0].AutoRecover) {
			h.t.Fatalf("restart of %s: latch of %s's %s lost without auto_recover", n.name, l.Region, l.Family)
		}
	}
	h.clean = false
}

// vote is the model's agreed state of member k on n: down when more than
// half of the nodes probing it that n hears (and n itself once settled)
// see it down; a tie keeps it up.
func (h *pfHarness) vote(n *pfNode, k string) bool {
	local := n.probes[k]
	if len(n.reports) == 0 {
		return local.up
	}
	total, down := 0, 0
	if local.settled {
		total++
		if !local.up {
			down++
		}
	}
	for _, r := range n.reports {
		if up, ok := r.members[k]; ok {
			total++
			if !up {
				down++
			}
		}
	}
	if total == 0 || local.settled && total == 1 {
		return local.up
	}
	return down*2 <= total
}

// serves is the model's word on whether n answers member m.
func (h *pfHarness) serves(n *pfNode, m *member) bool {
	mode := m.cfg.ServeMode
	if o, ok := n.overrides[m.key]; ok {
		mode = o
	}
	switch mode {
	case configs.ServeAlways:
		return true
	case configs.ServeRemove, configs.ServeNo:
		return false
	}
	if _, probed := n.probes[m.key.String()]; !probed {
		return true
	}
	return h.vote(n, m.key.String())
}

func (h *pfHarness) serving(n *pfNode) map[string][]netip.Addr {
	nm := n.s.state.Load().pools.names[pfName]
	out := map[string][]netip.Addr{}
	for _, r := range nm.order {
		for _, m := range nm.regions[r].members {
			if h.serves(n, m) {
				out[r] = append(out[r], m.addr)
			}
		}
	}
	return out
}

// modelLatches applies the latch rule once, as a rebuild does, to each
// address family a region has members of: a family with nothing to serve
// latches; a latched one clears when it serves again and auto_recover is
// on.
func (h *pfHarness) modelLatches(n *pfNode) {
	nm := n.s.state.Load().pools.names[pfName]
	serving := h.serving(n)
	for _, r := range nm.order {
		for f := range familyNames {
			if !pfHas(nm.regions[r], f) {
				continue
			}
			k := latchKey{regionKey{pfName, r}, f}
			healthy := len(pfOfFamily(serving[r], f)) > 0
			if n.latched[k] {
				if healthy && *nm.cfg.AutoRecover {
					delete(n.latched, k)
				}
			} else if !healthy {
				n.latched[k] = true
			}
		}
	}
}

// pfHas says whether region r has members of address family f (an IPv4
// address or not), whatever their serve mode.
func pfHas(r *region, f int) bool {
	for _, m := range r.members {
		if m.addr.Is4() == (f == ipv4) {
			return true
		}
	}
	return false
}

// pfOfFamily is addrs' addresses of family f.
func pfOfFamily(addrs []netip.Addr, f int) []netip.Addr {
	v4, v6 := split(addrs)
	if f == ipv4 {
		return v4
	}
	return v6
}

// pfLatched says whether any family of region r is latched on n.
func pfLatched(n *pfNode, r string) bool {
	return n.latched[latchKey{regionKey{pfName, r}, ipv4}] || n.latched[latchKey{regionKey{pfName, r}, ipv6}]
}

// modelSteering is setLoads' rule: steering starts at the level, ends below
// (1 - hysteresis) of it.
func (h *pfHarness) modelSteering(n *pfNode) {
	nm := n.s.state.Load().pools.names[pfName]
	for _, r := range nm.order {
		st := nm.regions[r].cfg.Steer
		if st == nil {
			continue
		}
		k := regionKey{pfName, r}
		l := float64(h.load)
		switch {
		case !n.steering[k] && l >= float64(st.SessionsPerEdge):
			n.steering[k] = true
		case n.steering[k] && l < float64(st.SessionsPerEdge)*(1-st.Hysteresis):
			delete(n.steering, k)
		}
	}
}

func (h *pfHarness) check(n *pfNode, at string) {
	t := h.t
	p := n.s.state.Load().pools
	nm := p.names[pfName]
	v := p.view.Load().names[pfName]
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("%s, %s (variant %d): %s", at, n.name, h.variant, fmt.Sprintf(format, args...))
	}
	real := servableByMember(p)
	serving := h.serving(n)
	for _, m := range p.fuzzMembers() {
		got := real[m.key].serving
		mode := m.cfg.ServeMode
		if o, ok := n.overrides[m.key]; ok {
			mode = o
		}
		// A member forced up or down by a serve mode (the config's or an
		// operator's override) is answered or left out whatever the
		// monitors say.
		switch mode {
		case configs.ServeAlways:
			if !got {
				fail("%s has serve mode always and is left out", m.key)
			}
			continue
		case configs.ServeRemove, configs.ServeNo:
			if got {
				fail("%s has serve mode %s and is served", m.key, mode)
			}
			continue
		}
		// Otherwise a member is left out only by its monitor's agreed
		// verdict: down for more than half of the gslb nodes probing it
		// that this node hears (itself once its checks confirmed), a tie
		// keeping it up; a stale peer's view counts for 3 rounds, a
		// stranger's never.
		if want := h.serves(n, m); got != want {
			fail("%s served %v, want %v (probe here %+v, reports %v)", m.key, got, want, n.probes[m.key.String()], n.reports)
		}
	}
	// A stale peer drops out of the vote after its rounds; strangers
	// (not gslb, no admin address, this node's own name) never count,
	// nor what a report says of members not probed here.
	if pv := n.s.peers.Load(); pv != nil {
		if len(pv.reports) != len(n.reports) {
			fail("reports from %v, want %v", slices.Sorted(maps.Keys(pv.reports)), slices.Sorted(maps.Keys(n.reports)))
		}
		for name, r := range pv.reports {
			mr, ok := n.reports[name]
			if !ok || r.missed != mr.missed || !maps.Equal(r.members, mr.members) {
				fail("report of %s: %v missed %d, want %v missed %d (known %v)", name, r.members, r.missed, mr.members, mr.missed, ok)
			}
		}
	} else if len(n.reports) != 0 {
		fail("no reports, want %v", n.reports)
	}
	// Latches: a region's family with nothing to serve latches; it holds
	// until recovered (POST recover), or with auto_recover until it serves
	// again; a restart restores it.
	_, latches := p.saved()
	var want []string
	for k := range n.latched {
		want = append(want, k.region+"/"+familyNames[k.family])
	}
	var got []string
	for _, l := range latches {
		got = append(got, l.Region+"/"+l.Family)
	}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		fail("latched %v, want %v (serving %v)", got, want, serving)
	}
	// Operator overrides are what the operator set (and a restart
	// restored), for members still configured.
	overrides, _ := p.saved()
	if len(overrides) != len(n.overrides) {
		fail("overrides %v, want %v", overrides, n.overrides)
	}
	for _, o := range overrides {
		if n.overrides[memberKey{o.Name, o.Region, o.Member}] != o.Mode {
			fail("override %v, want %q", o, n.overrides[memberKey{o.Name, o.Region, o.Member}])
		}
	}
	for _, r := range nm.order {
		rv := v.regions[r]
		k := regionKey{pfName, r}
		// Each family on its own: the view's addresses of a family are of
		// that family; what it answers is its own members of the family
		// while the family is not latched; latched, the first failover
		// region with a member of the family to serve (failover_ttl), else
		// its own if it serves again (auto_recover off), else SERVFAIL or
		// every member of the family (all_down); nothing for a family the
		// region has no members of.
		for f, fv := range rv.fam {
			for _, a := range fv.addrs {
				if a.Is4() != (f == ipv4) {
					fail("%s's %s answer holds %s", r, familyNames[f], a)
				}
			}
			lk := latchKey{k, f}
			var wantAddrs []netip.Addr
			wantFailover, wantServfail, wantTTL := "", false, uint32(nm.cfg.TTL)
			own := pfOfFamily(serving[r], f)
			switch {
			case !pfHas(nm.regions[r], f):
			case !n.latched[lk]:
				wantAddrs = own
			default:
				wantTTL = uint32(nm.cfg.FailoverTTL)
				for _, to := range nm.regions[r].cfg.Failover {
					if a := pfOfFamily(serving[to], f); len(a) > 0 {
						wantAddrs, wantFailover = a, to
						break
					}
				}
				switch {
				case wantFailover != "":
				case len(own) > 0:
					wantAddrs = own
				case nm.cfg.AllDown == "servfail":
					wantServfail = true
				default:
					for _, m := range nm.regions[r].members {
						if m.addr.Is4() == (f == ipv4) {
							wantAddrs = append(wantAddrs, m.addr)
						}
					}
				}
			}
			if !slices.Equal(fv.addrs, wantAddrs) || fv.failover != wantFailover || fv.servfail != wantServfail || fv.ttl != wantTTL {
				fail("%s answers %s %v failover %q servfail %v ttl %d, want %v %q %v %d (latched %v, serving %v)",
					r, familyNames[f], fv.addrs, fv.failover, fv.servfail, fv.ttl, wantAddrs, wantFailover, wantServfail, wantTTL, n.latched[lk], serving)
			}
			// A family the region has is never answered empty while a
			// member of it that may serve is up in the region or in one of
			// its failover list.
			reach := len(own) > 0
			for _, to := range nm.regions[r].cfg.Failover {
				reach = reach || len(pfOfFamily(serving[to], f)) > 0
			}
			reach = reach && pfHas(nm.regions[r], f)
			if reach && len(fv.addrs) == 0 {
				fail("%s answers no %s address while a member it may fail over to serves", r, familyNames[f])
			}
		}
		// Steering: a loaded region answers a share of its clients from
		// the first failover region that serves, is not latched and is
		// not steering; not while latched itself.
		wantTo := ""
		if !pfLatched(n, r) && n.steering[k] {
			for _, f := range nm.regions[r].cfg.Failover {
				if !pfLatched(n, f) && !n.steering[regionKey{pfName, f}] && len(serving[f]) > 0 {
					wantTo = f
					break
				}
			}
		}
		gotTo := ""
		if rv.steer != nil {
			gotTo = rv.steer.to
			s4, s6 := split(serving[gotTo])
			if !slices.Equal(rv.steer.v4, s4) || !slices.Equal(rv.steer.v6, s6) {
				fail("%s steers to %s with %v %v, want %v %v", r, gotTo, rv.steer.v4, rv.steer.v6, s4, s6)
			}
		}
		if gotTo != wantTo {
			fail("%s steers to %q, want %q (load %d, steering %v)", r, gotTo, wantTo, h.load, n.steering[k])
		}
	}
}

// checkAgreement: after a round in which every live node heard every
// other joined node, no probe changed since, every joined node holds the
// same agreed verdict on every member (each node given the same reports
// answers the same set).
func (h *pfHarness) checkAgreement(at string) {
	var first *pfNode
	var firstVotes map[string]bool
	for _, n := range h.nodes {
		if !n.joined {
			continue
		}
		votes := map[string]bool{}
		for _, m := range n.s.state.Load().pools.fuzzMembers() {
			if m.prober == nil {
				continue
			}
			p := n.s.state.Load().pools
			p.mu.Lock()
			mode := m.cfg.ServeMode
			p.mu.Unlock()
			if mode != configs.ServeObey {
				continue
			}
			up, _ := m.prober.Up()
			votes[m.key.String()], _ = n.s.agreed(m.key, up, "", m.prober.Settled())
		}
		if first == nil {
			first, firstVotes = n, votes
			continue
		}
		if !maps.Equal(votes, firstVotes) {
			h.t.Fatalf("%s: %s votes %v, %s votes %v (agreement)", at, first.name, firstVotes, n.name, votes)
		}
	}
}

// String for the model's failure messages.
func (r pfReport) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%v/missed %d", r.members, r.missed)
	return b.String()
}
