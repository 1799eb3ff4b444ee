package sessions

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ringlb/ringlb/balancer/httplog"
	"github.com/ringlb/ringlb/balancer/ring"
	"github.com/ringlb/ringlb/configs"
)

// has reports whether a session of key is live here.
func (h *hub) has(key []byte) bool {
	sh := h.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	_, ok := sh.sessions[string(key)]
	return ok
}

// Draining is closed when a drain (or Shutdown) begins; the caller announces
// it (gossip state draining) so balancers stop sending new sessions here.
func (s *Server) Draining() <-chan struct{} { return s.drainStarted }

// Drain takes the edge out of service gently: new sessions are refused (503
// before the upgrade; /healthz answers 503) while participants may still
// join the sessions that are live here, so none splits. With a cluster
// (UseCluster) new sessions get 421 to their owner instead, and every
// session is handed on to its new owner at once (history and epoch), its
// participants closed with 1012 to resume there. It returns nil when
// every connection has ended; when ctx is done first, it asks the rest to
// close with 1012 (service restart: ringlb.v1 clients reconnect through a
// balancer and resume) and returns ctx.Err() without waiting for their close
// handshakes (Shutdown waits). With sessions handed on, it returns no
// sooner than handOverLinger after the last hand-off, so the edge still
// answers joins sent by views that have not heard of the new owner yet.
// Safe to call more than once.
func (s *Server) Drain(ctx context.Context) error {
	s.beginDrain()
	o := s.hub.owner.Load()
	if o != nil {
		s.handOn(ctx, o)
	}
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		if _, conns := s.Stats(); conns == 0 && !s.hub.now().Before(s.lingerUntil()) {
			return nil
		}
		select {
		case <-ctx.Done():
			if s.closeAll("edge draining") == 0 {
				return nil // lingering (handOverLinger) when the deadline came
			}
			return ctx.Err()
		case <-t.C:
		}
		if o != nil {
			s.handOn(ctx, o)
		}
	}
}

// handOverLinger is how long a drained edge keeps serving after its last
// hand-off: a join or claim that reaches it from a view that has not heard
// of the new owner (an edge that joined a moment ago) gets the 421 there;
// gone at once, the balancer skipped it and an edge that did not know the
// new owner either started the session anew. Every view has heard of the
// new owner by then (gossipBound).
const handOverLinger = gossipBound

// lingerUntil is when a drain may end: handOverLinger past its last
// hand-off of a session (zero with none).
func (s *Server) lingerUntil() time.Time {
	s.handOffMu.Lock()
	defer s.handOffMu.Unlock()
	if s.lastHandOff.IsZero() {
		return time.Time{}
	}
	return s.lastHandOff.Add(handOverLinger)
}

// handOn hands the sessions hosted here on (handOff): when the drain
// begins, and again whenever the ring has changed or a session was created
// here since. A session that had no other owner then (every other edge
// gone or draining) goes to an edge that joined since, and one a join
// admitted before the drain created after the hand-off looked goes too:
// left here, unpinned, each split when a join of it reached its owner.
func (s *Server) handOn(ctx context.Context, o *ownership) {
	s.handOffMu.Lock()
	defer s.handOffMu.Unlock()
	if s.handed && o.ring.Snapshot().Version() == s.handedAt && s.createdDraining.Load() == s.handedCreated {
		return // the ring is kept by UseCluster's goroutine (update)
	}
	s.handedCreated = s.createdDraining.Load()
	if !s.handed {
		// Hand-offs installing now end before the first one looks.
		s.installing.Lock()
		s.installing.Unlock() //nolint:staticcheck // a barrier, not a section
	}
	snap, _ := o.rebuild()
	s.handed, s.handedAt = true, snap.Version()
	if o.handOff(ctx, snap) > 0 {
		s.lastHandOff = s.hub.now()
	}
}

func (s *Server) beginDrain() {
	s.drainOnce.Do(func() {
		s.draining.Store(true)
		close(s.drainStarted)
		s.log.Info("draining: refusing new sessions")
	})
}

