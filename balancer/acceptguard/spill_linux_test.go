package acceptguard

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"testing"
	"time"
)

// With Spill a client's connections beyond its share are admitted while
// the listener has room; at the cap a new connection, whoever's, takes the
// place of the oldest spilled connection of the client holding the most,
// as long as that one has not been served (ReleaseClient). Without it a
// burst from one address beyond its share — a balancer forwarding a wave of
// reconnections to an edge — was refused with room to spare.
func TestSpill(t *testing.T) {
	var refused counter
	var logs logLines
	g := Wrap(listen(t), Config{Name: "test", Logger: logs.logger(), MaxConns: 4, MaxConnsPerIP: 1, Spill: true,
		Refusal: HTTPAnswer(http.StatusServiceUnavailable, "too many connections"), RefusedPerIP: &refused, LogEvery: time.Hour})
	defer g.Close()
	from := acceptFrom(t, g)
	// ended: c's reads end at once, as timeouts (a server answers the
	// request it waited for), even with a later deadline set — as a server
	// sets one before it reads a request.
	ended := func(c *Conn) bool {
		_ = c.SetReadDeadline(time.Now().Add(testWait))
		_, err := c.Read(make([]byte, 1))
		return c.Ended() && errors.Is(err, ErrEnded) && errors.Is(err, os.ErrDeadlineExceeded)
	}

	var a [4]*Conn // a[0] in the share, a[1:] spilled
	var a1 net.Conn
	_, a[0] = from(2)
	a1, a[1] = from(2)
	_, a[2] = from(2)
	_, a[3] = from(2)
	if g.Open() != 4 || g.spill.Len() != 3 || refused.value() != 0 {
		t.Fatalf("4 connections from one address under a share of 1, with room for 4: open %d, spilled %d, refused %d; want 4, 3, 0",
			g.Open(), g.spill.Len(), refused.value())
	}

	// At the cap another client's connection takes the place of the
	// oldest spilled one nothing has arrived on: a[1] has a request on
	// its way in (bytes unread), a[2] is ended.
	if _, err := io.WriteString(a1, "GET / HTTP/1.1\r\n"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a[1]'s bytes arrived", func() bool { return Pending(a[1].Conn) })
	from(3)
	if !ended(a[2]) || a[2].ReleaseClient() {
		t.Fatal("the oldest spilled connection with nothing on its way was not ended to make room")
	}
	if a[1].Ended() {
		t.Fatal("a spilled connection with a request on its way was ended")
	}
	if g.Open() != 4 || refused.value() != 1 || logs.count(msgEvicted) != 1 {
		t.Fatalf("after one made room: open %d, counted %d, logged %d; want 4, 1, 1", g.Open(), refused.value(), logs.count(msgEvicted))
	}
	a[2].NoLinger()
	a[2].Close() // its slot went to the new connection
	if g.Open() != 4 {
		t.Fatalf("open %d after the ended connection closed, want 4 (its slot passed on)", g.Open())
	}

	// Served, a spilled connection is not ended: a[3] makes room next.
	if !a[1].ReleaseClient() {
		t.Fatal("a spilled connection not ended: ReleaseClient false")
	}
	_, b := from(3) // beyond its client's share (from(3) above holds it): spilled
	if !ended(a[3]) {
		t.Fatal("a[3] was not ended to make room")
	}
	if a[1].Ended() {
		t.Fatal("a served connection was ended to make room")
	}

	// Nothing left spilled (a[0] and the first from(3) are within their
	// shares, a[1] and b served): refused at the cap.
	b.ReleaseClient()
	c := dial(t, g.Addr().String())
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("at the cap with nothing spilled: %v %v, want 503", resp, err)
	}
	a[0].Close()
	if g.Open() != 3 {
		t.Errorf("open %d after a counted connection closed, want 3", g.Open())
	}
}

// A connection ended to make room before anything arrived on it is closed by
// its server without a word (fasthttp's, reading the first byte). A client
// that writes its request once connected — a balancer's upgrade — is a
// moment behind: closed unanswered, a balancer took the edge for dying. Its
// request, arriving within the linger, is refused as at the cap; a client
// that sends nothing is closed without a word, as before.
func TestEndedUnansweredRefusesALateRequest(t *testing.T) {
	g := Wrap(listen(t), Config{Name: "test", MaxConns: 2, MaxConnsPerIP: 1, Spill: true,
		Refusal: HTTPAnswer(http.StatusServiceUnavailable, "too many connections")})
	defer g.Close()
	next := acceptNext(t, g)
	var clients []net.Conn
	var conns []*Conn
	for range 4 {
		clients = append(clients, dial(t, g.Addr().String()))
		conns = append(conns, next().(*Conn))
	}
	// conns[1] made room for conns[2], conns[2] for conns[3]; each is
	// closed by its server, which read nothing.
	for _, i := range []int{1, 2} {
		if !conns[i].Ended() {
			t.Fatalf("conns[%d] was not ended to make room", i)
		}
		go conns[i].Close()
	}
	if _, err := io.WriteString(clients[1], "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(clients[1]), nil)
	if err != nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("a request arriving on a connection ended and closed unanswered: %v %v, want 503", resp, err)
	}
	if b, err := io.ReadAll(clients[2]); len(b) != 0 || err != nil {
		t.Errorf("a silent connection ended to make room read %q, %v; want the end of the stream, no answer", b, err)
	}
}

