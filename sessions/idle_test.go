package sessions

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health/healthtest"
)

// openAndLeave opens a ringlb.v1 session of key on addr with a raw
// client, sends one msg unless empty (an empty session is freed with its
// last participant: nothing to resume), closes it at once (the msg and
// close frames ride behind the upgrade request) and reads until the edge
// has closed its side: a session with its msg is then idle.
func openAndLeave(addr, key string, empty bool) error {
	c, err := net.DialTimeout("tcp", addr, testDeadline)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(testDeadline))
	req := "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" +
		"Sec-WebSocket-Protocol: " + protocolV1 + "\r\nctstickiness: " + key + "\r\n\r\n"
	out := []byte(req)
	if !empty {
		out = append(out, clientFrame(0x81, true, []byte(`{"type":"msg","data":0}`))...)
	}
	out = append(out, clientFrame(0x88, true, []byte{0x03, 0xe8})...) // close 1000
	if _, err := c.Write(out); err != nil {
		return err
	}
	got, err := io.ReadAll(c)
	if err != nil {
		return err
	}
	// The 101 is written once the participant has joined (the welcome
	// may give way to the answer to our close).
	if !bytes.HasPrefix(got, []byte("HTTP/1.1 101 ")) {
		return fmt.Errorf("session %s: not upgraded: %.100q", key, got)
	}
	return nil
}

// flood opens n sessions with fresh keys (prefix-0 … prefix-(n-1)) one
// after another from at most workers connections at once, each left at
// once with a msg in it: idle sessions.
func flood(t *testing.T, addr, prefix string, n, workers int) {
	t.Helper()
	floodWith(t, addr, prefix, n, workers, false)
}

// floodWith is flood, its sessions left empty when empty is set.
func floodWith(t *testing.T, addr, prefix string, n, workers int, empty bool) {
	t.Helper()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				if err := openAndLeave(addr, prefix+"-"+strconv.FormatInt(i, 10), empty); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := errors.Join(func() (all []error) {
		for err := range errs {
			all = append(all, err)
		}
		return all
	}()...); err != nil {
		t.Fatal(err)
	}
}

// idleHeld counts the sessions of e without a participant.
func idleHeld(e *testEdge) int {
	n := 0
	e.s.hub.eachSession(func(_ *hubShard, s *session) {
		s.mu.Lock()
		if len(s.participants) == 0 {
			n++
		}
		s.mu.Unlock()
	})
	return n
}

// One client that never holds more than 4 connections (max_connections
// and max_participants never bite) opens session after session with fresh
// keys and leaves each: every one is kept for idle_grace, so without an
// edge-wide bound the edge holds connection rate × idle_grace sessions.
// Beyond edge.max_idle_sessions the oldest idle one is forgotten.
func TestIdleSessionsBounded(t *testing.T) {
	const limit, workers = 1000, 4
	n := 20_000
	if testing.Short() {
		n = 3_000
	}
	e := startEdge(t, configs.Edge{
		MaxConnections:  2 * workers,
		IdleGrace:       configs.Duration(time.Hour),
		MaxIdleSessions: limit,
	}, func(s *Server) { s.joined = nil })
	// Warm up: the first connections pay for pools and server state.
	flood(t, e.data, "warm-up", workers, workers)
	baseline := heapAfterGC()
	start := time.Now()
	flood(t, e.data, "hoard", n, workers)
	took := time.Since(start)
	healthtest.WaitUntil(t, "every participant gone", func() bool {
		_, conns := e.s.Stats()
		return conns == 0 && metricValue(t, e.s, "ringlb_edge_sessions_active") == 0
	})
	held := idleHeld(e)
	grown := heapAfterGC() - baseline
	t.Logf("%d sessions opened and left by one client (%d connections at most, %s): %d idle sessions held, heap grew %d bytes (%d per session opened)",
		n, workers, took.Round(time.Millisecond), held, grown, grown/int64(n))
	if held > limit {
		t.Fatalf("%d idle sessions held, over edge.max_idle_sessions %d", held, limit)
	}
	if got := metricValue(t, e.s, "ringlb_edge_idle_sessions"); int(got) != held {
		t.Errorf("ringlb_edge_idle_sessions = %v, want %d", got, held)
	}
	if got, want := metricValue(t, e.s, "ringlb_edge_idle_sessions_forgotten_total"), n+workers-limit; int(got) != want {
		t.Errorf("ringlb_edge_idle_sessions_forgotten_total = %v, want %d", got, want)
	}
	// Those kept are the newest (the workers' sessions go idle a few
	// places out of key order).
	for i := n - limit + 2*workers; i < n; i += limit / 10 {
		if !e.s.hub.has([]byte("hoard-" + strconv.Itoa(i))) {
			t.Fatalf("hoard-%d (among the %d newest) was forgotten", i, limit)
		}
	}
}

