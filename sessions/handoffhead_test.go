package sessions

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health"
	"github.com/ringlb/ringlb/health/healthtest"
)

// slotThief is a stranger on an edge's data port keeping its hand-off
// slots taken: each of its holders sends the head of a hand-off announcing
// maxHandoffBody and one byte of it, and the next head as soon as that
// one is answered — at once after the slot was freed at its read deadline
// (408), after a short pause after a refusal (paced, so that the flood is
// bounded).
type slotThief struct {
	addr string
	stop chan struct{}
	wg   sync.WaitGroup

	mu      sync.Mutex
	conns   map[net.Conn]struct{}
	answers map[int]int // status → count (0: the connection ended without one)
}

// thiefPace is how long a holder waits after a head refused at once.
const thiefPace = 10 * time.Millisecond

func startSlotThief(t *testing.T, addr string, holders int) *slotThief {
	t.Helper()
	th := &slotThief{addr: addr, stop: make(chan struct{}), conns: map[net.Conn]struct{}{}, answers: map[int]int{}}
	for range holders {
		th.wg.Add(1)
		go th.hold()
	}
	t.Cleanup(th.end)
	return th
}

func (th *slotThief) hold() {
	defer th.wg.Done()
	for {
		select {
		case <-th.stop:
			return
		default:
		}
		code := th.once()
		th.mu.Lock()
		th.answers[code]++
		th.mu.Unlock()
		if code != http.StatusRequestTimeout {
			select {
			case <-th.stop:
				return
			case <-time.After(thiefPace):
			}
		}
	}
}

