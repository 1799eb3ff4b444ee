package gslb

import (
	"cmp"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/bits"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health"
)

// pools manages the traffic-managed names: their members' monitors, the
// serve modes (with admin overrides) and failover. What the answer path reads
// is an immutable snapshot (view), rebuilt on every change and swapped in.
type pools struct {
	names   map[string]*managedName // by lower-case FQDN
	logger  *slog.Logger
	metrics *metrics
	// onChange is called after a rebuild that changed some answer (SOA
	// serial bump, NOTIFY).
	onChange func()
	// agree turns this node's probe result for a member into the one all
	// gslb nodes agree on (agree.go); nil: the probe's word is final.
	agree func(k memberKey, up bool, why string, settled bool) (bool, string)
	// onLatch is called after a rebuild that latched a region as failed
	// over or cleared its latch (the operator state is saved then).
	onLatch func()

	view atomic.Pointer[view]
	// served: these are the server's pools (Server.attach). Only they
	// write the members' gauges: a reload's pools, built and refused,
	// set every member up (new probers start up) on the metrics they
	// share, and a dead member's ringlb_gslb_member_up read 1 until its
	// real prober's next transition — never, while it stayed dead; the
	// shipped alert on it resolved (TestRefusedReloadLeavesTheGaugesAlone).
	// The pools a reload replaced are served no more (forget).
	served atomic.Bool

	mu sync.Mutex // guards failed, untold, overrides and rebuilds
	// failed latches a region's address family as failed over; it clears
	// when the region serves that family again and auto_recover is on, or
	// by a manual recover (of every family).
	failed    map[latchKey]string  // → why
	overrides map[memberKey]string // serve mode set through the admin API
	// untold are latches set while these pools were not yet the server's
	// (a reload's new pools latch afresh before they take over the running
	// pools' latches, and a refused reload's never serve): a failover is
	// counted and logged once the pools serve, if it holds then, so a
	// reload that changes nothing is no failover.
	untold map[latchKey]bool
	// steering holds the regions steering a share of their clients away
	// (steer.go); loads is the last sample of the regions' edges' load.
	steering map[regionKey]bool
	loads    map[string]regionLoad

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

type regionKey struct{ name, region string }
type memberKey struct{ name, region, member string }

// latchKey is a region's failover latch of one address family.
type latchKey struct {
	regionKey
	family int // ipv4, ipv6
}

// An answer's address families, each failing over on its own, as gdnsd's
// plugins decide per family: a dual-stack region whose IPv4 members are all
// down answers A from its failover region and AAAA from its own members (it
// answered NODATA for A, cached for the SOA minimum). A region without
// members of a family answers it NODATA: nothing of it failed.
const (
	ipv4 = iota
	ipv6
)

// familyNames are the families as the operator state and /api/pools name
// them.
var familyNames = [2]string{ipv4: "ipv4", ipv6: "ipv6"}

// family is a's address family.
func family(a netip.Addr) int {
	if a.Is4() {
		return ipv4
	}
	return ipv6
}

type managedName struct {
	cfg     configs.ManagedName
	regions map[string]*region
	order   []string   // region names, sorted
	geo     []geoEntry // longest prefix first
}

type geoEntry struct {
	prefix netip.Prefix
	region string
}

type region struct {
	name    string
	cfg     configs.Region
	members []*member
	has     [2]bool // members of each family, whatever their serve mode
}

type member struct {
	key    memberKey
	cfg    configs.Member
	addr   netip.Addr
	prober *health.Prober // nil: not monitored
}

// view is one immutable state of every pool: what to answer each region's
// clients, per address family.
type view struct {
	names map[string]*nameView
}

type nameView struct {
	cfg     *configs.ManagedName
	regions map[string]*regionView
	geo     []geoEntry
	deflt   string
}

type regionView struct {
	fam [2]familyView // by family: ipv4, ipv6
	// steer answers a share of the region's clients from another region
	// while its edges are loaded (steer.go); nil: not steering.
	steer *steerView
}

// familyView is what a region answers of one address family.
type familyView struct {
	addrs []netip.Addr
	ttl   uint32
	// failover names the region answered from instead ("" when none), for
	// /api/pools; servfail: answer SERVFAIL (all down, all_down: servfail).
	failover string
	servfail bool
}

func newPools(cfg configs.GSLB, logger *slog.Logger, m *metrics) (*pools, error) {
	p := &pools{names: map[string]*managedName{}, logger: logger, metrics: m,
		failed: map[latchKey]string{}, untold: map[latchKey]bool{}, overrides: map[memberKey]string{}, steering: map[regionKey]bool{}}
	// Every problem is said, in one pass: the monitors' files do not hide
	// the names'.
	verify, err := monitorTLS(&cfg)
	errs := []error{err}
	for i, nc := range cfg.Names {
		n := &managedName{cfg: nc, regions: map[string]*region{}}
		for rname, rc := range nc.Regions {
			r := &region{name: rname, cfg: rc}
			for j, mc := range rc.Members {
				addr, err := netip.ParseAddr(mc.Address)
				if err != nil {
					errs = append(errs, placed(&cfg, fmt.Sprintf("gslb.names[%d].regions.%s.members[%d].address", i, rname, j), err))
					continue
				}
				mem := &member{key: memberKey{nc.Name, rname, mc.Name}, cfg: mc, addr: addr.Unmap()}
				if rc.Monitor != "" && mc.ServeMode != configs.ServeNo {
					mon := cfg.Monitors[rc.Monitor]
					target := mc.Probe
					if target == "" {
						target = net.JoinHostPort(addr.String(), strconv.Itoa(mon.Port))
					}
					key := mem.key
					// A monitor that verifies a name asks for it too: a
					// member holding several sites answers for that one.
					host := ""
					if v := verify[rc.Monitor]; v != nil {
						host = v.ServerName
					}
					mem.prober = health.NewNamedProber(mon, target, host, verify[rc.Monitor], func(up bool, why string) { p.memberChanged(key, up, why) }, logger)
					// Checks confirming the start state are no transition, but the
					// node's vote now counts (agreed), which can change the answers:
					// a node started while its peers saw a member down kept it out
					// until something rebuilt.
					mem.prober.OnSettled(func() { p.rebuild() })
					if m != nil {
						mem.prober.OnCheckNotMade(func(lacking string) { m.checksNotMade.WithLabelValues(lacking).Inc() })
					}
				}
				r.members = append(r.members, mem)
				r.has[family(mem.addr)] = true
			}
			n.regions[rname] = r
			n.order = append(n.order, rname)
		}
		sort.Strings(n.order)
		for rname, cidrs := range nc.Geo {
			for k, c := range cidrs {
				pfx, err := netip.ParsePrefix(c)
				if err != nil {
					errs = append(errs, placed(&cfg, fmt.Sprintf("gslb.names[%d].geo.%s[%d]", i, rname, k), err))
					continue
				}
				n.geo = append(n.geo, geoEntry{pfx.Masked(), rname})
			}
		}
		slices.SortStableFunc(n.geo, func(a, b geoEntry) int { return b.prefix.Bits() - a.prefix.Bits() })
		p.names[nc.Name] = n
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err // its probers were never started
	}
	p.rebuild()
	return p, nil
}

// monitorTLS is how each https monitor with tls.server_name verifies its
// members (EdgeTLS.ClientConfig: tls.ca_file or the system's roots, the
// name, a client certificate), by monitor name; the others verify nothing
// (nil), which `ringlb check` warns of. The files are read here, so New and
// every Reload read them anew (a renewed client certificate is taken up by
// a SIGHUP), and files that do not load refuse the start or the reload.
// Here only, once per start or reload: every member the monitor checks is
// given the config built here, so what the start or reload checked is what
// its checks use.
func monitorTLS(cfg *configs.GSLB) (map[string]*tls.Config, error) {
	out := map[string]*tls.Config{}
	var errs []error
	for name, mon := range cfg.Monitors {
		if mon.Type != configs.MonitorHTTPS || mon.TLS == nil || mon.TLS.ServerName == "" {
			continue
		}
		c, err := mon.TLS.ClientConfig("")
		if err != nil {
			errs = append(errs, cfg.MonitorTLSProblem(name, err))
			continue
		}
		out[name] = c
	}
	return out, errors.Join(errs...)
}

// start runs every member's monitor until stop.
func (p *pools) start() {
	if p.cancel != nil {
		return // started already (by Start or by a reload: under the server's mu)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	for _, n := range p.names {
		for _, r := range n.regions {
			for _, m := range r.members {
				if m.prober == nil {
					continue
				}
				p.wg.Add(1)
				go func() {
					defer p.wg.Done()
					m.prober.Run(ctx)
				}()
			}
		}
	}
}

func (p *pools) stop() {
	if p.cancel != nil {
		p.cancel()
	}
	p.wg.Wait()
}

// inherit takes over monitor states, overrides and failover latches from the
// pools a reload replaces, for members and regions that are still there, so
// a reload does not flap answers. It reports whether the answers differ from
// old's (the zone's serial must change). Call it before the pools are the
// server's and have their callbacks (Server.attach): old's lock is held only
// while its state is copied — held through the rebuild, a latch the rebuild
// set had the server save the operator state, read from old, and wait for
// that lock for ever (TestReloadThatLatchesAFailoverReturns).
func (p *pools) inherit(old *pools) (changed bool) {
	old.mu.Lock()
	failed, overrides, steering, loads := maps.Clone(old.failed), maps.Clone(old.overrides), maps.Clone(old.steering), old.loads
	old.mu.Unlock()
	p.mu.Lock()
	// Only old's latches: those p's first rebuild set were made without
	// old's overrides (a family served by an operator's always alone
	// latched, and with auto_recover off stayed so); the rebuild below
	// sets again those the state taken over calls for.
	clear(p.failed)
	clear(p.untold)
	for k, v := range failed {
		if p.latchable(k) {
			p.failed[k] = v
		}
	}
	for k, v := range overrides {
		switch {
		case !p.configured(k):
		case p.overrideFits(k, v):
			p.overrides[k] = v
		default:
			p.logger.Warn("serve-mode override dropped: no monitor runs for the member now, nothing to obey", "name", k.name, "region", k.region, "member", k.member, "override", v)
		}
	}
	for k := range steering {
		if n := p.names[k.name]; n != nil && n.regions[k.region] != nil && n.regions[k.region].cfg.Steer != nil {
			p.steering[k] = true
		}
	}
	p.loads = loads
	p.mu.Unlock()
	for name, n := range p.names {
		on := old.names[name]
		if on == nil {
			continue
		}
		for rname, r := range n.regions {
			or := on.regions[rname]
			if or == nil {
				continue
			}
			for _, m := range r.members {
				for _, om := range or.members {
					if om.cfg.Name == m.cfg.Name && om.prober != nil && m.prober != nil && om.prober.Target() == m.prober.Target() && om.prober.Settled() {
						m.prober.Carry(om.prober)
					}
				}
			}
		}
	}
	// Rebuilt against old's answers: what a secondary holds.
	p.view.Store(old.view.Load())
	return p.rebuild()
}

// forget deletes the series of old, the pools a reload replaced, that p
// writes no more: a member gone or no longer monitored (serve_mode no), a
// region gone or no longer steering, the load of a region no name has any
// more. Left, a member's last ringlb_gslb_member_up stayed exported for
// good — a dead one's 0 fired the shipped alert until a restart, however
// it was taken out. Call it once old is stopped: its monitors write no
// more.
func (p *pools) forget(old *pools) {
	if p.metrics == nil {
		return
	}
	// old writes no region load from here on (setLoads): a sample of
	// old's, taken across the reload, made a removed region's series
	// again after its deletion below.
	old.mu.Lock()
	old.served.Store(false)
	old.mu.Unlock()
	regions := map[string]bool{}
	for _, n := range p.names {
		for rname := range n.regions {
			regions[rname] = true
		}
	}
	for name, on := range old.names {
		for rname, or := range on.regions {
			var r *region
			if n := p.names[name]; n != nil {
				r = n.regions[rname]
			}
			if r == nil {
				p.metrics.failovers.DeleteLabelValues(name, rname)
			}
			if !regions[rname] {
				// By region alone: another name's region of the same
				// name keeps it.
				p.metrics.regionLoad.DeletePartialMatch(prometheus.Labels{"region": rname})
			}
			if r == nil || r.cfg.Steer == nil {
				p.metrics.steeredShare.DeleteLabelValues(name, rname)
			}
			for _, om := range or.members {
				if m := p.member(om.key); m == nil || m.prober == nil {
					p.metrics.memberUp.DeleteLabelValues(name, rname, om.cfg.Name)
				}
			}
		}
	}
}

func (p *pools) memberChanged(k memberKey, up bool, why string) {
	p.rebuild()
}

// servable reports whether m is in the answer set, and why.
func (p *pools) servable(m *member) (bool, string) {
	mode := m.cfg.ServeMode
	if o, ok := p.overrides[m.key]; ok {
		mode = o
	}
	switch mode {
	case configs.ServeAlways:
		return true, "serve mode always"
	case configs.ServeRemove:
		return false, "serve mode remove"
	case configs.ServeNo:
		return false, "serve mode no"
	}
	if m.prober == nil {
		return true, "not monitored"
	}
	up, why := m.prober.Up()
	if p.agree != nil {
		return p.agree(m.key, up, why, m.prober.Settled())
	}
	return up, why
}

// rebuild recomputes the view from monitor states, overrides and latches,
// and reports whether an answer changed.
func (p *pools) rebuild() (changed bool) {
	p.mu.Lock()
	v := &view{names: map[string]*nameView{}}
	latchesBefore, latchCleared := len(p.failed), false
	prev := p.view.Load()
	for name, n := range p.names {
		nv := &nameView{cfg: &n.cfg, regions: map[string]*regionView{}, geo: n.geo, deflt: n.cfg.DefaultRegion}
		if nv.deflt == "" {
			nv.deflt = n.order[0]
		}
		serving := map[string][]netip.Addr{}
		for _, rname := range n.order {
			var addrs []netip.Addr
			for _, m := range n.regions[rname].members {
				// Members may share an address (a floating one, each
				// holder checked at its own probe): served while one of
				// them is, and once, as an RRset holds a record (RFC
				// 2181 5); max_answers then counts distinct addresses.
				ok, _ := p.servable(m)
				if ok && !slices.Contains(addrs, m.addr) {
					addrs = append(addrs, m.addr)
				}
				if m.prober != nil && p.metrics != nil && p.served.Load() {
					up, _ := m.prober.Up()
					p.metrics.memberUp.WithLabelValues(name, rname, m.cfg.Name).Set(b2f(up))
				}
			}
			serving[rname] = addrs
		}
		for _, rname := range n.order {
			r := n.regions[rname]
			rv := &regionView{}
			if p.metrics != nil && p.served.Load() {
				// At 0 from the start: a series first seen at 1 is no
				// increase to Prometheus (the shipped alert's increase())
				// nor to the history's failover marks, so a region's
				// first failover went unseen by both.
				p.metrics.failovers.WithLabelValues(name, rname)
			}
			for f := range rv.fam {
				fv := &rv.fam[f]
				fv.ttl = uint32(n.cfg.TTL)
				if !r.has[f] {
					continue // NODATA: no member of the family to fail
				}
				k := latchKey{regionKey{name, rname}, f}
				own := ofFamily(serving[rname], f)
				healthy := len(own) > 0
				if why, latched := p.failed[k]; latched {
					if healthy && *n.cfg.AutoRecover {
						delete(p.failed, k)
						delete(p.untold, k)
						latchCleared = true
						p.logger.Info("region recovered", "name", name, "region", rname, "family", familyNames[f], "was", why)
					}
				} else if !healthy {
					p.failed[k] = "no member to serve"
					p.untold[k] = true
				}
				if _, latched := p.failed[k]; latched && p.untold[k] && p.served.Load() {
					delete(p.untold, k)
					if p.metrics != nil {
						p.metrics.failovers.WithLabelValues(name, rname).Inc()
					}
					p.logger.Warn("region failed over", "name", name, "region", rname, "family", familyNames[f], "failover", r.cfg.Failover)
				}
				if _, latched := p.failed[k]; !latched {
					fv.addrs = own
					continue
				}
				fv.ttl = uint32(n.cfg.FailoverTTL)
				for _, to := range r.cfg.Failover {
					if a := ofFamily(serving[to], f); len(a) > 0 {
						fv.addrs, fv.failover = a, to
						break
					}
				}
				switch {
				case fv.failover != "":
				case healthy: // latched, no target healthy: its own members beat nothing
					fv.addrs = own
				case n.cfg.AllDown == "servfail":
					fv.servfail = true
				default: // serve_all, like gdnsd: every member of the region
					for _, m := range r.members {
						if family(m.addr) == f && !slices.Contains(fv.addrs, m.addr) {
							fv.addrs = append(fv.addrs, m.addr)
						}
					}
				}
			}
			nv.regions[rname] = rv
		}
		// Steering, once every region's failover latch is known: a region
		// steers only to one that serves its own clients itself.
		for _, rname := range n.order {
			r, rv := n.regions[rname], nv.regions[rname]
			if r.cfg.Steer == nil {
				continue
			}
			if !p.latched(regionKey{name, rname}) && p.steering[regionKey{name, rname}] {
				rv.steer = p.steerTarget(name, n, r, serving)
			}
			if p.metrics != nil && p.served.Load() {
				share := 0.0
				if rv.steer != nil {
					share = rv.steer.share
				}
				p.metrics.steeredShare.WithLabelValues(name, rname).Set(share)
			}
		}
		for _, rname := range n.order {
			if prev == nil || !sameRegionView(prev.names[name], rname, nv.regions[rname]) {
				changed = true
			}
		}
		v.names[name] = nv
	}
	p.view.Store(v)
	latchChanged := latchCleared || latchesBefore != len(p.failed)
	p.mu.Unlock()
	if changed && prev != nil && p.onChange != nil {
		p.onChange()
	}
	if latchChanged && p.onLatch != nil {
		p.onLatch()
	}
	return changed
}

// Overrides and latches as the operator state keeps them (admin.go).
type savedOverride struct {
	Name   string `json:"name"`
	Region string `json:"region"`
	Member string `json:"member"`
	Mode   string `json:"mode"`
}

type savedLatch struct {
	Name   string `json:"name"`
	Region string `json:"region"`
	// Family is ipv4 or ipv6; "" (saved by a release that latched a
	// region whole) is every family the region has members of.
	Family string `json:"family,omitempty"`
	Why    string `json:"why"`
}

// saved returns the serve-mode overrides and failover latches, sorted.
func (p *pools) saved() ([]savedOverride, []savedLatch) {
	p.mu.Lock()
	defer p.mu.Unlock()
	overrides := []savedOverride{}
	for k, mode := range p.overrides {
		overrides = append(overrides, savedOverride{k.name, k.region, k.member, mode})
	}
	latches := []savedLatch{}
	for k, why := range p.failed {
		latches = append(latches, savedLatch{k.name, k.region, familyNames[k.family], why})
	}
	slices.SortFunc(overrides, func(a, b savedOverride) int {
		return strings.Compare(a.Name+"\x00"+a.Region+"\x00"+a.Member, b.Name+"\x00"+b.Region+"\x00"+b.Member)
	})
	slices.SortFunc(latches, func(a, b savedLatch) int {
		return strings.Compare(a.Name+"\x00"+a.Region+"\x00"+a.Family, b.Name+"\x00"+b.Region+"\x00"+b.Family)
	})
	return overrides, latches
}

// restore applies saved overrides and latches of members and regions that
// are still configured; it returns what it skipped. The latches the pools'
// first rebuilds set, without the saved overrides, are dropped, as inherit
// drops them; the rebuild sets again those the restored state calls for.
func (p *pools) restore(overrides []savedOverride, latches []savedLatch) (skipped []string) {
	p.mu.Lock()
	clear(p.failed)
	clear(p.untold)
	for _, o := range overrides {
		if !p.configured(memberKey{o.Name, o.Region, o.Member}) {
			skipped = append(skipped, o.Name+"/"+o.Region+"/"+o.Member)
			continue
		}
		switch o.Mode {
		case configs.ServeAlways, configs.ServeObey, configs.ServeRemove, configs.ServeNo:
			if k := (memberKey{o.Name, o.Region, o.Member}); p.overrideFits(k, o.Mode) {
				p.overrides[k] = o.Mode
				continue
			}
			skipped = append(skipped, o.Name+"/"+o.Region+"/"+o.Member)
		default:
			skipped = append(skipped, o.Name+"/"+o.Region+"/"+o.Member)
		}
	}
	for _, l := range latches {
		restored := false
		for f, fname := range familyNames {
			if k := (latchKey{regionKey{l.Name, l.Region}, f}); (l.Family == "" || l.Family == fname) && p.latchable(k) {
				p.failed[k] = l.Why
				restored = true
			}
		}
		if !restored {
			skipped = append(skipped, strings.TrimSuffix(l.Name+"/"+l.Region+"/"+l.Family, "/"))
		}
	}
	p.mu.Unlock()
	p.rebuild()
	return skipped
}

// replace makes the overrides and latches these, and no others (the state
// of the process this one replaced: an upgrade); it returns what it
// skipped, as restore.
func (p *pools) replace(overrides []savedOverride, latches []savedLatch) (skipped []string) {
	p.mu.Lock()
	clear(p.overrides)
	p.mu.Unlock()
	return p.restore(overrides, latches) // which clears the latches
}

func sameRegionView(nv *nameView, rname string, rv *regionView) bool {
	if nv == nil {
		return false
	}
	o := nv.regions[rname]
	if o == nil || !sameSteer(o.steer, rv.steer) {
		return false
	}
	for f := range rv.fam {
		a, b := &o.fam[f], &rv.fam[f]
		if a.ttl != b.ttl || a.servfail != b.servfail || !slices.Equal(a.addrs, b.addrs) {
			return false
		}
	}
	return true
}

func sameSteer(a, b *steerView) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.to == b.to && a.share == b.share && a.ttl == b.ttl && slices.Equal(a.v4, b.v4) && slices.Equal(a.v6, b.v6)
}