// Within the cap an idle session resumes with its history; the oldest
// beyond it is gone (a resume gets a new epoch, as after idle_grace); a
// live session is never forgotten, however long ago it started; and a
// reload that lowers the cap forgets the oldest at once.
func TestIdleCapKeepsLiveAndRecent(t *testing.T) {
	const limit = 10
	cfg := provisioned(configs.Edge{IdleGrace: configs.Duration(time.Hour), MaxIdleSessions: limit})
	e := startEdge(t, cfg, nil)

	live := e.joinV1(t, "live", "", nil)
	live.msg(t, "live msg")
	live.readType(t, "ack")

	recent := e.joinV1(t, "recent", "", nil)
	recent.msg(t, "kept")
	recent.readType(t, "ack")
	recent.leave(t)
	// limit-1 newer idle sessions: "recent" is the oldest idle, within the cap.
	flood(t, e.data, "newer", limit-1, 1)
	if got := idleHeld(e); got != limit {
		t.Fatalf("%d idle sessions, want %d", got, limit)
	}
	if r := resumeFrom(t, e, "recent", recent.welcome.Epoch, 0); r != "" {
		t.Fatalf("resume of an idle session within the cap: reset %q", r)
	}
	// The resume revived "recent" and it went idle again: now the newest.
	healthtest.WaitUntil(t, "the resumer gone", func() bool { return idleHeld(e) == limit })

	// One more idle session: the oldest idle ("newer-0") is forgotten.
	flood(t, e.data, "more", 1, 1)
	if got := idleHeld(e); got != limit {
		t.Fatalf("%d idle sessions, want %d", got, limit)
	}
	if e.s.hub.has([]byte("newer-0")) {
		t.Fatal("the oldest idle session outlived the cap")
	}
	if got := metricValue(t, e.s, "ringlb_edge_idle_sessions_forgotten_total"); got != 1 {
		t.Fatalf("ringlb_edge_idle_sessions_forgotten_total = %v, want 1", got)
	}

	// A flood of idle sessions far beyond the cap leaves the live session
	// be: its participant stays, its history resumes.
	flood(t, e.data, "flood", 5*limit, 2)
	live.msg(t, "still here")
	if m := live.readType(t, "ack"); m.Seq != 2 {
		t.Fatalf("live session after the flood: ack %+v, want seq 2", m)
	}
	if r := resumeFrom(t, e, "live", live.welcome.Epoch, 0); r != "" {
		t.Fatalf("live session after the flood: reset %q", r)
	}

	// A session forgotten early resumes like one whose idle_grace ran
	// out: a new epoch, reset.
	gone := e.joinV1(t, "gone-0", "", nil)
	gone.msg(t, "x")
	gone.readType(t, "ack")
	gone.leave(t)
	flood(t, e.data, "push", limit, 2)
	c := e.joinV1(t, "gone-0", "resume=1&epoch="+gone.welcome.Epoch, nil)
	if m := c.read(t); m.Type != "reset" || m.Reason != "epoch" || c.welcome.Epoch == gone.welcome.Epoch {
		t.Fatalf("resume of a forgotten session: %+v (welcome %+v)", m, c.welcome)
	}
	c.msg(t, "y") // so that the new session is kept idle: the newest
	c.readType(t, "ack")
	c.leave(t)

	// A reload lowering the cap forgets the oldest idle sessions at once.
	healthtest.WaitUntil(t, "the resumer gone", func() bool { return idleHeld(e) == limit })
	next := cfg
	next.MaxIdleSessions = 3
	if err := e.s.Reload(next); err != nil {
		t.Fatal(err)
	}
	if got := idleHeld(e); got != 3 {
		t.Fatalf("%d idle sessions after lowering the cap to 3", got)
	}
	if !e.s.hub.has([]byte("gone-0")) {
		t.Fatal("the newest idle session was forgotten by the reload")
	}
	if r := resumeFrom(t, e, "live", live.welcome.Epoch, 0); r != "" {
		t.Fatalf("live session after the reload: reset %q", r)
	}
}

