package sessions

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health"
	"github.com/ringlb/ringlb/health/healthtest"
)

// What the man in the middle does to the claims it carries.
const (
	claimPass   = iota // carries the claim and its answer as they are
	claimForge         // answers "claimed" itself, the holder not asked
	claimStrip         // carries both, the answer's signature dropped
	claimRename        // carries both, the 409's X-Ringlb-Owner changed
	claimMoveAt        // carries both, the 409's X-Ringlb-Owner-URL set to movedAt
)

// claimFront is a man in the middle on the network between edges: an HTTP
// proxy that edge-a's gossip announces as its data address (the attacker
// holds no key; it sits on the path, as a spoofed address on the LAN
// does). It carries every request to edge-a's data port and every answer
// back, but the answers to claims as mode says.
type claimFront struct {
	mode   atomic.Int32
	claims atomic.Int32 // claims it carried or answered
	// movedAt is the address claimMoveAt gives.
	movedAt string

	mu   sync.Mutex
	seen []*http.Request // the claims it carried, as they came (bodies in seenBodies)
	// seenBodies are the bodies of seen.
	seenBodies [][]byte
}

// last returns the last claim f carried and its body.
func (f *claimFront) last(t *testing.T) (*http.Request, []byte) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.seen) == 0 {
		t.Fatal("no claim went through the front")
	}
	return f.seen[len(f.seen)-1], f.seenBodies[len(f.seenBodies)-1]
}

