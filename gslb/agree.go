package gslb

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health"
)

// Agreement among the nameservers of one domain. Every gslb node probes the
// pool members itself; if each answered from its own view, a node whose path
// to one member is broken would answer differently from the others, and
// resolvers would flip between answers. So nodes exchange what their probes
// see, and a member counts as down when a majority of the gslb nodes that
// probe it see it down (a tie is not a majority: the member stays up).
//
// Peers are found through gossip membership (role gslb, their admin URL in
// the metadata); each node reads the others' GET /api/monitors (its own
// probes' view, never the agreed one, so views do not feed back) once per
// shortest monitor interval, all of them at once (at most maxPeerReads), each
// read bounded by the interval: a slow peer delays no other's. A peer that
// stops answering drops out of the vote after peerStaleRounds rounds unheard,
// counted in rounds, not by the clock, so however long rounds take one
// missed round costs no vote.

// Peers lists the cluster's live members and holds its key;
// *health.Membership is one.
type Peers interface {
	Members() []health.Node
	Keyring() *health.Keyring
}

const peerStaleRounds = 3

// maxPeerReads bounds the reads of one round that run at once; a domain's
// nameservers are a handful.
const maxPeerReads = 16

// maxPeerHead bounds a peer's answer's head; its body is a node's view
// (health.MaxPeerView: every member it probes, with a few regions' loads).
const maxPeerHead = 64 << 10

// peerReport is what one peer's probes saw when we last heard it, and how
// many rounds since then it went unheard.
type peerReport struct {
	missed  int
	members map[string]bool // memberKey.String() → up; only members probed here
	// loads are the regions' edges' loads the peer sees in its gossip (steer.go).
	loads map[string]regionLoad
}

// peerViews is the immutable set of fresh peer reports, swapped whole.
type peerViews struct {
	reports map[string]peerReport // by node name
}

func (k memberKey) String() string { return k.name + "/" + k.region + "/" + k.member }

// UsePeers makes this server agree with the other gslb nodes among peers on
// which members are down. It returns at once; the exchange runs until
// Shutdown. Call it once, after Start.
func (s *Server) UsePeers(peers Peers) {
	s.keyring.Store(peers.Keyring())
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.served.Add(1)
	go func() {
		defer s.served.Done()
		s.exchangeLoop(s.background, peers)
	}()
}

// exchangeInterval is the shortest monitor interval (at least 100 ms): a
// member's agreed state lags its probes by one interval at most.
func (s *Server) exchangeInterval() time.Duration {
	d := time.Duration(0)
	for _, m := range s.state.Load().cfg.Monitors {
		if d == 0 || m.Interval.D() < d {
			d = m.Interval.D()
		}
	}
	if d == 0 {
		d = 2 * time.Second
	}
	return max(d, 100*time.Millisecond)
}

