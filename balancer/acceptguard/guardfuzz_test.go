package acceptguard

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// FuzzGuardEvents drives a guarded Listener through an order of events the
// input chooses, over real sockets on 127.0.0.1: each connection is a real
// TCP pair (so Pending's SIOCINQ, the linger's shut write side and read,
// and an ended connection's past deadline act on a socket), handed to the
// guard by a listener of the test's that names its client as the input says
// (the loopback has one IPv6 address, and a /64 needs several): two IPv4
// addresses, one of them again as a 4-in-6 address, two addresses of one
// IPv6 /64 and one of another. The guard is plain, Config.Spill (the
// edge's) or Config.EndWaiting (the gslb's: the connections waiting for a
// request are its idle ones), with a cap and a share from the input,
// its refusals closed without a word or answered (Refusal, RefusalPerIP,
// RefusalMemory: one text each); a
// second guarded listener, plain and without a share, shares its cap
// (Config.Budget, as the balancer's data and redirect ports do).
//
// Events: a connection from one of the clients to either listener
// (accepted or refused); its
// client sending bytes of a request (unread: Pending); the server reading
// them and taking the request (ReleaseClient, Serving); the server
// answering (Write) or waiting again (Waiting); a close from the client
// (the server reads its FIN and closes at once) or from the server (a
// lingering Close, or NoLinger's for a connection handed over); the cap or
// the share reloaded (SetMax, SetMaxPerIP); low memory on or off
// (Memory's flag, as memory_test's seam sets it); accept(2) failing with
// EMFILE or ENFILE once (the guard backs off 5 ms and goes on); a
// connection taken over from the previous process (Hold) and let go; a
// hand-over to a hijack handler (Handovers: Pending, then Taken or the
// server's close).
//
// After each event, against a model of what the README promises:
//   - accepted or refused as the model says: low memory refuses first;
//     the cap next (Spill: room made by ending a spilled connection;
//     EndWaiting: by ending a waiting one, the share checked first); the
//     share last (Spill: beyond it admitted spilled);
//   - a refused connection is closed at once (no descriptor held), or,
//     answered, its request is answered with the refusal of its reason,
//     then closed; a failed accept never reaches the server;
//   - one ended to make room, unanswered and closed by the server,
//     answers a request on its way as at the cap, else closes without a
//     word;
//   - Open equals the slots the model holds: every connection accepted and
//     not closed, less those ended to make room (their slot passed on),
//     plus the holds; never negative;
//   - an accept never takes Open beyond the cap (an ended connection's
//     slot passes on: Open stays);
//   - each client's count equals its connections admitted within its
//     share and not yet served or closed, and a client counting none is
//     not kept;
//   - the spill is the model's, client by client, oldest first; the one
//     ended at the cap is the oldest without bytes unread of a client
//     holding at least as many as any other that has one (the top
//     holder's oldest), or, when all have bytes unread, the oldest of a
//     client holding the most; a connection served (ReleaseClient) is
//     never ended, and ReleaseClient answers false exactly for one ended;
//   - the waiting connections are the model's, longest waiting first; the
//     one ended at the cap is the first without bytes unread; one being
//     served is never ended;
//   - an ended connection reads ErrEnded;
//   - a hand-over's undo runs exactly when the server closes the
//     connection before the handler took it;
//   - at the end, everything closed: Open 0, no client kept, spill and
//     waiting empty, every socket closed; nothing panics.
//
// Not reached: time (the per-client sweep runs once a minute, the token
// bucket is off: no rate; the linger is shortened to 20 ms), stalled
// writes (EndStalledWrites), a refusal with no request (its client always
// sends one), every linger taken (24 connections open at most),
// concurrent accepts and closes (spillrace_linux_test's), more than 16
// spilled (the bound on the connections looked at).
func FuzzGuardEvents(f *testing.F) {
	f.Add([]byte{1, 3, 1, 0, 0, 1, 0, 2, 0, 0, 1, 0, 2, 3, 1, 4, 2, 1, 3})
	f.Add([]byte{2, 2, 2, 0, 0, 0, 1, 0, 2, 6, 0, 5, 1, 0, 3, 3, 1, 0, 4})
	f.Add([]byte{0, 2, 1, 0, 0, 0, 0, 1, 1, 10, 0, 10, 1, 0, 3, 9, 7, 0, 0, 7, 0, 8, 1})
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) > 200 {
			in = in[:200]
		}
		runGuardEvents(t, in)
	})
}

