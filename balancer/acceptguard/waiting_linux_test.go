package acceptguard

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// With EndWaiting, at the cap a new connection within its client's share
// takes the place of the connection that has waited the longest for its
// client's next request — accepted, or answered, and no request read whole
// since (Serving) — passing over one being served (a request read, not
// answered yet) and one with bytes unread (a request on its way in). A
// request's first bytes read do not make a connection busy: trickled, they
// would hold it. A client beyond its share ends nobody's.
func TestEndWaiting(t *testing.T) {
	var ended counter
	var logs logLines
	g := Wrap(listen(t), Config{Name: "test", Logger: logs.logger(), MaxConns: 3, MaxConnsPerIP: 2, EndWaiting: true, EndedWaiting: &ended, LogEvery: time.Hour})
	defer g.Close()
	from := acceptFrom(t, g)
	isEnded := func(c *Conn) bool {
		_ = c.SetReadDeadline(time.Now().Add(testWait))
		_, err := c.Read(make([]byte, 1))
		return c.Ended() && errors.Is(err, ErrEnded)
	}
	read := func(client net.Conn, c *Conn) { // a request arrives and is read
		if _, err := io.WriteString(client, "q"); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
	}

	a0client, a0 := from(2)
	read(a0client, a0) // a request read whole: being served
	a0.Serving()
	_, a1 := from(2) // waits for its first request
	b0client, b0 := from(3)
	if _, err := io.WriteString(b0client, "q"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "b0's request arrived", func() bool { return Pending(b0.Conn) })

	// At the cap, from a client at its share: refused, nobody ended.
	over := dialFrom(t, g.Addr().String(), 2)
	over.SetReadDeadline(time.Now().Add(testWait))
	if _, err := over.Read(make([]byte, 1)); err == nil {
		t.Fatal("a connection beyond its client's share was served at the cap")
	}
	if a1.Ended() || ended.value() != 0 {
		t.Fatal("a client beyond its share ended another connection")
	}

	// Within its share: a1 (waiting, nothing unread) makes room; a0 is
	// being served, b0 has a request unread.
	_, d := from(4)
	if !isEnded(a1) || a0.Ended() || b0.Ended() {
		t.Fatalf("ended: a1 %v (want true), a0 %v, b0 %v", a1.Ended(), a0.Ended(), b0.Ended())
	}
	a1.NoLinger()
	a1.Close()
	if g.Open() != 3 || ended.value() != 1 || logs.count(msgEndedWaiting) != 1 {
		t.Fatalf("open %d, counted %d, logged %d; want 3, 1, 1", g.Open(), ended.value(), logs.count(msgEndedWaiting))
	}

	// a0 answered: it waits from now on, after d (waiting since accepted).
	if _, err := a0.Write([]byte("a")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(b0, make([]byte, 1)); err != nil { // b0 served
		t.Fatal(err)
	}
	b0.Serving()
	_, e := from(5)
	if !isEnded(d) || a0.Ended() || b0.Ended() {
		t.Fatalf("ended: d %v (want true), a0 %v, b0 %v", d.Ended(), a0.Ended(), b0.Ended())
	}
	d.NoLinger()
	d.Close()
	from(6)
	if !isEnded(a0) || b0.Ended() || e.Ended() {
		t.Fatalf("ended: a0 %v (want true), b0 %v, e %v", a0.Ended(), b0.Ended(), e.Ended())
	}
	if g.Open() != 3 || ended.value() != 3 {
		t.Fatalf("open %d, ended %d; want 3, 3", g.Open(), ended.value())
	}
}

// A request's first bytes read do not take a connection out of the waiting
// ones: trickled a byte at a time, a request that never ends would hold
// it. Only Serving does.
func TestEndWaitingEndsARequestBegun(t *testing.T) {
	var ended counter
	g := Wrap(listen(t), Config{Name: "test", MaxConns: 3, EndWaiting: true, EndedWaiting: &ended})
	defer g.Close()
	from := acceptFrom(t, g)
	client, trickle := from(2)
	if _, err := io.WriteString(client, "q"); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(trickle, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	from(3)
	from(4)
	_, d := from(5) // at the cap: trickle has waited the longest
	if !trickle.Ended() || d.Ended() || ended.value() != 1 {
		t.Fatalf("a connection with a request's first byte read: ended %v, want true (%d ended)", trickle.Ended(), ended.value())
	}
}

// A request read (Serving) and answered with nothing: the server's next
// read (Waiting) puts the connection back among the waiting ones, or an
// ignored message a while would keep it busy for ever.
func TestEndWaitingAfterARequestIgnored(t *testing.T) {
	var ended counter
	g := Wrap(listen(t), Config{Name: "test", MaxConns: 2, EndWaiting: true, EndedWaiting: &ended})
	defer g.Close()
	from := acceptFrom(t, g)
	_, ignored := from(2)
	_, other := from(3)
	ignored.Serving() // a request read, never answered
	other.Serving()
	ignored.Waiting() // the server reads again
	other.Waiting()   // answered (written to, or none) and read again, later
	from(4)
	if !ignored.Ended() || other.Ended() || ended.value() != 1 {
		t.Fatalf("ended: ignored %v (want true), other %v", ignored.Ended(), other.Ended())
	}
}

// With EndStalledWrites, a connection whose write waits on a client that
// does not read — with its requests unread, as a client that pipelines them
// leaves them — is ended to make room at the cap once its write has waited
// that long, its write ended with it; a write that completes in time, or
// a connection with a request unread and no write, is not.
func TestEndStalledWrites(t *testing.T) {
	var ended counter
	g := Wrap(listen(t), Config{Name: "test", MaxConns: 2, EndWaiting: true, EndedWaiting: &ended, EndStalledWrites: 50 * time.Millisecond, LogEvery: time.Hour})
	defer g.Close()
	from := acceptFrom(t, g)

	// a: a request read, served (being answered), more requests unread;
	// its client reads nothing.
	aClient, a := from(2)
	if _, err := io.WriteString(aClient, "qq"); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(a, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	a.Serving()
	// b: a request arrived, unread: busy, not ended.
	bClient, b := from(3)
	if _, err := io.WriteString(bClient, "q"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "requests unread on a and b", func() bool { return Pending(a.Conn) && Pending(b.Conn) })

	// a's answer is far more than the sockets' buffers: its write blocks.
	wrote := make(chan error, 1)
	go func() {
		_ = a.SetWriteDeadline(time.Now().Add(time.Minute))
		_, err := a.Write(make([]byte, 16<<20))
		wrote <- err
	}()
	waitFor(t, "a's write stalled", func() bool { return g.Stalled() == 1 })

	_, d := from(4) // at the cap: a makes room
	if !a.Ended() || b.Ended() || d.Ended() {
		t.Fatalf("ended: a %v (want true), b %v, d %v", a.Ended(), b.Ended(), d.Ended())
	}
	select {
	case err := <-wrote:
		if err == nil {
			t.Fatal("a's stalled write completed")
		}
	case <-time.After(testWait):
		t.Fatal("a's stalled write not ended with it")
	}
	// A later deadline does not bring a's writes back.
	_ = a.SetWriteDeadline(time.Now().Add(time.Minute))
	if _, err := a.Write([]byte("x")); err == nil {
		t.Error("a write on a connection ended stalled went through")
	}
	a.NoLinger()
	a.Close()
	if g.Open() != 2 || ended.value() != 1 {
		t.Fatalf("open %d, ended %d; want 2, 1", g.Open(), ended.value())
	}
	// A write that completes (d's client reads it) leaves nothing stalled.
	if _, err := d.Write([]byte("answer")); err != nil {
		t.Fatal(err)
	}
	if g.Stalled() != 0 {
		t.Errorf("%d stalled after a write that completed", g.Stalled())
	}
}