// startDrain runs a drain bounded by drain_timeout in the background (admin
// POST /api/drain); whoever is still connected then is closed with 1012 so
// the drain ends whatever the clients do. Shutdown cancels and waits for it.
func (s *Server) startDrain() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing || s.drainCancel != nil {
		return
	}
	// Before the 202: a /healthz right after it must already say 503.
	s.beginDrain()
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.DrainTimeout.D())
	s.drainCancel = cancel
	s.drainDone.Add(1)
	go func() {
		defer s.drainDone.Done()
		defer cancel()
		_ = s.Drain(ctx) // closes the rest with 1012 at drain_timeout
	}()
}

// closeAll asks every connection to close with 1012 (service restart).
func (s *Server) closeAll(reason string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	for p := range s.conns {
		p.stop(closeServiceRestart, reason)
	}
	return len(s.conns)
}

// maxHandoffBytes bounds one hand-off request body; larger drains are sent
// in several. Below fasthttp's default request body limit (4 MiB).
const maxHandoffBytes = 2 << 20

// handoffParallel bounds the new owners a drain sends to at once (each
// one request at a time): what a drain holds encoded at once is
// handoffParallel bodies of up to maxHandoffBytes.
const handoffParallel = 8

// moving is a session frozen for a hand-off, and who to close after it.
type moving struct {
	key          string
	state        *handoffSession // nil: raw mode, nothing to carry
	participants []*participant
	size         int
}

// handOff moves every session not handed on yet to its owner on snap,
// the ring without this edge (the edge is draining, so its ring has left
// it), and closes their participants with 1012. Sessions with no owner (no
// other edge) are left for a later ring (handOn) or the drain's end. It
// returns the number of sessions handed on.
func (o *ownership) handOff(ctx context.Context, snap *ring.Snapshot) int {
	now := o.srv.hub.now()
	groups := map[string][]moving{}
	urls := map[string]string{}
	o.srv.hub.eachSession(func(sh *hubShard, s *session) {
		target, ok := snap.Locate([]byte(s.key))
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.movedTo != "" {
			return // handed on already
		}
		if !ok || target.Name == o.self {
			// Nowhere to go yet (handOn hands it on when an edge
			// joins): pinned, so an edge that joins before this one
			// learns of it sends its joins here, not a second session.
			o.pinHere(s.key)
			return
		}
		s.movedTo = target.Name
		sh.moved[s.key] = handover{edge: target.Name, until: now.Add(settleWindow), empty: s.v1 == nil}
		mv := moving{key: s.key, participants: append([]*participant(nil), s.participants...)}
		if s.v1 != nil {
			st := handoffState(s.key, s.v1)
			for _, env := range st.History {
				mv.size += len(env)
			}
			mv.state = &st
			mv.size += len(s.key) + 64
			// Frozen: what waited for the replica goes in the hand-off, not
			// to anyone here; the replica's copy is dropped (the new owner
			// replicates it anew).
			s.v1.dropPending()
			if r := o.srv.hub.repl.Load(); r != nil {
				r.release(s)
			}
		}
		groups[target.Name] = append(groups[target.Name], mv)
		urls[target.Name] = target.URL
	})
	n := 0
	// An edge draining too refuses (serveHandoff) when gossip had not
	// told this one yet: what it refused goes to the owners of the ring
	// without it, and so on, each edge refusing at most once.
	for view := snap; len(groups) > 0; {
		o.noticeFailover(ctx, groups, urls)
		moved, refused := o.sendGroups(ctx, groups, urls)
		n += moved
		for target := range refused {
			view = view.Without(target)
		}
		groups, urls = map[string][]moving{}, map[string]string{}
		until := o.srv.hub.now().Add(settleWindow)
		var nowhere []moving
		for target, list := range refused {
			for _, mv := range list {
				to, ok := view.Locate([]byte(mv.key))
				if !ok || to.Name == o.self {
					nowhere = append(nowhere, mv)
					continue
				}
				o.srv.hub.movedOn(mv.key, to.Name, until)
				groups[to.Name] = append(groups[to.Name], mv)
				urls[to.Name] = to.URL
			}
			o.log.Warn("hand-off refused: the edge drains too; sending its sessions to their next owners", "edge", target, "sessions", len(list))
		}
		if len(nowhere) > 0 {
			// Every other edge drains: the sessions start anew where
			// their clients land.
			o.log.Error("hand-off failed: every other edge drains; these sessions' clients will get reset", "sessions", len(nowhere))
			for _, mv := range nowhere {
				if mv.state != nil {
					o.srv.hub.nothingComing(mv.key)
				}
			}
			o.letGo("another edge", nowhere)
			n += len(nowhere)
		}
	}
	o.srv.metrics.handedOff.Add(float64(n))
	if n > 0 {
		o.log.Info("drain: sessions handed on", "sessions", n)
	}
	return n
}