// fuzzClients are the client addresses an input picks from.
var fuzzClients = []netip.Addr{
	netip.MustParseAddr("10.0.0.1"),
	netip.MustParseAddr("10.0.0.2"),
	netip.MustParseAddr("::ffff:10.0.0.1"), // 10.0.0.1's
	netip.MustParseAddr("2001:db8::1"),
	netip.MustParseAddr("2001:db8::2"), // the same /64
	netip.MustParseAddr("2001:db8:0:1::1"),
}

// The refusals of a guard that answers them.
const (
	refusedCap    = "at the cap\n"
	refusedShare  = "beyond the share\n"
	refusedMemory = "low on memory\n"
)

// fuzzKeys are the clients fuzzClients count as, by hand: an IPv4 address,
// an IPv6 /64.
var fuzzKeys = []netip.Addr{
	netip.MustParseAddr("10.0.0.1"),
	netip.MustParseAddr("10.0.0.2"),
	netip.MustParseAddr("10.0.0.1"),
	netip.MustParseAddr("2001:db8::"),
	netip.MustParseAddr("2001:db8::"),
	netip.MustParseAddr("2001:db8:0:1::"),
}

// namedConn is a real socket whose client is named by the test.
type namedConn struct {
	*net.TCPConn
	remote *net.TCPAddr
	closed atomic.Bool
}

func (c *namedConn) RemoteAddr() net.Addr { return c.remote }
func (c *namedConn) Close() error {
	c.closed.Store(true)
	return c.TCPConn.Close()
}

type fuzzItem struct {
	c   net.Conn
	err error
}

// fuzzListener hands the guard what the test feeds it, saying when the
// guard asks for the next: the previous one was refused (or accepted).
type fuzzListener struct {
	asked chan struct{}
	feed  chan fuzzItem
	done  chan struct{}
}

func (l *fuzzListener) Accept() (net.Conn, error) {
	select {
	case l.asked <- struct{}{}:
	case <-l.done:
		return nil, net.ErrClosed
	}
	select {
	case it := <-l.feed:
		return it.c, it.err
	case <-l.done:
		return nil, net.ErrClosed
	}
}
func (l *fuzzListener) Close() error   { close(l.done); return nil }
func (l *fuzzListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }

// fconn is one connection the guard accepted, as the model sees it.
type fconn struct {
	client  net.Conn
	raw     *namedConn
	srv     *Conn
	key     netip.Addr // ClientNetwork
	counted bool       // holds a slot of its client's share
	spilled bool       // in the spill
	slot    bool       // holds a slot under the cap
	ended   bool       // ended to make room
	unread  int        // bytes its client sent that the server has not read
	handing bool       // a hand-over pending
	second  bool       // accepted by the second listener
	written bool       // the server answered on it
	noLing  bool       // NoLinger (handed over)
}

// guarded is one guarded listener and the test's side of it.
type guarded struct {
	g        *Listener
	ln       *fuzzListener
	accepted chan net.Conn
	ready    bool // the guard has asked for the next connection
}

type guardModel struct {
	t       *testing.T
	g       *Listener // the listener under test
	lns     [2]*guarded
	rl      net.Listener
	mode    int  // 0 plain, 1 Spill, 2 EndWaiting
	answers bool // refusals answered (Refusal, RefusalPerIP, RefusalMemory)
	max     int
	share   int
	low     bool
	open    []*fconn // accepted, not closed
	spill   []*fconn // oldest first (per client: filter by key)
	wait    []*fconn // longest waiting first
	holds   []func()
	errs    counter
	h       Handovers
	undone  int
	closed  []*namedConn
	fails   int
}