func (s *Server) exchangeLoop(ctx context.Context, peers Peers) {
	// No proxy from the environment, and no redirect followed: the address
	// a peer announced is checked against cluster.allowed_networks, where it
	// redirects to is not, and the signed header would go along.
	client := &http.Client{
		Transport:     &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 1, MaxResponseHeaderBytes: maxPeerHead},
		CheckRedirect: configs.NoRedirect,
	}
	defer client.CloseIdleConnections()
	for {
		interval := s.exchangeInterval()
		s.exchangeOnce(ctx, client, peers, interval)
		t := time.NewTimer(interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// exchangeOnce reads every gslb peer's probe view and, when the votes
// changed, rebuilds the answers.
func (s *Server) exchangeOnce(ctx context.Context, client *http.Client, peers Peers, interval time.Duration) {
	old := s.peers.Load()
	next := &peerViews{reports: map[string]peerReport{}}
	members := peers.Members()
	var targets []health.Node
	for _, n := range members {
		if n.Meta.Role == health.RoleGSLB && n.Name != s.name && n.Meta.Admin != "" {
			targets = append(targets, n)
		}
	}
	probed, regions := s.state.Load().pools.known()
	heard := make([]peerReport, len(targets))
	errs := make([]error, len(targets))
	var wg sync.WaitGroup
	slots := make(chan struct{}, maxPeerReads)
	for i, n := range targets {
		wg.Add(1)
		slots <- struct{}{}
		go func() {
			defer func() { <-slots; wg.Done() }()
			heard[i], errs[i] = s.fetchMonitors(ctx, client, n.Name, n.Meta.Admin, interval, probed, regions)
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return
	}
	for i, n := range targets {
		prev, known := peerReport{}, false
		if old != nil {
			prev, known = old.reports[n.Name]
		}
		switch {
		case errs[i] == nil:
			next.reports[n.Name] = heard[i]
		case known && prev.missed+1 < peerStaleRounds:
			prev.missed++ // one missed round is not a vote lost
			next.reports[n.Name] = prev
		default:
			s.logger.Debug("gslb peer not heard", "peer", n.Name, "err", errs[i])
		}
	}
	s.peers.Store(next)
	if old == nil || !sameReports(old, next) {
		s.state.Load().pools.rebuild()
	}
	// One sample of the edges' load per round, from this node's gossip
	// and, for regions it does not see, its peers'.
	local := loadsOf(members)
	s.localLoads.Store(&local)
	s.state.Load().pools.setLoads(mergeLoads(local, next.reports))
}

func sameReports(a, b *peerViews) bool {
	if len(a.reports) != len(b.reports) {
		return false
	}
	for name, ra := range a.reports {
		rb, ok := b.reports[name]
		if !ok || !maps.Equal(ra.members, rb.members) {
			return false
		}
	}
	return true
}

// fetchMonitors reads the peer node's GET /api/monitors at admin, bounded
// by timeout: its own probes' view and the edges' loads it sees, keeping
// only what can count here — the members probed here (probed) and the
// regions of this node's names (regions).
func (s *Server) fetchMonitors(ctx context.Context, client *http.Client, node, admin string, timeout time.Duration, probed, regions map[string]bool) (peerReport, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(admin, "/")+"/api/monitors", nil)
	if err != nil {
		return peerReport{}, err
	}
	// Read as a peer, signed with the cluster's key: the operator's
	// token never leaves this node.
	s.keyring.Load().SignRequest(req.Header, s.name, node, req.Method, req.URL.RequestURI(), nil)
	resp, err := client.Do(req)
	if err != nil {
		return peerReport{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return peerReport{}, fmt.Errorf("GET %s/api/monitors: status %d", admin, resp.StatusCode)
	}
	// Its view only as the peer signed it for this read: an answer
	// altered or replayed on the way is no view (a peer unheard).
	raw, err := s.keyring.Load().ReadAnswer(resp, s.name, node, health.PeerSigningAnswer, health.MaxPeerView)
	if err != nil {
		return peerReport{}, fmt.Errorf("GET %s/api/monitors: %w", admin, err)
	}
	var body struct {
		Members map[string]bool       `json:"members"`
		Loads   map[string]regionLoad `json:"loads"`
	}
	if err := json.NewDecoder(bytes.NewReader(raw)).Decode(&body); err != nil {
		return peerReport{}, fmt.Errorf("GET %s/api/monitors: %w", admin, err)
	}
	maps.DeleteFunc(body.Members, func(k string, _ bool) bool { return !probed[k] })
	maps.DeleteFunc(body.Loads, func(r string, _ regionLoad) bool { return !regions[r] })
	return peerReport{members: body.Members, loads: body.Loads}, nil
}

// known is what a peer's report can speak of here: the keys of the members
// this node probes, and the regions of its names.
func (p *pools) known() (probed, regions map[string]bool) {
	probed, regions = map[string]bool{}, map[string]bool{}
	for _, n := range p.names {
		for rname, r := range n.regions {
			regions[rname] = true
			for _, m := range r.members {
				if m.prober != nil {
					probed[m.key.String()] = true
				}
			}
		}
	}
	return probed, regions
}

// localMonitors is this node's own probe view, for GET /api/monitors: the
// members whose state checks have confirmed. A prober starts up; a node
// just started would otherwise vote a dead member up until its checks had
// failed fall times (with two nameservers, a tie: served again).
func (p *pools) localMonitors() map[string]bool {
	out := map[string]bool{}
	for _, n := range p.names {
		for _, r := range n.regions {
			for _, m := range r.members {
				if m.prober != nil && m.prober.Settled() {
					up, _ := m.prober.Up()
					out[m.key.String()] = up
				}
			}
		}
	}
	return out
}

// agreed turns this node's probe result for a member into the cluster's:
// down when more than half of the gslb nodes probing it see it down. A
// local result no check has confirmed yet (settled false) is no vote: a
// node just started goes by its peers' views while it has them.
func (s *Server) agreed(k memberKey, localUp bool, localWhy string, settled bool) (bool, string) {
	pv := s.peers.Load()
	if pv == nil || len(pv.reports) == 0 {
		return localUp, localWhy
	}
	key := k.String()
	total, down := 0, 0
	if settled {
		total++
		if !localUp {
			down++
		}
	}
	for _, r := range pv.reports {
		if up, ok := r.members[key]; ok {
			total++
			if !up {
				down++
			}
		}
	}
	if total == 0 || settled && total == 1 {
		return localUp, localWhy
	}
	up := down*2 <= total
	why := fmt.Sprintf("down for %d of %d gslb nodes", down, total)
	switch {
	case !settled:
		why += "; here: not settled yet"
	case !localUp:
		why += "; here: " + localWhy
	}
	return up, why
}