// once sends one head and returns the status of its answer.
func (th *slotThief) once() int {
	c, err := net.DialTimeout("tcp", th.addr, testDeadline)
	if err != nil {
		return 0
	}
	th.mu.Lock()
	select {
	case <-th.stop:
		th.mu.Unlock()
		c.Close()
		return 0
	default:
	}
	th.conns[c] = struct{}{}
	th.mu.Unlock()
	defer func() {
		th.mu.Lock()
		delete(th.conns, c)
		th.mu.Unlock()
		c.Close()
	}()
	_ = c.SetDeadline(time.Now().Add(testDeadline))
	if _, err := fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\nx", pathHandoff, maxHandoffBody); err != nil {
		return 0
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// end stops the holders (their connections closed) and waits for them.
func (th *slotThief) end() {
	th.mu.Lock()
	select {
	case <-th.stop:
	default:
		close(th.stop)
	}
	for c := range th.conns {
		c.Close()
	}
	th.mu.Unlock()
	th.wg.Wait()
}

func (th *slotThief) counts() map[int]int {
	th.mu.Lock()
	defer th.mu.Unlock()
	out := map[int]int{}
	for k, v := range th.answers {
		out[k] = v
	}
	return out
}

// declareSignedHandoffs is declareBodies of n hand-offs from the edge
// from to the edge to, each head signed by from (configs.HeaderPeerHead)
// as a draining edge signs it, for a length of its own (declared-i): a
// signature takes one slot, once.
func declareSignedHandoffs(t *testing.T, from, to *clusterEdge, n, declared int) []net.Conn {
	t.Helper()
	return declareBodiesWith(t, to.data, pathHandoff, n, func(i int) (int, string) {
		length := declared - i
		sig := from.m.Keyring().SignHead(from.s.name, to.s.name, http.MethodPost, pathHandoff, length)
		return length, configs.HeaderPeerHead + ": " + sig + "\r\n"
	})
}

// startLongGracePair is startDrainPair with n keys edge-a owns and an
// idle_grace on edge-b longer than any test: a session handed on waits
// there for its clients however slow the machine, so one that comes back
// without its history lost it in the hand-off, not to the grace. tweak
// (unless nil) is run on edge-b's server too.
func startLongGracePair(t *testing.T, prefix string, n int, tweak func(*Server)) (a, b *clusterEdge, keys []string) {
	t.Helper()
	cl := healthtest.New(t)
	a = startClusterEdge(t, cl, "edge-a")
	b = startClusterEdgeTweaked(t, cl, "edge-b", slog.New(slog.DiscardHandler), testRing, func(s *Server) {
		s.hub.idleGrace = 2 * testDeadline
		if tweak != nil {
			tweak(s)
		}
	})
	waitRing(t, []*clusterEdge{a, b}, "edge-a", "edge-b")
	for i := 0; len(keys) < n; i++ {
		if key := fmt.Sprintf("%s-%d", prefix, i); ownerOf(key, "edge-a", "edge-b") == "edge-a" {
			keys = append(keys, key)
		}
	}
	return a, b, keys
}

// The attack: an edge reads at most handoffBodies hand-off bodies at once,
// and a hand-off's signature covers its body, so it was checked only once
// the body had come: anyone who reaches the data port took the slots with
// heads announcing 4 MiB, sent the body slowly, and took them again as
// they freed. A draining edge's hand-offs were then refused (503) until
// its drain_timeout, and the drained sessions lost their history: their
// clients resumed on the new owner with a new epoch at seq 0. Now the
// sender signs the hand-off's head too, and a head without that signature
// gets no slot: the stranger is refused (403) and the hand-off goes
// through while it floods.
func TestStrangerHoldsNoHandoffSlotsThroughADrain(t *testing.T) {
	parallel(t)
	const sessions, msgs = 3, 3
	a, b, keys := startLongGracePair(t, "thief", sessions, nil)
	type talking struct {
		key    string
		p1, p2 *v1Client
	}
	var live []talking
	pad := strings.Repeat("x", maxPlainBody/4) // the batch needs a hand-off slot
	for _, key := range keys {
		p1, p2 := a.twoTalking(t, key, 0)
		for i := range msgs {
			p1.msg(t, pad+fmt.Sprint(i))
			p1.readType(t, "ack")
			p2.readType(t, "msg")
		}
		live = append(live, talking{key, p1, p2})
	}

	// Every slot taken, and taken again as it frees; a few holders more
	// than the slots, asking all along.
	thief := startSlotThief(t, b.data, handoffBodies+2)
	// Before the drain, every slot the stranger can take (before the fix:
	// all of them; after it, none — the heads are answered at once).
	waitFor(t, "the stranger's first heads answered or holding a slot", func() bool {
		n := 0
		for _, c := range thief.counts() {
			n += c
		}
		return n >= 2 || b.s.bodies.taken(time.Now()) == handoffBodies
	})
	// The drain's drain_timeout: two slot lifetimes, so the thief has to
	// take the slots again at least once.
	const drainTimeout = 2*handoffTimeout + 2*time.Second
	start := time.Now()
	drained := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
		defer cancel()
		drained <- a.s.Drain(ctx)
	}()
	if err := a.m.UpdateMeta(t.Context(), func(m *health.Meta) { m.State = health.StateDraining }); err != nil {
		t.Fatal(err)
	}
	for _, l := range live {
		for _, p := range []*v1Client{l.p1, l.p2} {
			if code := closeCode(t, p.Conn); code != closeServiceRestart {
				t.Fatalf("close code %d, want 1012", code)
			}
		}
	}
	handed := time.Since(start)
	err := <-drained
	thief.end()
	waitRing(t, []*clusterEdge{b}, "edge-b")
	lost := 0
	for _, l := range live {
		r := b.joinV1(t, l.key, "resume=0&epoch="+l.p1.welcome.Epoch, nil)
		if r.welcome.Epoch != l.p1.welcome.Epoch || r.welcome.Seq != msgs {
			lost++
			t.Logf("%s resumed on edge-b with epoch %s seq %d, had epoch %s seq %d", l.key, r.welcome.Epoch, r.welcome.Seq, l.p1.welcome.Epoch, msgs)
		}
		r.Close()
	}
	t.Logf("drain (drain_timeout %s) with a stranger on the hand-off slots: participants closed after %s, drain returned %v; stranger's heads answered %v; hand-offs refused busy %v, peer requests refused %v; sessions that lost their history: %d of %d",
		drainTimeout, handed.Round(time.Millisecond), err, thief.counts(),
		labelledValue(t, b.s, "ringlb_edge_request_bodies_refused_total", bodyBusy), metricValue(t, b.s, "ringlb_edge_peer_requests_refused_total"), lost, sessions)
	if lost != 0 {
		t.Errorf("%d of %d sessions lost their history in a drain while a stranger held the hand-off slots", lost, sessions)
	}
}

// handoffBatch is a hand-off from the edge from of one ringlb.v1 session
// of key with msgs msgs of history, its body larger than a plain
// request's (it needs a hand-off slot).
func handoffBatch(from, key string, msgs int) *handoffRequest {
	hs := handoffSession{Key: key, Epoch: "handed-" + key, Seq: uint64(msgs), Term: 1}
	for i := range msgs {
		hs.History = append(hs.History, json.RawMessage(fmt.Sprintf(`{"type":"msg","seq":%d,"from":"p","data":"%s"}`, i+1, strings.Repeat("x", maxPlainBody))))
	}
	return &handoffRequest{From: from, Sessions: []handoffSession{hs}}
}