// ofFamily is the addresses of addrs of family f, in their order.
func ofFamily(addrs []netip.Addr, f int) []netip.Addr {
	var out []netip.Addr
	for _, a := range addrs {
		if family(a) == f {
			out = append(out, a)
		}
	}
	return out
}

func split(addrs []netip.Addr) (v4, v6 []netip.Addr) {
	for _, a := range addrs {
		if a.Is4() {
			v4 = append(v4, a)
		} else {
			v6 = append(v6, a)
		}
	}
	return v4, v6
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// clientRegion maps a client address to a region: the longest matching geo
// prefix, else the default. bits is the matching prefix length (0 for the
// default): not the ECS scope of the answer on its own (ecsScope).
func (nv *nameView) clientRegion(addr netip.Addr) (region string, bits int) {
	for _, g := range nv.geo {
		if g.prefix.Contains(addr) {
			return g.region, g.prefix.Bits()
		}
	}
	return nv.deflt, 0
}

// ecsScope is the ECS scope of an answer made for addr's region, matched by
// a prefix of bits (clientRegion): the shortest network around addr whose
// every address is in that region. A resolver reuses the answer for every
// client in that network (RFC 7871 7.3.1), so the matched prefix's length
// alone is too short wherever a longer prefix of another region lies inside
// it — or anywhere, for the default region's answer, scope 0 — and that
// region's clients would get this one's answer. Each such prefix (longer,
// so not containing addr) is left out by one bit more than addr shares with
// it. bits may be raised to the client's network already (steering,
// max_answers): prefixes no longer than that need no bit more. For ECS
// queries only, a pass over the geo list (longest first).
func (nv *nameView) ecsScope(addr netip.Addr, region string, bits int) int {
	scope := bits
	for _, g := range nv.geo {
		if g.prefix.Bits() <= bits {
			break // shorter prefixes contain the matched one or miss addr's
		}
		if g.region != region && g.prefix.Addr().Is4() == addr.Is4() {
			scope = max(scope, commonBits(addr, g.prefix.Addr())+1)
		}
	}
	return scope
}

// ecsScopeIPv6 is scope, the ECS scope of an answer made for asked (an
// address of ECS family 2, IPv6), as a length in IPv6, which is what a
// resolver reads it as. An IPv4-mapped address (::ffff:a.b.c.d, from a
// resolver that writes its IPv4 clients so) is answered as the IPv4 address
// it maps, and scope counts IPv4 bits: the 96 of ::ffff:0:0/96 come first
// (before, ::ffff:10.2.9.0 got west with scope /16, and a resolver kept it
// for ::/16, every mapped address: each IPv4 client it has). A native IPv6
// address is answered without the IPv4 prefixes, so its network must leave
// the mapped ones out (scope 0, the default region's, claimed them all).
func ecsScopeIPv6(asked netip.Addr, scope int) int {
	if asked.Is4In6() {
		return min(scope+96, 128)
	}
	return max(scope, commonBits(asked, netip.AddrFrom16([16]byte{10: 0xff, 11: 0xff}))+1)
}

// commonBits is the length of the prefix a and b (one family) share.
func commonBits(a, b netip.Addr) int {
	x, y := a.As16(), b.As16()
	hi := binary.BigEndian.Uint64(x[:8]) ^ binary.BigEndian.Uint64(y[:8])
	lo := binary.BigEndian.Uint64(x[8:]) ^ binary.BigEndian.Uint64(y[8:])
	n := bits.LeadingZeros64(hi)
	if hi == 0 {
		n += bits.LeadingZeros64(lo)
	}
	if a.Is4() {
		n -= 96 // As16 of an IPv4 address is ::ffff:a.b.c.d
	}
	return n
}

// pick appends to dst at most max addresses of addrs (all when max is 0),
// the same ones for the same client, rotated by the client's network so
// clients spread over members.
func pick(dst, addrs []netip.Addr, max int, client netip.Addr) []netip.Addr {
	if max <= 0 || max >= len(addrs) {
		return append(dst, addrs...)
	}
	var b [16]byte
	if client.Is4() {
		a := client.As4()
		copy(b[:], a[:3]) // the /24
	} else {
		a := client.As16()
		copy(b[:], a[:7]) // the /56
	}
	start := int(xxhash.Sum64(b[:]) % uint64(len(addrs)))
	for i := 0; i < max; i++ {
		dst = append(dst, addrs[(start+i)%len(addrs)])
	}
	return dst
}

// configured reports whether k names a member of the config p was built
// from: an override of any other is refused, dropped on a reload, skipped
// on a restore.
func (p *pools) configured(k memberKey) bool { return p.member(k) != nil }

// member is k's member, nil when it is not configured.
func (p *pools) member(k memberKey) *member {
	n := p.names[k.name]
	if n == nil || n.regions[k.region] == nil {
		return nil
	}
	for _, m := range n.regions[k.region].members {
		if m.cfg.Name == k.member {
			return m
		}
	}
	return nil
}

// overrideFits says whether the configured member k may take serve mode
// mode as an override: not obey when no monitor runs for it (serve mode no,
// or a region without one) — obeying nothing served it unchecked, as "not
// monitored" (the config's check refuses obey without a monitor too). Set
// through the API (setOverride), carried by a reload (inherit), restored
// at a start or taken from the process an upgrade replaced (restore): an
// obey set while the member was monitored and carried onto it once the
// config stopped monitoring it had a dead member answered
// (TestObeyOverrideDroppedWhereNoMonitorRuns).
func (p *pools) overrideFits(k memberKey, mode string) bool {
	return mode != configs.ServeObey || p.member(k).prober != nil
}

// setOverride sets (or with mode "" clears) a member's serve mode.
func (p *pools) setOverride(name, region, memberName, mode string) error {
	n := p.names[name]
	if n == nil || n.regions[region] == nil {
		return fmt.Errorf("no region %s of name %s", region, name)
	}
	if !p.configured(memberKey{name, region, memberName}) {
		return fmt.Errorf("no member %s in region %s of %s", memberName, region, name)
	}
	switch mode {
	case "", configs.ServeAlways, configs.ServeObey, configs.ServeRemove, configs.ServeNo:
	default:
		return fmt.Errorf("serve mode must be always, obey, remove or no, got %q", mode)
	}
	if !p.overrideFits(memberKey{name, region, memberName}, mode) {
		return fmt.Errorf("member %s of region %s has no monitor to obey (none runs for a member of serve mode no, or in a region without one): set always or remove here, or give it a monitored serve mode in the config and reload", memberName, region)
	}
	p.mu.Lock()
	k := memberKey{name, region, memberName}
	if mode == "" {
		delete(p.overrides, k)
	} else {
		p.overrides[k] = mode
	}
	p.mu.Unlock()
	p.rebuild()
	return nil
}

// recover clears a region's failover latch (auto_recover: false).
func (p *pools) recover(name, region string) error {
	n := p.names[name]
	if n == nil || n.regions[region] == nil {
		return fmt.Errorf("no region %s of name %s", region, name)
	}
	p.mu.Lock()
	for f := range familyNames {
		delete(p.failed, latchKey{regionKey{name, region}, f})
		delete(p.untold, latchKey{regionKey{name, region}, f})
	}
	p.mu.Unlock()
	p.rebuild()
	return nil
}

// latched says whether any address family of region k is failed over.
// Call with p.mu held.
func (p *pools) latched(k regionKey) bool {
	for f := range familyNames {
		if _, ok := p.failed[latchKey{k, f}]; ok {
			return true
		}
	}
	return false
}

// latchable says whether k names a configured region with members of k's
// family: a latch of any other is dropped on a reload, skipped on a
// restore.
func (p *pools) latchable(k latchKey) bool {
	n := p.names[k.name]
	return n != nil && n.regions[k.region] != nil && n.regions[k.region].has[k.family]
}

// status is /api/pools: every member's state and why.
func (p *pools) status() []map[string]any {
	p.mu.Lock()
	defer p.mu.Unlock()
	v := p.view.Load()
	var out []map[string]any
	names := make([]string, 0, len(p.names))
	for name := range p.names {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		n := p.names[name]
		var regions []map[string]any
		for _, rname := range n.order {
			r := n.regions[rname]
			rv := v.names[name].regions[rname]
			var members []map[string]any
			for _, m := range r.members {
				ok, why := p.servable(m)
				mode := m.cfg.ServeMode
				override := p.overrides[m.key]
				entry := map[string]any{"member": m.cfg.Name, "address": m.addr.String(), "serve_mode": mode, "serving": ok, "why": why}
				if override != "" {
					entry["override"] = override
				}
				if m.prober != nil {
					up, _ := m.prober.Up()
					entry["monitor"], entry["up"], entry["target"] = r.cfg.Monitor, up, m.prober.Target()
				}
				members = append(members, entry)
			}
			// The region's whole — failed over, or SERVFAIL, in any family;
			// where its first family failed over to — then each family's.
			answers, failover, servfail, ttl := []netip.Addr{}, "", false, uint32(0)
			families := map[string]any{}
			for f, fv := range rv.fam {
				if !r.has[f] {
					continue
				}
				_, failed := p.failed[latchKey{regionKey{name, rname}, f}]
				answers = append(answers, fv.addrs...)
				failover, servfail, ttl = cmp.Or(failover, fv.failover), servfail || fv.servfail, cmp.Or(ttl, fv.ttl)
				families[familyNames[f]] = map[string]any{"failed_over": failed, "failover_to": fv.failover, "servfail": fv.servfail,
					"answers": append([]netip.Addr{}, fv.addrs...), "ttl": fv.ttl}
			}
			entry := map[string]any{"region": rname, "members": members, "failed_over": p.latched(regionKey{name, rname}),
				"failover_to": failover, "servfail": servfail, "answers": answers, "ttl": ttl, "families": families}
			if l, ok := p.loads[rname]; ok {
				entry["load"] = l
			}
			if st := r.cfg.Steer; st != nil {
				steer := map[string]any{"active": rv.steer != nil, "sessions_per_edge": st.SessionsPerEdge, "cpu_percent": st.CPUPercent,
					"share": st.Share, "hysteresis": st.Hysteresis}
				if rv.steer != nil {
					steer["to"] = rv.steer.to
					steer["answers"] = append(append([]netip.Addr{}, rv.steer.v4...), rv.steer.v6...)
				} else if p.steering[regionKey{name, rname}] {
					steer["why"] = "loaded, but no failover region to steer to"
				}
				entry["steer"] = steer
			}
			regions = append(regions, entry)
		}
		out = append(out, map[string]any{"name": name, "auto_recover": *n.cfg.AutoRecover, "regions": regions, "at": time.Now().UTC()})
	}
	return out
}