func runGuardEvents(t *testing.T, in []byte) {
	at := 0
	next := func() int {
		if at >= len(in) {
			return 0
		}
		at++
		return int(in[at-1])
	}
	// An execution takes milliseconds; one stuck is a fault (the fuzzer
	// has no timeout of its own): its goroutines are shown.
	watchdog := time.AfterFunc(20*time.Second, func() {
		buf := make([]byte, 1<<20)
		panic("an execution stuck for 20 s:\n" + string(buf[:runtime.Stack(buf, true)]))
	})
	defer watchdog.Stop()
	rl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Skip(err)
	}
	defer rl.Close()
	mode := next()
	m := &guardModel{t: t, rl: rl, mode: mode % 3, answers: mode/3%2 == 1, max: next() % 8, share: next() % 4}
	mem := &Memory{}
	// The second listener shares the first's cap (Config.Budget: the
	// balancer's data and redirect ports), plain, without a share.
	budget := NewBudget(m.max)
	for i := range m.lns {
		cfg := Config{Name: "fuzz", Budget: budget, Memory: mem}
		if m.answers {
			cfg.Refusal, cfg.RefusalPerIP, cfg.RefusalMemory = []byte(refusedCap), []byte(refusedShare), []byte(refusedMemory)
		}
		if i == 0 {
			cfg.Errors, cfg.MaxConnsPerIP = &m.errs, m.share
			cfg.Spill, cfg.EndWaiting = m.mode == 1, m.mode == 2
		}
		gd := &guarded{
			ln:       &fuzzListener{asked: make(chan struct{}), feed: make(chan fuzzItem), done: make(chan struct{})},
			accepted: make(chan net.Conn),
		}
		gd.g = Wrap(gd.ln, cfg)
		gd.g.lingering.timeout = 20 * time.Millisecond
		gd.g.waited = func(time.Duration) {}
		go func() {
			for {
				c, err := gd.g.Accept()
				if err != nil {
					close(gd.accepted)
					return
				}
				gd.accepted <- c
			}
		}()
		defer func() {
			gd.g.Close()
			for range gd.accepted {
			}
		}()
		m.lns[i] = gd
	}
	m.g = m.lns[0].g

	for step := 0; at < len(in); step++ {
		op, arg := next()%12, next()
		var what string
		switch op {
		case 0, 1, 2:
			i := arg % len(fuzzClients)
			what = fmt.Sprintf("connect %v", fuzzClients[i])
			if arg >= 128 {
				what += " to the second listener"
			}
			m.connect(fuzzClients[i], fuzzKeys[i], m.lns[arg/128])
		case 3:
			what = "send"
			m.send(m.pick(arg), 1+arg/16%3)
		case 4:
			what = "serve"
			m.serve(m.pick(arg))
		case 5:
			what = "answer"
			m.answer(m.pick(arg))
		case 6:
			what = "waiting"
			if c := m.pick(arg); c != nil {
				c.srv.Waiting()
				m.waits(c)
			}
		case 7:
			what = "client close"
			m.clientClose(m.pick(arg))
		case 8:
			what = "server close"
			m.serverClose(m.pick(arg/2), arg&1 != 0)
		case 9:
			if arg&1 == 0 {
				m.max = arg / 2 % 8
				m.g.SetMax(m.max)
				what = fmt.Sprintf("max %d", m.max)
			} else {
				m.share = arg / 2 % 4
				m.g.SetMaxPerIP(m.share)
				what = fmt.Sprintf("share %d", m.share)
			}
		case 10:
			if arg&1 == 0 {
				m.low = !m.low
				mem.low.Store(m.low)
				what = fmt.Sprintf("low %v", m.low)
			} else {
				what = "accept failed"
				m.acceptFails(arg&2 != 0)
			}
		case 11:
			switch arg % 4 {
			case 0: // taken over from the previous process
				what = "hold"
				if len(m.holds) < 4 {
					m.holds = append(m.holds, m.g.Hold())
				}
			case 1:
				what = "hold released"
				if len(m.holds) > 0 {
					m.holds[0]()
					m.holds[0]() // once only
					m.holds = m.holds[1:]
				}
			case 2:
				what = "hand-over pending"
				if c := m.pick(arg / 4); c != nil && !c.handing {
					c.handing = true
					m.h.Pending(c.srv, func() { m.undone++; c.srv.ReleaseClient(); m.release(c) })
				}
			case 3:
				what = "hand-over taken"
				if c := m.pick(arg / 4); c != nil && c.handing {
					c.handing = false
					m.h.Taken(c.srv)
					c.srv.NoLinger()
					c.noLing = true
				}
			}
		}
		m.check(fmt.Sprintf("step %d (%s)", step, what))
	}

	// Everything closed: nothing left counted.
	for len(m.open) > 0 {
		m.clientClose(m.open[0])
	}
	for _, h := range m.holds {
		h()
	}
	m.holds = nil
	m.check("the end")
	if n := m.g.Open(); n != 0 {
		t.Fatalf("the end: Open %d with every connection closed", n)
	}
	if m.g.own.Clients() != 0 {
		t.Fatalf("the end: %d clients kept with every connection closed", m.g.own.Clients())
	}
	for _, c := range m.closed {
		if !c.closed.Load() {
			t.Fatalf("the end: a socket left open")
		}
	}
}