// noticeFailover records, before a drain hands sessions on, each one's
// new owner at the edges balancers fail over to once this edge is gone:
// the owners of its views of the last settleWindow without it, where
// those are not the new owner (a claim made for the new owner,
// argHanded, with its address as urls has it: the edge there gives it to
// a claimer that has not heard of the new owner either). A balancer that
// has heard of neither the drain nor the new owner (an edge that joined a
// moment ago) sends a join there when it cannot reach this edge, and gossip tells that edge of the new owner
// only after it: the hand-over mark lived on this edge alone, and when it
// crashed within its linger the edge there started a second session
// (TestDrainedEdgeCrashSplitsNoSession). And at the owner of each such
// view without that edge too, as a claimer asks both (two edges crashed at
// once): a balancer that could not reach that edge either (crashed a
// moment before, or gone from this one's view) places the key past both
// (TestDrainedEdgeCrashAfterAnotherSplitsNoSession) — at most
// maxFailoverRings such rings a drain, each built once. With no ring
// change in the window every such owner is the new owner, and nothing is
// sent; nor to an edge gone from this one's view (a balancer's dial there
// fails, and it places the key past that edge too). An edge that does not
// answer is passed over, its other sessions too (it may be gone).
func (o *ownership) noticeFailover(ctx context.Context, groups map[string][]moving, urls map[string]string) {
	views, _ := o.recentViews(o.srv.hub.now())
	type notice struct {
		key, to string
	}
	edges := map[string]ring.Member{}
	notices := map[string][]notice{}
	var named []string // one key's edges
	// The rings without a view's owner too, each built once (Without
	// caches it on the view less this edge).
	seconds := map[failoverRing]struct{}{}
	note := func(m ring.Member, n notice) {
		if m.Name == n.to || m.Name == o.self || slices.Contains(named, m.Name) || !o.member(m.Name) {
			return
		}
		named = append(named, m.Name)
		edges[m.Name] = m
		notices[m.Name] = append(notices[m.Name], n)
	}
	for target, list := range groups {
		for _, mv := range list {
			named = named[:0]
			n := notice{mv.key, target}
			for _, v := range views {
				without := v.Without(o.self)
				m, ok := without.Locate([]byte(mv.key))
				if !ok || m.Name == target {
					continue // a balancer that reaches the new owner finds the session
				}
				note(m, n)
				k := failoverRing{without, m.Name}
				if _, built := seconds[k]; !built && len(seconds) >= maxFailoverRings {
					continue
				}
				seconds[k] = struct{}{}
				if next, ok := without.Without(m.Name).Locate([]byte(mv.key)); ok {
					note(next, n)
				}
			}
		}
	}
	perEdge(notices, func(name string, list []notice) {
		for i, n := range list {
			holder, _, err := o.claimKnown(ctx, edges[name], []byte(n.key), claimArgs{handed: n.to, at: urls[n.to]})
			if err != nil {
				o.log.Warn("drain: the edge balancers fail over to did not record where sessions went", "edge", name, "sessions", len(list)-i, "err", err)
				return
			}
			if holder != "" {
				o.log.Warn("drain: the edge balancers fail over to names another edge for a session handed on", "edge", name, "key", httplog.Key([]byte(n.key)), "new_owner", n.to, "there", holder)
			}
		}
	})
}

// perEdge calls f for each edge of m and its value, each on a goroutine of
// its own, at most handoffParallel at once, and returns once all have
// returned: an edge that stalls holds up only what goes to it.
func perEdge[T any](m map[string]T, f func(edge string, v T)) {
	var wg sync.WaitGroup
	slots := make(chan struct{}, handoffParallel)
	for edge, v := range m {
		wg.Add(1)
		go func() {
			defer wg.Done()
			slots <- struct{}{}
			defer func() { <-slots }()
			f(edge, v)
		}()
	}
	wg.Wait()
}