// Sessions a drain hands to this edge arrive idle and count like any idle
// session: the oldest idle one gives way to them, and the newest resume.
func TestIdleCapCountsHandedOffSessions(t *testing.T) {
	e := startEdge(t, configs.Edge{IdleGrace: configs.Duration(time.Hour), MaxIdleSessions: 2}, nil)
	flood(t, e.data, "here", 1, 1)
	for _, key := range []string{"handed-1", "handed-2"} {
		if !e.s.hub.install(handoffSession{Key: key, Epoch: "E-" + key, Seq: 1, Term: 1, History: []json.RawMessage{json.RawMessage(`{"type":"msg","seq":1}`)}}, "", goneEdges{}) {
			t.Fatalf("%s not installed", key)
		}
	}
	if e.s.hub.has([]byte("here-0")) || !e.s.hub.has([]byte("handed-1")) || !e.s.hub.has([]byte("handed-2")) {
		t.Fatal("the oldest idle session did not give way to the handed-off ones")
	}
	if got := metricValue(t, e.s, "ringlb_edge_idle_sessions"); got != 2 {
		t.Fatalf("ringlb_edge_idle_sessions = %v, want 2", got)
	}
	if r := resumeFrom(t, e, "handed-2", "E-handed-2", 0); r != "" {
		t.Fatalf("resume of a handed-off session: reset %q", r)
	}
}

// Copies of other edges' sessions do not count here: their owner's cap
// bounds them, as a session it forgets frees its copy on the replica.
func TestIdleCapFreesReplicaCopies(t *testing.T) {
	a, b, _ := replPair(t, configs.ReplicationAsync, "capped")
	cfg := a.s.applied
	cfg.MaxIdleSessions = 2
	if err := a.s.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		c := a.joinV1(t, keyOwnedBy(fmt.Sprintf("capped%d", i), "edge-a", "edge-a", "edge-b"), "", nil)
		c.msg(t, i)
		c.readType(t, "ack")
		c.leave(t)
	}
	if got := idleHeld(a.testEdge); got != 2 {
		t.Fatalf("edge-a holds %d idle sessions, want 2", got)
	}
	healthtest.WaitUntil(t, "edge-b's copies of the forgotten sessions freed", func() bool {
		return b.s.hub.repl.Load().store.count() == 2
	})
	if got := idleHeld(b.testEdge); got != 0 {
		t.Fatalf("edge-b holds %d idle sessions of its own", got)
	}
}