func (m *guardModel) pick(arg int) *fconn {
	if len(m.open) == 0 {
		return nil
	}
	return m.open[arg%len(m.open)]
}

// awaitAsk waits until the guard asks for the next connection.
func (m *guardModel) awaitAsk(gd *guarded) {
	if gd.ready {
		return
	}
	select {
	case <-gd.ln.asked:
		gd.ready = true
	case <-time.After(5 * time.Second):
		m.t.Fatal("the guard never asked for the next connection")
	}
}

func (m *guardModel) count(key netip.Addr) int {
	n := 0
	for _, c := range m.open {
		if c.key == key && c.counted {
			n++
		}
	}
	return n
}

func (m *guardModel) slots() int {
	n := len(m.holds)
	for _, c := range m.open {
		if c.slot {
			n++
		}
	}
	return n
}

// waits puts c among the waiting connections, unless it waits already or
// is ended (EndWaiting).
func (m *guardModel) waits(c *fconn) {
	if m.mode == 2 && !c.second && !c.ended && !slices.Contains(m.wait, c) {
		m.wait = append(m.wait, c)
	}
}

func (m *guardModel) busy(c *fconn) {
	m.wait = slices.DeleteFunc(m.wait, func(x *fconn) bool { return x == c })
}

// release is ReleaseClient in the model.
func (m *guardModel) release(c *fconn) {
	c.counted = false
	c.spilled = false
	m.spill = slices.DeleteFunc(m.spill, func(x *fconn) bool { return x == c })
}