// sendGroups sends each new owner its sessions (handOffTo) and returns
// how many were let go, and those each edge refused for draining too.
func (o *ownership) sendGroups(ctx context.Context, groups map[string][]moving, urls map[string]string) (int, map[string][]moving) {
	// Each new owner's batches go on a goroutine of their own, at most
	// handoffParallel at once, so an edge that stalls holds frozen only
	// the sessions bound for it: sent one after another, every session
	// behind it waited for its request's timeout, its participants
	// connected and relaying nothing.
	var (
		moved   atomic.Int64
		mu      sync.Mutex
		refused = map[string][]moving{}
	)
	perEdge(groups, func(target string, list []moving) {
		n, back := o.handOffTo(ctx, target, urls[target], list)
		moved.Add(int64(n))
		if len(back) > 0 {
			mu.Lock()
			refused[target] = back
			mu.Unlock()
		}
	})
	return int(moved.Load()), refused
}

// handOffTo sends list to the edge target at url in batches, each sent
// whole: a refusal for now (503: the new owner's hand-off slots taken, or
// it is low on memory) is sent again, the other batches go on meanwhile.
// It returns the number of sessions let go (letGo), and those target
// refused for draining too, still frozen here.
func (o *ownership) handOffTo(ctx context.Context, target, url string, list []moving) (int, []moving) {
	var out []*outgoing
	for len(list) > 0 {
		b := &outgoing{target: target, url: url}
		b.req.From = o.self
		size := 0
		n := 0
		for n < len(list) && (n == 0 || size+list[n].size <= maxHandoffBytes) {
			if list[n].state != nil {
				b.req.Sessions = append(b.req.Sessions, *list[n].state)
			}
			size += list[n].size
			n++
		}
		b.sessions = list[:n]
		out = append(out, b)
		list = list[n:]
	}
	moved := 0
	var refused []moving
	for len(out) > 0 {
		var later []*outgoing
		var wait time.Duration
		for _, b := range out {
			var err error
			if len(b.req.Sessions) > 0 { // raw sessions carry nothing
				var retry time.Duration
				retry, err = o.send(ctx, b.target, b.url, &b.req)
				if errors.Is(err, errDrainingToo) {
					refused = append(refused, b.sessions...)
					continue
				}
				if retry > 0 && ctx.Err() == nil {
					later = append(later, b)
					wait = max(wait, retry)
					continue
				}
				if err != nil && ctx.Err() == nil {
					if cut := b.req.fitTo(maxHandoffBody); cut > 0 {
						// Longer than every edge reads, and not taken:
						// the new owner may read less than this edge's
						// histories make (its edge.history is smaller, or
						// it is of an earlier release), and its refusal
						// can reach this edge as a reset before its 413.
						// The newest msgs go, in what every edge reads,
						// rather than none (a copy already installed is
						// kept: a session hosted there is not replaced).
						o.log.Warn("hand-off failed: sending the sessions' newest msgs, as much as every edge reads; a resume from before them gets a reset", "edge", b.target, "sessions", len(b.req.Sessions), "msgs_left_out", cut, "err", err)
						later = append(later, b)
						continue
					}
				}
			}
			if err != nil {
				o.log.Error("hand-off failed: these sessions' clients will get reset on the new edge", "edge", b.target, "sessions", len(b.req.Sessions), "err", err)
			}
			// Taken or failed, nothing more is coming: the new owner
			// asking about one of these keys itself holds it no more (it
			// restarted since, or the session ended there) and starts it
			// anew. Told "hosted by" itself, it waited handoffTimeout for
			// a hand-off that had gone to its process before, and refused
			// the key's joins until this edge's mark ran out
			// (TestHandedToARestartedEdgeStartsAnewAtOnce). A join it
			// placed just before the hand-off landed joins the landed
			// session (hub.join).
			for _, hs := range b.req.Sessions {
				o.srv.hub.nothingComing(hs.Key)
			}
			o.letGo(b.target, b.sessions)
			moved += len(b.sessions)
		}
		if len(later) > 0 {
			n := 0
			for _, b := range later {
				n += len(b.req.Sessions)
			}
			o.log.Warn("hand-off refused for now; trying again", "edge", target, "sessions", n, "batches", len(later), "retry_in", wait)
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-ctx.Done():
				// The next round finds ctx done and gives up on them.
			}
			t.Stop()
		}
		out = later
	}
	return moved, refused
}

// outgoing is one hand-off request of a drain: a batch of sessions moving
// to the edge target.
type outgoing struct {
	target, url string
	req         handoffRequest
	sessions    []moving
}