// postHandoff sends batch to the edge to's data port as the node from
// signs its body (configs.HeaderPeer, with kr), with the head signature
// head ("" for none), and returns the answer's status.
func postHandoff(t *testing.T, kr *health.Keyring, from string, to *clusterEdge, batch *handoffRequest, head string) int {
	t.Helper()
	body, err := json.Marshal(batch)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodPost, "http://"+to.data+pathHandoff, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	kr.SignRequest(req.Header, from, to.s.name, http.MethodPost, pathHandoff, body)
	if head != "" {
		req.Header.Set(configs.HeaderPeerHead, head)
	}
	resp, err := (&http.Client{Timeout: testDeadline}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// A hand-off's head without an edge's signature for this edge, this
// request line and this length gets 403 on its head: no slot, nothing of
// its body allotted, counted with the refused peer requests. The slots
// stay free: an edge's signed hand-off right after is served. A head
// signature seen on the wire and sent again takes no second slot (503,
// counted as replayed).
func TestHandoffHeadOfAStrangerGetsNoSlot(t *testing.T) {
	parallel(t)
	a, b, keys := startLongGracePair(t, "head", 1, shortHandoffRead)
	kr := a.m.Keyring()
	sign := func(by, to string, length int) string {
		return kr.SignHead(by, to, http.MethodPost, pathHandoff, length)
	}
	const declared = maxHandoffBody
	body := kr.Sign("edge-a", "edge-b", http.MethodPost, pathHandoff, []byte("x"))
	forged := []struct{ name, header string }{
		{"unsigned", ""},
		{"garbage", configs.HeaderPeerHead + ": edge-a 1 x edge-b\r\n"},
		{"signed for another edge", configs.HeaderPeerHead + ": " + sign("edge-a", "edge-a", declared) + "\r\n"},
		{"signed for another length", configs.HeaderPeerHead + ": " + sign("edge-a", "edge-b", declared-1) + "\r\n"},
		{"signed as the receiver itself", configs.HeaderPeerHead + ": " + sign("edge-b", "edge-b", declared) + "\r\n"},
		{"signed as no member", configs.HeaderPeerHead + ": " + sign("edge-z", "edge-b", declared) + "\r\n"},
		{"a body's signature as the head's", configs.HeaderPeerHead + ": " + body + "\r\n"},
		{"unsigned, the body's signature naming a current edge", configs.HeaderPeer + ": " + body + "\r\n"},
	}
	conns := declareBodiesWith(t, b.data, pathHandoff, len(forged), func(i int) (int, string) { return declared, forged[i].header })
	for i, c := range conns {
		got := <-answers([]net.Conn{c})
		if got != http.StatusForbidden {
			t.Errorf("%s head: answered %d, want 403", forged[i].name, got)
		}
	}
	if n := b.s.bodies.taken(time.Now()); n != 0 {
		t.Errorf("%d hand-off slots taken after the strangers' heads, want 0", n)
	}
	if v := metricValue(t, b.s, "ringlb_edge_peer_requests_refused_total"); v != float64(len(forged)) {
		t.Errorf("ringlb_edge_peer_requests_refused_total = %v, want %d", v, len(forged))
	}

	// An edge's hand-off right after: served, its session installed.
	o := a.s.hub.owner.Load()
	if retry, err := o.send(t.Context(), "edge-b", "http://"+b.data, handoffBatch("edge-a", keys[0], 3)); retry != 0 || err != nil {
		t.Fatalf("edge-a's hand-off after the strangers' heads: retry %v, %v", retry, err)
	}
	if !b.s.hub.has([]byte(keys[0])) {
		t.Fatal("edge-a's hand-off was answered, its session not installed")
	}

	// A head signature sent again: the first head holds a slot, the copy
	// gets none.
	replayed := sign("edge-a", "edge-b", declared)
	head := configs.HeaderPeerHead + ": " + replayed + "\r\n"
	first := answers(declareBodiesWith(t, b.data, pathHandoff, 1, func(int) (int, string) { return declared, head }))
	waitFor(t, "the signed head holding a slot", func() bool { return b.s.bodies.taken(time.Now()) == 1 })
	again := declareBodiesWith(t, b.data, pathHandoff, 1, func(int) (int, string) { return declared, head })
	if got := <-answers(again); got != http.StatusServiceUnavailable {
		t.Errorf("a head signature sent again: answered %d, want 503", got)
	}
	if v := labelledValue(t, b.s, "ringlb_edge_request_bodies_refused_total", bodyReplayed); v != 1 {
		t.Errorf(`ringlb_edge_request_bodies_refused_total{reason="replayed"} = %v, want 1`, v)
	}
	if n := b.s.bodies.taken(time.Now()); n != 1 {
		t.Errorf("%d hand-off slots taken, want the first head's alone", n)
	}
	// The first one's body never comes: freed at its read deadline.
	if got := <-first; got != http.StatusRequestTimeout {
		t.Errorf("the signed head whose body never came: answered %d, want 408", got)
	}
}

// A rolling upgrade: an edge of the previous release (peer_signing below
// PeerSigningHead) signs no hand-off head. While it is a member, its
// unsigned heads take slots as before and its hand-offs are served — but
// an unsigned head naming an upgraded edge is still refused. Once it
// announces the head signatures, its unsigned heads are refused too.
func TestUnsignedHandoffHeadFromAnEarlierRelease(t *testing.T) {
	parallel(t)
	cl := healthtest.New(t)
	b := startClusterEdgeTweaked(t, cl, "edge-b", slog.New(slog.DiscardHandler), testRing, func(s *Server) {
		s.hub.idleGrace = 2 * testDeadline
		shortHandoffRead(s)
	})
	a := startClusterEdge(t, cl, "edge-a")
	// edge-old: an edge of the previous release, as its gossip says
	// (Join announces the current form; an update says the earlier one).
	old := cl.Join("edge-old", health.Meta{Role: health.RoleEdge, Region: "east", URL: "http://127.0.0.1:1", Weight: 1, State: health.StateAlive})
	announce := func(level int) { healthtest.AnnouncePeerSigning(t, old, b.m, level) }
	announce(health.PeerSigningSkip)

	if got := postHandoff(t, old.Keyring(), "edge-old", b, handoffBatch("edge-old", "from-old", 3), ""); got != http.StatusOK {
		t.Fatalf("an earlier release's hand-off (no head signature): %d, want 200", got)
	}
	if !b.s.hub.has([]byte("from-old")) {
		t.Fatal("an earlier release's hand-off was answered, its session not installed")
	}
	// Its unsigned heads take slots as before (this one's body never
	// comes: freed at its read deadline).
	body := old.Keyring().Sign("edge-old", "edge-b", http.MethodPost, pathHandoff, []byte("x"))
	held := answers(declareBodiesWith(t, b.data, pathHandoff, 1, func(int) (int, string) {
		return maxHandoffBody, configs.HeaderPeer + ": " + body + "\r\n"
	}))
	waitFor(t, "the earlier release's unsigned head holding a slot", func() bool { return b.s.bodies.taken(time.Now()) == 1 })
	// An unsigned head from an upgraded edge is a stranger's, and a bad
	// head signature is refused whoever is a member.
	if got := postHandoff(t, a.m.Keyring(), "edge-a", b, handoffBatch("edge-a", "from-a", 3), ""); got != http.StatusForbidden {
		t.Errorf("an upgraded edge's hand-off without a head signature: %d, want 403", got)
	}
	bad := a.m.Keyring().SignHead("edge-a", "edge-b", http.MethodPost, pathHandoff, 1)
	if got := postHandoff(t, old.Keyring(), "edge-old", b, handoffBatch("edge-old", "from-old-2", 3), bad); got != http.StatusForbidden {
		t.Errorf("a hand-off with a head signature for another length: %d, want 403", got)
	}
	if got := <-held; got != http.StatusRequestTimeout {
		t.Errorf("the earlier release's head whose body never came: answered %d, want 408", got)
	}

	// Upgraded: edge-old's unsigned heads are refused from now on.
	announce(health.PeerSigningHead)
	if got := postHandoff(t, old.Keyring(), "edge-old", b, handoffBatch("edge-old", "from-old-3", 3), ""); got != http.StatusForbidden {
		t.Errorf("an unsigned hand-off from an edge announcing head signatures: %d, want 403", got)
	}
	if v := metricValue(t, b.s, "ringlb_edge_peer_requests_refused_total"); v != 3 {
		t.Errorf("ringlb_edge_peer_requests_refused_total = %v, want 3", v)
	}
}