// One client opens ringlb.v1 sessions with fresh keys as an anonymous
// viewer (a viewer link minus its token), sequences nothing in any (a
// viewer can do no more) and leaves each at once, while an honest
// editor's session that has a msg sits idle. Every empty session
// was kept for idle_grace as an idle session like any, so the churn
// pushed the honest one out of edge.max_idle_sessions and its client's
// resume got a reset in place of its replay. A session that sequenced
// nothing has nothing to replay: it is freed with its last participant,
// and a client resuming it from seq 0 with its epoch gets reset at seq 0
// from the session that starts anew — nothing lost.
func TestKeyChurnPushesNoIdleSessionOut(t *testing.T) {
	const limit = 20
	path, secret := writeSecret(t)
	e := startEdge(t, configs.Edge{
		IdleGrace:       configs.Duration(time.Hour),
		MaxIdleSessions: limit,
		Auth:            configs.EdgeAuth{HMACSecretFile: path, Anonymous: configs.AnonymousViewer},
	}, nil)
	honest := e.joinV1(t, "honest", "token="+mint(t, secret, "honest", "ann", RoleEditor, time.Hour), nil)
	honest.msg(t, "kept")
	honest.readType(t, "ack")
	honest.leave(t)

	floodWith(t, e.data, "churn", 10*limit, 2, true)
	healthtest.WaitUntil(t, "every churner gone", func() bool {
		_, conns := e.s.Stats()
		return conns == 0 && metricValue(t, e.s, "ringlb_edge_sessions_active") == 0
	})
	held := idleHeld(e)
	forgotten := metricValue(t, e.s, "ringlb_edge_idle_sessions_forgotten_total")
	t.Logf("%d empty sessions opened and left: %d idle sessions held, %v forgotten", 10*limit, held, forgotten)
	if got := metricValue(t, e.s, "ringlb_edge_idle_sessions"); int(got) != held {
		t.Errorf("ringlb_edge_idle_sessions = %v, %d held", got, held)
	}
	if held != 1 || forgotten != 0 {
		t.Errorf("after the churn: %d idle sessions held, %v forgotten; want the honest one alone, none forgotten", held, forgotten)
	}
	c := e.joinV1(t, "honest", "resume=0&epoch="+honest.welcome.Epoch+"&token="+mint(t, secret, "honest", "ann", RoleEditor, time.Hour), nil)
	if m := c.read(t); m.Type != "msg" || m.Seq != 1 || string(m.Data) != `"kept"` {
		t.Fatalf("the honest client's resume after the churn: %+v, want its msg 1 replayed", m)
	}
	c.leave(t)

	// A client of an empty session resuming it from seq 0 with its epoch
	// gets reset at seq 0 of the session that starts anew, and what is
	// sent there from then on.
	empty := e.joinV1(t, "empty", "", nil)
	empty.leave(t)
	back := e.joinV1(t, "empty", "resume=0&epoch="+empty.welcome.Epoch, nil)
	if m := back.read(t); m.Type != "reset" || m.Seq != 0 || m.Reason != "epoch" || m.Epoch != back.welcome.Epoch {
		t.Fatalf("resume of an empty session from seq 0: %+v (welcome %+v), want reset epoch at seq 0", m, back.welcome)
	}
	other := e.joinV1(t, "empty", "token="+mint(t, secret, "empty", "bob", RoleEditor, time.Hour), nil)
	other.msg(t, "first")
	other.readType(t, "ack")
	if m := back.readType(t, "msg"); m.Seq != 1 || string(m.Data) != `"first"` {
		t.Fatalf("after the reset: %+v, want msg 1", m)
	}
}

// An empty session freed with its last participant frees its copy on the
// replica too, as one whose idle_grace ran out does.
func TestEmptySessionFreesItsReplicaCopy(t *testing.T) {
	a, b, key := replPair(t, configs.ReplicationAsync, "empty")
	c := a.joinV1(t, key, "", nil)
	waitCopy(t, b, key, 0)
	c.leave(t)
	healthtest.WaitUntil(t, "edge-b's copy of the empty session freed", func() bool {
		return b.s.hub.repl.Load().store.count() == 0
	})
	if got := idleHeld(a.testEdge); got != 0 {
		t.Fatalf("edge-a holds %d idle sessions", got)
	}
	if got := metricValue(t, a.s, "ringlb_edge_idle_sessions"); got != 0 {
		t.Fatalf("ringlb_edge_idle_sessions = %v, want 0", got)
	}
}