func (m *guardModel) connect(addr, key netip.Addr, gd *guarded) {
	second := gd != m.lns[0]
	t := m.t
	if len(m.open) >= 24 {
		return
	}
	client, err := net.Dial("tcp", m.rl.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := m.rl.Accept()
	if err != nil {
		t.Fatal(err)
	}
	raw := &namedConn{TCPConn: s.(*net.TCPConn), remote: net.TCPAddrFromAddrPort(netip.AddrPortFrom(addr, 40000))}
	m.closed = append(m.closed, raw)

	// What the model expects.
	open := m.g.Open()
	room := m.max == 0 || m.slots() < m.max
	within := m.share == 0 || m.count(key) < m.share
	var ends *fconn // ended to make room (EndWaiting: known; Spill: checked)
	want := true
	why := refusedCap // the refusal expected, if refused
	switch {
	case m.low:
		want, why = false, refusedMemory
	case second:
		want = room
	case m.mode == 1:
		want = room || len(m.spill) > 0
	case m.mode == 2:
		if !within {
			want, why = false, refusedShare
		} else if !room {
			for _, c := range m.wait {
				if c.unread == 0 {
					ends = c
					break
				}
			}
			want = ends != nil
		}
	default:
		want = room && within
		if room {
			why = refusedShare
		}
	}
	before := slices.Clone(m.spill)

	m.awaitAsk(gd)
	gd.ready = false
	gd.ln.feed <- fuzzItem{c: raw}
	var got net.Conn
	select {
	case got = <-gd.accepted:
	case <-gd.ln.asked:
		gd.ready = true
	case <-time.After(5 * time.Second):
		t.Fatal("Accept neither returned nor asked for the next")
	}
	if (got != nil) != want {
		t.Fatalf("connection from %v: accepted %v, the model says %v (low %v, room %v, within share %v, spilled %d, waiting %d)",
			addr, got != nil, want, m.low, room, within, len(m.spill), len(m.wait))
	}
	if got == nil {
		if m.answers {
			// Promise: a refusal answers the request, for its reason,
			// then closes.
			client.Write([]byte("GET"))
			client.SetReadDeadline(time.Now().Add(time.Second))
			b, err := io.ReadAll(client)
			if string(b) != why || err != nil {
				t.Fatalf("connection from %v refused: read %q (%v), want %q", addr, b, err, why)
			}
			client.Close()
			deadline := time.Now().Add(time.Second)
			for !raw.closed.Load() && time.Now().Before(deadline) {
				time.Sleep(100 * time.Microsecond)
			}
		}
		// Promise: a refused connection is closed (no descriptor held).
		if !raw.closed.Load() {
			t.Fatalf("connection from %v refused and left open", addr)
		}
		client.Close()
		return
	}
	c := &fconn{client: client, raw: raw, srv: got.(*Conn), key: key, slot: true, second: second}

	// Who was ended to make room.
	var ended []*fconn
	for _, o := range m.open {
		if !o.ended && o.srv.Ended() {
			ended = append(ended, o)
		}
	}
	switch {
	case m.mode == 2 && ends != nil:
		if len(ended) != 1 || ended[0] != ends {
			t.Fatalf("connection from %v at the cap: ended %d connections, the model ends the longest waiting without bytes unread", addr, len(ended))
		}
	case m.mode == 1 && !room && !second:
		if len(ended) != 1 {
			t.Fatalf("connection from %v at the cap: ended %d connections, want 1 spilled", addr, len(ended))
		}
		m.checkSpillEnd(ended[0], before)
	default:
		if len(ended) != 0 {
			t.Fatalf("connection from %v with room: ended %d connections", addr, len(ended))
		}
	}
	for _, e := range ended {
		// Its slot under the cap passes to the new connection.
		e.ended, e.slot, e.spilled = true, false, false
		m.spill = slices.DeleteFunc(m.spill, func(x *fconn) bool { return x == e })
		m.busy(e)
	}
	// Promise: an accept never takes Open beyond the cap.
	if now := m.g.Open(); m.max > 0 && now > m.max && now != open {
		t.Fatalf("connection from %v took Open from %d to %d, beyond the cap %d", addr, open, now, m.max)
	}
	if second {
	} else if within {
		c.counted = m.share > 0
	} else {
		c.spilled = true
		m.spill = append(m.spill, c)
	}
	m.open = append(m.open, c)
	if !second {
		m.waits(c)
	}
}

// checkSpillEnd: e, ended at the cap, is the top holder's oldest, passing
// over connections with bytes unread.
func (m *guardModel) checkSpillEnd(e *fconn, spilled []*fconn) {
	t := m.t
	if !slices.Contains(spilled, e) {
		t.Fatalf("ended a connection that was not spilled (served %v)", !e.counted)
	}
	if len(spilled) > maxEvictChecks {
		return
	}
	held := map[netip.Addr]int{}
	most := 0
	anyFree := false
	for _, c := range spilled {
		held[c.key]++
		most = max(most, held[c.key])
		anyFree = anyFree || c.unread == 0
	}
	if !anyFree {
		if held[e.key] != most || spilled[slices.IndexFunc(spilled, func(x *fconn) bool { return x.key == e.key })] != e {
			t.Fatalf("all spilled have bytes unread: ended one of %v (holding %d), not the oldest of a client holding the most (%d)", e.key, held[e.key], most)
		}
		return
	}
	if e.unread != 0 {
		t.Fatalf("ended a spilled connection with bytes unread while one without was spilled")
	}
	for _, c := range spilled {
		if c == e {
			break
		}
		if c.key == e.key && c.unread == 0 {
			t.Fatalf("ended a spilled connection of %v while an older one without bytes unread was spilled", e.key)
		}
	}
	for _, c := range spilled {
		if held[c.key] > held[e.key] && c.unread == 0 {
			t.Fatalf("ended one of %v (holding %d spilled) while %v held %d, one without bytes unread", e.key, held[e.key], c.key, held[c.key])
		}
	}
}

func (m *guardModel) send(c *fconn, n int) {
	if c == nil {
		return
	}
	if _, err := c.client.Write(make([]byte, n)); err != nil {
		m.t.Fatal(err)
	}
	c.unread += n
	deadline := time.Now().Add(time.Second)
	for !Pending(c.raw) {
		if time.Now().After(deadline) {
			m.t.Fatal("bytes sent never arrived")
		}
		time.Sleep(50 * time.Microsecond)
	}
}

func (m *guardModel) serve(c *fconn) {
	t := m.t
	if c == nil {
		return
	}
	if c.ended {
		// Promise: an ended connection reads ErrEnded at once, and
		// again whatever deadline the server sets after.
		read := make(chan error, 1)
		go func() {
			_, err := c.srv.Read(make([]byte, 1))
			read <- err
		}()
		select {
		case err := <-read:
			if !errors.Is(err, ErrEnded) {
				t.Fatalf("an ended connection read %v, want ErrEnded", err)
			}
		case <-time.After(time.Second):
			c.raw.Close()
			t.Fatal("a read on an ended connection waited")
		}
		c.srv.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := c.srv.Read(make([]byte, 1)); !errors.Is(err, ErrEnded) {
			t.Fatalf("an ended connection read %v after a deadline set, want ErrEnded", err)
		}
	} else if c.unread > 0 {
		buf := make([]byte, 64)
		c.srv.SetReadDeadline(time.Now().Add(time.Second))
		for c.unread > 0 {
			n, err := c.srv.Read(buf)
			if err != nil {
				t.Fatalf("reading a request: %v", err)
			}
			c.unread -= n
		}
		c.srv.SetReadDeadline(time.Time{})
	}
	c.srv.Serving()
	m.busy(c)
	// Promise: ReleaseClient answers false exactly for one ended.
	if ok := c.srv.ReleaseClient(); ok == c.ended {
		t.Fatalf("ReleaseClient %v for a connection ended %v", ok, c.ended)
	}
	m.release(c)
}

func (m *guardModel) answer(c *fconn) {
	if c == nil {
		return
	}
	if _, err := c.srv.Write([]byte("ok")); err != nil {
		m.t.Fatal(err)
	}
	c.written = true
	c.client.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := io.ReadFull(c.client, make([]byte, 2)); err != nil {
		m.t.Fatal(err)
	}
	m.waits(c)
}

func (m *guardModel) gone(c *fconn) {
	m.open = slices.DeleteFunc(m.open, func(x *fconn) bool { return x == c })
	m.release(c)
	m.busy(c)
	if c.handing {
		// Promise: the undo runs when the server closes a connection
		// before its hijack handler took it.
		before := m.undone
		m.h.Closed(c.srv)
		if m.undone != before+1 {
			m.t.Fatal("a hand-over's undo did not run when its connection closed")
		}
		c.handing = false
	}
}

func (m *guardModel) clientClose(c *fconn) {
	if c == nil {
		return
	}
	c.client.Close()
	if !c.ended {
		c.srv.SetReadDeadline(time.Now().Add(time.Second))
		buf := make([]byte, 64)
		for {
			if _, err := c.srv.Read(buf); err != nil {
				break
			}
		}
	}
	if err := c.srv.Close(); err != nil {
		m.t.Fatal(err)
	}
	m.gone(c)
}

func (m *guardModel) serverClose(c *fconn, noLinger bool) {
	if c == nil {
		return
	}
	if noLinger {
		c.srv.NoLinger()
		c.noLing = true
	}
	done := make(chan error, 1)
	go func() { done <- c.srv.Close() }()
	c.client.SetReadDeadline(time.Now().Add(time.Second))
	b, _ := io.ReadAll(c.client)
	c.client.Close()
	if c.ended && !c.written && !c.noLing {
		// Promise: one ended to make room and closed unanswered answers
		// a request on its way as at the cap, else closes without a
		// word.
		want := ""
		if c.unread > 0 {
			want = refusedCap
		}
		if !m.answers {
			want = ""
		}
		if string(b) != want {
			m.t.Fatalf("an ended connection closed: its client read %q, want %q", b, want)
		}
	}
	if err := <-done; err != nil {
		m.t.Fatal(err)
	}
	m.gone(c)
}

func (m *guardModel) acceptFails(enfile bool) {
	if m.fails >= 3 {
		return
	}
	m.fails++
	errno := syscall.EMFILE
	if enfile {
		errno = syscall.ENFILE
	}
	before := m.errs.value()
	gd := m.lns[0]
	m.awaitAsk(gd)
	gd.ready = false
	gd.ln.feed <- fuzzItem{err: &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", errno)}}
	m.awaitAsk(gd)
	// Promise: a failed accept is counted and retried, never returned.
	if m.errs.value() != before+1 {
		m.t.Fatalf("a failed accept counted %d times", m.errs.value()-before)
	}
}

func (m *guardModel) check(where string) {
	t := m.t
	// Promise: Open is the slots held (never negative).
	if got, want := m.g.Open(), m.slots(); got != want || got < 0 {
		t.Fatalf("%s: Open %d, the model holds %d slots", where, got, want)
	}
	// Promise: each client counts its connections within its share, not
	// yet served or closed; a client counting none is not kept.
	p := m.g.own
	p.mu.Lock()
	kept := map[netip.Addr]int{}
	for k, st := range p.addrs {
		kept[k] = st.conns
	}
	p.mu.Unlock()
	for _, k := range fuzzKeys {
		if kept[k] != m.count(k) {
			t.Fatalf("%s: client %v counts %d, the model %d", where, k, kept[k], m.count(k))
		}
		if _, ok := kept[k]; ok && m.count(k) == 0 {
			t.Fatalf("%s: client %v kept with nothing counted", where, k)
		}
	}
	// Promise: the spill is the model's, each client's oldest first.
	if s := m.g.spill; s != nil {
		s.mu.Lock()
		for _, k := range fuzzKeys {
			var want, got []*Conn
			for _, c := range m.spill {
				if c.key == k {
					want = append(want, c.srv)
				}
			}
			if sc := s.by[k]; sc != nil {
				for e := sc.conns.Front(); e != nil; e = e.Next() {
					got = append(got, e.Value.(*Conn))
				}
			}
			if !slices.Equal(got, want) {
				s.mu.Unlock()
				t.Fatalf("%s: %v's spill holds %d, the model %d (or in another order)", where, k, len(got), len(want))
			}
		}
		s.mu.Unlock()
	} else if len(m.spill) > 0 {
		t.Fatalf("%s: spilled without Spill", where)
	}
	// Promise: the waiting connections are the model's, in order.
	if w := m.g.waiting; w != nil {
		w.mu.Lock()
		var got []*Conn
		for e := w.conns.Front(); e != nil; e = e.Next() {
			got = append(got, e.Value.(*Conn))
		}
		w.mu.Unlock()
		var want []*Conn
		for _, c := range m.wait {
			want = append(want, c.srv)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("%s: %d waiting, the model %d (or in another order)", where, len(got), len(want))
		}
	}
	// Promise: the hand-overs pending are the model's.
	n := 0
	for _, c := range m.open {
		if c.handing {
			n++
		}
	}
	if m.h.Len() != n {
		t.Fatalf("%s: %d hand-overs pending, the model %d", where, m.h.Len(), n)
	}
	// Promise: every connection the model holds open is open.
	for _, c := range m.open {
		if c.raw.closed.Load() {
			t.Fatalf("%s: a connection open in the model was closed", where)
		}
	}
}