// With every linger taken (a burst of refusals and ends at the cap), a
// connection ended to make room and closed unanswered by its server cannot
// wait for its request: it is answered at once, as a refusal at the cap is
// then (Refuse). Before, it was closed without a word: a burst of 600
// upgrades through one balancer to an edge of 400 had 4–77 of them closed
// unanswered so (502, TestBurstOfUpgradesThroughOneBalancer).
func TestEndedUnansweredRefusedWithEveryLingerTaken(t *testing.T) {
	g := Wrap(listen(t), Config{Name: "test", MaxConns: lingerMax + 2, MaxConnsPerIP: 1, Spill: true,
		Refusal: HTTPAnswer(http.StatusServiceUnavailable, "too many connections")})
	defer g.Close()
	lingerForever(g)
	from := acceptFrom(t, g)
	for range lingerMax {
		_, c := from(2)
		go c.Close()
	}
	waitFor(t, "every linger taken", func() bool { return lingeringNow(g) == lingerMax })
	from(3)
	client, ended := from(3) // beyond its client's share
	from(4)                  // at the cap: ends it
	if !ended.Ended() {
		t.Fatal("the spilled connection was not ended to make room")
	}
	closed := closeAsync(ended) // by its server, which read nothing
	waitClosed(t, closed, "the ended connection")
	if _, err := io.WriteString(client, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatalf("the request: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(client), nil)
	if err != nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("a request on a connection ended and closed unanswered, every linger taken: %v %v, want 503", resp, err)
	}
}

// A spilled connection with bytes unread on its socket is passed over for
// one that has none, but not kept at the cap: that its server has not read
// them yet says only that the server lags — under load, every connection
// it accepted a moment ago. The attack of sessions'
// TestIdleConnectionsCannotShutBalancerClientsOut (one address's heads
// trickling in beyond its share) had every one of its connections passed
// over so, and the balancer's clients refused 503 at the cap (0 to 11 of
// 12 joined, in 1 of 5–15 runs). Ended, the request on its way is answered
// as at the cap.
func TestSpillEndsOneWithARequestOnItsWayWhenNoneElse(t *testing.T) {
	g := Wrap(listen(t), Config{Name: "test", MaxConns: 2, MaxConnsPerIP: 1, Spill: true,
		Refusal: HTTPAnswer(http.StatusServiceUnavailable, "too many connections")})
	defer g.Close()
	next := acceptNext(t, g)
	from := func(last byte) (net.Conn, *Conn) { return dialFrom(t, g.Addr().String(), last), next().(*Conn) }
	from(2)
	client, spilled := from(2) // beyond its client's share
	if _, err := io.WriteString(client, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the request arrived, unread", func() bool { return Pending(spilled.Conn) })

	// At the cap: the new connection is let in, the spilled one ended —
	// or the new one refused (answered: nothing else writes to it).
	newcomer := dial(t, g.Addr().String())
	refused := make(chan struct{})
	go func() {
		if n, _ := newcomer.Read(make([]byte, 1)); n > 0 {
			close(refused)
		}
	}()
	waitFor(t, "the spilled connection ended to make room, or the new one refused", func() bool {
		select {
		case <-refused:
			return true
		default:
			return spilled.Ended()
		}
	})
	if !spilled.Ended() {
		t.Fatalf("at the cap with one spilled connection, its request unread: the new connection was refused, open %d", g.Open())
	}
	next() // the new connection
	// Its server closes it, having read nothing: its request is answered.
	waitClosed(t, closeAsync(spilled), "the ended connection")
	resp, err := http.ReadResponse(bufio.NewReader(client), nil)
	if err != nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("the request on its way to a connection ended to make room: %v %v, want 503", resp, err)
	}
}

// acceptFrom returns from: from(last) opens a connection to g from
// 127.0.0.last (dialFrom) and returns the client's end and the listener's,
// accepted.
func acceptFrom(t *testing.T, g *Listener) (from func(last byte) (net.Conn, *Conn)) {
	next := acceptNext(t, g)
	return func(last byte) (net.Conn, *Conn) {
		t.Helper()
		return dialFrom(t, g.Addr().String(), last), next().(*Conn)
	}
}

// dialFrom opens a connection to addr from 127.0.0.last (a client of its
// own), closed when the test ends, its deadlines testWait away.
func dialFrom(t *testing.T, addr string, last byte) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, last)}, Timeout: testWait}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(testWait))
	return c
}