// replay sends claim r (body) again, as it was seen, to the data port at
// data, and returns the status.
func replayClaim(t *testing.T, r *http.Request, body []byte, data string) int {
	t.Helper()
	req, err := http.NewRequest(r.Method, "http://"+data+r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header = r.Header.Clone()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

func (f *claimFront) front(t *testing.T, data string) string {
	target, err := url.Parse("http://" + data)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.ErrorLog = nil
	proxy.ModifyResponse = func(resp *http.Response) error {
		if resp.Request.URL.Path != pathClaim {
			return nil
		}
		switch f.mode.Load() {
		case claimStrip:
			resp.Header.Del(configs.HeaderPeerAnswer)
		case claimRename:
			resp.Header.Set(headerOwner, "edge-b")
		case claimMoveAt:
			if resp.StatusCode == http.StatusConflict {
				resp.Header.Set(headerOwnerAt, f.movedAt)
			}
		}
		return nil
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == pathClaim {
			f.claims.Add(1)
			body, err := io.ReadAll(r.Body)
			if err != nil {
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
			f.mu.Lock()
			f.seen, f.seenBodies = append(f.seen, r.Clone(r.Context())), append(f.seenBodies, body)
			f.mu.Unlock()
			if f.mode.Load() == claimForge {
				_, _ = io.Copy(io.Discard, r.Body)
				_, _ = io.WriteString(w, "claimed\n")
				return
			}
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

// A claim's answer came unsigned: whoever could change the traffic between
// two edges answered a new owner's claim "claimed" for a session live on
// the old owner, and the new owner started a second session of the key —
// the session split, its participants on two edges, each side's edits lost
// to the other. Now an edge signs its answers to claims
// (configs.HeaderPeerAnswer, for the claimer and that very claim; the
// holder a 409 names is in the signed body), and a claimer takes an answer
// of an edge announcing PeerSigningClaimAnswer only with that signature:
// anything else settles nothing and refuses the join (503, the client
// retries), as a busy edge's answer does. An earlier release's edge, which
// signs no answer, is read as before.
func TestForgedClaimAnswerSplitsNoSession(t *testing.T) {
	cl := healthtest.New(t)
	var f claimFront
	a := startClusterEdgeBehind(t, cl, "edge-a", configs.Edge{IdleGrace: configs.Duration(60e9)}, slog.New(slog.DiscardHandler), testRing, nil, func(data string) string { return f.front(t, data) })
	b := startClusterEdge(t, cl, "edge-b")
	waitRing(t, []*clusterEdge{a, b}, "edge-a", "edge-b")
	// Keys edge-a owned before edge-b came and edge-b owns now: each live
	// on edge-a, as if from before the change. Their pins would tell
	// edge-b in ~50 ms, after which it asks nothing; the claim is what
	// covers that gap, held open here by edge-a sending none (taken as
	// sent already).
	o := a.s.hub.owner.Load()
	var live []string
	for i := 0; len(live) < 5; i++ {
		key := fmt.Sprintf("forged-claim-%d", i)
		if ownerOf(key, "edge-a") == "edge-a" && ownerOf(key, "edge-a", "edge-b") == "edge-b" {
			live = append(live, key)
			o.mu.Lock()
			o.pinned[key] = 0
			o.mu.Unlock()
			a.s.hub.install(handoffSession{Key: key, Epoch: "e", Seq: 0}, "", goneEdges{})
		}
	}
	refusedBefore := healthtest.AnswersRefused(t, b.m)
	for i, mode := range []int32{claimForge, claimStrip} {
		f.mode.Store(mode)
		claims := f.claims.Load()
		conn, resp, err := b.dialV1(t, live[i], "", nil)
		if err == nil {
			conn.Close()
			t.Fatalf("mode %d: edge-b started a session live on edge-a (split) on an answer the path made", mode)
		}
		if f.claims.Load() == claims {
			t.Fatalf("mode %d: edge-b asked edge-a nothing (answer %v, %v)", mode, resp, err)
		}
		if resp == nil || resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
			t.Fatalf("mode %d: edge-b answered %v, want 503 with Retry-After (the answer settles nothing)", mode, resp)
		}
	}
	if n, _ := b.s.Stats(); n != 0 {
		t.Fatalf("%d sessions started on edge-b, want none", n)
	}
	refused := healthtest.AnswersRefused(t, b.m) - refusedBefore
	if refused < 2 {
		t.Errorf("%v claim answers counted refused, want at least 2", refused)
	}
	t.Logf("forged and stripped answers: joins refused 503, %v answers counted refused", refused)

	// Carried as they are, the holder's signed 409 sends the join to it;
	// so it does with its X-Ringlb-Owner changed on the way (the signed
	// body names the holder).
	for i, mode := range []int32{claimPass, claimRename} {
		f.mode.Store(mode)
		if got := dialExpect421(t, b, live[2+i]); got != "edge-a" {
			t.Fatalf("mode %d: edge-b sent a session live on edge-a to %q", mode, got)
		}
	}

	// edge-a of an earlier release (signing no answer): read as before —
	// the path can forge its answers, as it could before.
	healthtest.AnnouncePeerSigning(t, a.m, b.m, health.PeerSigningAnswer)
	f.mode.Store(claimStrip)
	if got := dialExpect421(t, b, live[4]); got != "edge-a" {
		t.Fatalf("edge-b sent a session live on an earlier release's edge-a to %q", got)
	}
}

// An edge names, in its 409 to a claim, a holder the claimer has not heard
// of (a drain's new owner, which the drain recorded there with its
// address), and gives that holder's address (X-Ringlb-Owner-URL) — a
// header the answer's signature did not cover. The claimer asks the
// holder there, and passes it over if the connection is refused (it
// crashed). Whoever could change the traffic between two edges, no key
// needed, rewrote the address to one within the cluster's networks where
// nothing listens (any closed port of an edge's host): the claimer took
// the holder for crashed, had the asked edge record its own claim instead,
// and started a second session of a key the holder hosts. Now an edge
// announcing PeerSigningClaimOnce gives the address in the answer's
// signed body, and the claimer takes only that; an unsigned address (an
// earlier release's answer) is still asked, but a refusal there passes
// nobody over: the join waits for gossip (503).
func TestForgedOwnerAddressSplitsNoSession(t *testing.T) {
	parallel(t)
	cl := healthtest.New(t)
	var f claimFront
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.movedAt = "http://" + closed.Addr().String()
	closed.Close() // nothing listens there: a dial is refused
	// edge-z, the holder as edge-b knows it: it hosts the key, and its
	// answers are slow in coming (no answer within the claim's deadline
	// settles nothing, so the join must wait).
	z := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(2 * peerTimeout):
		}
	}))
	t.Cleanup(z.Close)
	frozen := time.Now() // edge-b's hub clock: the drain's claim holds throughout
	a := startClusterEdge(t, cl, "edge-a")
	b := startClusterEdgeBehind(t, cl, "edge-b", configs.Edge{IdleGrace: configs.Duration(time.Second)}, slog.New(slog.DiscardHandler), testRing,
		func(s *Server) { s.hub.clock = func() time.Time { return frozen } },
		func(data string) string { return f.front(t, data) })
	waitRing(t, []*clusterEdge{a, b}, "edge-a", "edge-b")
	var key string
	for i := 0; key == ""; i++ {
		if k := fmt.Sprintf("forged-at-%d", i); ownerOf(k, "edge-a", "edge-b") == "edge-b" && ownerOf(k, "edge-a", "edge-b", "edge-d") == "edge-d" {
			key = k
		}
	}
	// edge-a drained and handed the key to edge-z, which no edge has
	// heard of yet: its claim for edge-z is on edge-b, with its address.
	if holder := b.s.hub.handedOn([]byte(key), "edge-b", "edge-z", z.URL, settleWindow); holder != "" {
		t.Fatalf("edge-b holds %s for %q, want edge-z's claim recorded", key, holder)
	}
	d := startClusterEdge(t, cl, "edge-d")
	waitRing(t, []*clusterEdge{a, b, d}, "edge-a", "edge-b", "edge-d")
	for _, mode := range []int32{claimMoveAt, claimPass} {
		f.mode.Store(mode)
		claims := f.claims.Load()
		conn, resp, err := d.dialV1(t, key, "", nil)
		if err == nil {
			conn.Close()
			t.Fatalf("mode %d: edge-d started %s while edge-b names edge-z its holder (split), on an address the path gave", mode, key)
		}
		if f.claims.Load() == claims {
			t.Fatalf("mode %d: edge-d asked edge-b nothing (answer %v, %v)", mode, resp, err)
		}
		if resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("mode %d: edge-d answered %v, want 503 (edge-z unanswered)", mode, resp)
		}
	}
	if n, _ := d.s.Stats(); n != 0 {
		t.Fatalf("%d sessions started on edge-d, want none", n)
	}
	// edge-b of an earlier release: its address unsigned, still asked; a
	// refusal there passes edge-z over no more.
	healthtest.AnnouncePeerSigning(t, b.m, d.m, health.PeerSigningClaimAnswer)
	f.mode.Store(claimMoveAt)
	conn, resp, err := d.dialV1(t, key, "", nil)
	if err == nil {
		conn.Close()
		t.Fatalf("edge-d started %s on an earlier release's unsigned address, refused", key)
	}
	if resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("edge-d answered %v for an earlier release's unsigned address, refused; want 503", resp)
	}
}