// letGo lets sessions go: their new owner target has them (or the
// hand-off failed, and it starts them anew): joins go there, and their
// participants are closed with 1012 to resume there.
func (o *ownership) letGo(target string, sessions []moving) {
	for _, mv := range sessions {
		o.unpin(mv.key) // the new owner has it: the ring sends joins there
		for _, p := range mv.participants {
			p.stop(closeServiceRestart, "session moved to "+target)
		}
	}
}

// errDrainingToo is a hand-off's refusal by a new owner that drains too
// (421): nothing was installed, and the sessions go to the next owner.
var errDrainingToo = errors.New("the new owner drains too")

// handoffRetry bounds the wait before a refused hand-off is sent again:
// the new owner's Retry-After, within [handoffRetryMin, handoffRetryMax].
const (
	handoffRetryMin = 100 * time.Millisecond
	handoffRetryMax = handoffTimeout
)

// send posts batch to the edge to at url. A refusal for now — 503, from
// the hand-off's own limits or the new owner's listener (at its cap, or
// low on memory, or ending for room a connection admitted beyond this
// edge's address's share, connshare.go), or 429 (an earlier release's
// listener: this edge's address at that share) — is answered
// before the body is read, so nothing was installed: retry is then how
// long to wait before sending it again. Any other failure is final (a
// timeout may have been installed).
func (o *ownership) send(ctx context.Context, to, url string, batch *handoffRequest) (retry time.Duration, err error) {
	body := batch.appendJSON(nil)
	ctx, cancel := context.WithTimeout(ctx, handoffTime(len(body)))
	defer cancel()
	req, err := o.signed(ctx, to, url, pathHandoff, body)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	// The head's own signature: the new owner gives the body one of its
	// few hand-off slots only for it (bodies.go).
	if v := o.m.Keyring().SignHead(o.self, to, req.Method, req.URL.RequestURI(), len(body)); v != "" {
		req.Header.Set(configs.HeaderPeerHead, v)
	}
	resp, err := o.http.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var out handoffResponse
	if resp.StatusCode == http.StatusServiceUnavailable || resp.StatusCode == http.StatusTooManyRequests {
		return retryAfter(resp.Header.Get("Retry-After")), fmt.Errorf("answered %s", resp.Status)
	}
	if resp.StatusCode == http.StatusMisdirectedRequest {
		return 0, errDrainingToo // nothing installed (serveHandoff)
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("answered %s", resp.Status)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&out); err != nil {
		return 0, err
	}
	if len(out.Refused) > 0 {
		o.log.Warn("hand-off: the new edge already hosts some of these sessions, or another edge claimed them there", "refused", len(out.Refused))
		// Their state is not coming: the new edge keeps what it hosts,
		// and its claims are told so rather than to wait for an install
		// (a join there waited out its timeout, 503, for the rest of the
		// hand-over window).
		o.srv.hub.nothingComing(out.Refused...)
	}
	return 0, nil
}

// fitTo drops the oldest history entries of r's sessions, the longest
// history's first, until r's body is at most limit bytes long, and
// returns how many it dropped (0: it could not shorten r). A session's
// history is the newest msgs up to its seq, so what is left is still a
// history of it: a resume from within it loses nothing.
func (r *handoffRequest) fitTo(limit int) int {
	over := len(r.appendJSON(nil)) - limit
	dropped := 0
	for over > 0 {
		longest := -1
		for i := range r.Sessions {
			if len(r.Sessions[i].History) > 0 && (longest < 0 || len(r.Sessions[i].History) > len(r.Sessions[longest].History)) {
				longest = i
			}
		}
		if longest < 0 {
			break
		}
		hs := &r.Sessions[longest]
		over -= len(hs.History[0]) + 1
		hs.History = hs.History[1:]
		dropped++
	}
	return dropped
}

// retryAfter is the wait a Retry-After of delay-seconds asks for, within
// [handoffRetryMin, handoffRetryMax]; a second when it is absent or
// unreadable (an HTTP date: edges send seconds).
func retryAfter(v string) time.Duration {
	secs, err := strconv.Atoi(v)
	if err != nil || secs < 0 {
		return time.Second
	}
	return min(max(time.Duration(secs)*time.Second, handoffRetryMin), handoffRetryMax)
}
