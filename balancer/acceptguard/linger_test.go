package acceptguard

import (
	"bytes"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

// lingeringNow is how many connections l is lingering on.
func lingeringNow(l *Listener) int {
	l.lingering.mu.Lock()
	defer l.lingering.mu.Unlock()
	n := 0
	for i := range l.lingering.slots {
		if l.lingering.slots[i].c != nil {
			n++
		}
	}
	return n
}

// lingerForever makes only the client (or the listener's Close) end a
// linger of g, so that nothing here depends on how fast the test runs.
func lingerForever(g *Listener) { g.lingering.timeout = time.Hour }

// closeAsync closes c on a goroutine; the channel gets Close's error.
func closeAsync(c net.Conn) <-chan error {
	done := make(chan error, 1)
	go func() { done <- c.Close() }()
	return done
}

// waitClosed waits for a closeAsync.
func waitClosed(t *testing.T, done <-chan error, what string) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("%s: Close: %v", what, err)
		}
	case <-time.After(testWait):
		t.Fatalf("%s: Close has not returned", what)
	}
}

// answerAndClose has server read part of what client sent, answer and
// close, the rest unread: what fasthttp does with a head over its buffer.
func answerAndClose(t *testing.T, client, server net.Conn) <-chan error {
	t.Helper()
	if _, err := client.Write(bytes.Repeat([]byte("h"), 8<<10)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(server, make([]byte, 1<<10)); err != nil {
		t.Fatal(err)
	}
	if _, err := server.Write([]byte("answer")); err != nil {
		t.Fatal(err)
	}
	return closeAsync(server)
}

// A connection the server closes with bytes unread lingers: the client
// reads the answer and the end, may still send (read and dropped), and is
// never reset; the connection counts until its socket is closed. Closed at
// once, the same exchange is reset (the NoLinger case below).
func TestCloseLingers(t *testing.T) {
	g := Wrap(listen(t), Config{})
	defer g.Close()
	lingerForever(g)
	next := acceptNext(t, g)
	client := dial(t, g.Addr().String())
	closed := answerAndClose(t, client, next())
	got, err := io.ReadAll(client)
	if err != nil || string(got) != "answer" {
		t.Fatalf("client read %q, %v; want the answer and the server's FIN", got, err)
	}
	if _, err := client.Write(bytes.Repeat([]byte("h"), 8<<10)); err != nil {
		t.Fatalf("client's write after the answer: %v", err)
	}
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) before the client closed", err)
	default:
	}
	if g.Open() != 1 || lingeringNow(g) != 1 {
		t.Errorf("while lingering: open %d, lingering %d; want 1 and 1", g.Open(), lingeringNow(g))
	}
	client.Close()
	waitClosed(t, closed, "lingering connection")
	if g.Open() != 0 || lingeringNow(g) != 0 {
		t.Errorf("after the client closed: open %d, lingering %d; want 0 and 0", g.Open(), lingeringNow(g))
	}
}

// Close closes at once a connection handed over (NoLinger: a WebSocket
// session, a tunnel) and one whose client is gone (its FIN read).
func TestCloseAtOnce(t *testing.T) {
	g := Wrap(listen(t), Config{})
	defer g.Close()
	lingerForever(g)
	next := acceptNext(t, g)

	t.Run("NoLinger", func(t *testing.T) {
		client := dial(t, g.Addr().String())
		server := next()
		server.(*Conn).NoLinger()
		waitClosed(t, answerAndClose(t, client, server), "NoLinger")
		// Closed at once with bytes unread: the reset lingering avoids.
		if _, err := io.ReadAll(client); !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("client's read: %v, want a reset (closed at once, bytes unread)", err)
		}
	})
	t.Run("client gone", func(t *testing.T) {
		client := dial(t, g.Addr().String())
		server := next()
		client.Close()
		if _, err := io.ReadAll(server); err != nil {
			t.Fatal(err)
		}
		waitClosed(t, closeAsync(server), "client gone")
	})
	if g.Open() != 0 {
		t.Errorf("open %d, want 0", g.Open())
	}
}

// At most lingerMax connections of a listener linger at once; beyond, a
// connection closes at once. Closing the listener ends every linger.
func TestLingerBounded(t *testing.T) {
	g := Wrap(listen(t), Config{})
	defer g.Close()
	lingerForever(g)
	next := acceptNext(t, g)
	done := make(chan error, lingerMax+1)
	for range lingerMax + 1 {
		dial(t, g.Addr().String()) // never closes before the test ends
		c := next()
		go func() { done <- c.Close() }()
	}
	dial(t, g.Addr().String())
	last := next() // closed after the listener
	select {
	case <-done: // beyond the bound
	case <-time.After(testWait):
		t.Fatalf("no Close returned of %d; %d lingering", lingerMax+1, lingeringNow(g))
	}
	if n := lingeringNow(g); n != lingerMax || g.Open() != lingerMax+1 {
		t.Errorf("lingering %d, open %d; want %d and %d", n, g.Open(), lingerMax, lingerMax+1)
	}
	g.Close()
	for i := range lingerMax {
		select {
		case <-done:
		case <-time.After(testWait):
			t.Fatalf("%d of %d lingering Closes returned after the listener closed", i, lingerMax)
		}
	}
	if g.Open() != 1 || lingeringNow(g) != 0 {
		t.Errorf("after the listener closed: open %d, lingering %d; want 1 (not closed yet) and 0", g.Open(), lingeringNow(g))
	}
	// From now on connections close at once.
	waitClosed(t, closeAsync(last), "a connection closed after its listener")
}

// A linger drops at most lingerBytes of what the client still sends.
func TestLingerDropsAtMost(t *testing.T) {
	g := Wrap(listen(t), Config{})
	defer g.Close()
	lingerForever(g)
	next := acceptNext(t, g)
	client := dial(t, g.Addr().String())
	closed := answerAndClose(t, client, next())
	if got, err := io.ReadAll(client); err != nil || string(got) != "answer" {
		t.Fatalf("client read %q, %v", got, err)
	}
	wrote := make(chan error, 1)
	go func() {
		_, err := client.Write(bytes.Repeat([]byte("h"), 4*lingerBytes))
		wrote <- err
	}()
	waitClosed(t, closed, "a client sending more than lingerBytes")
	select {
	case <-wrote: // the rest was reset, or sits in buffers
	case <-time.After(testWait):
		t.Fatal("client's write still blocked")
	}
}

// Every connection a server closes first goes through the linger: it
// allocates nothing (the drop reads through the slot, into io.Discard's
// pooled buffer).
func TestLingeringCloseAllocs(t *testing.T) {
	g := Wrap(listen(t), Config{})
	defer g.Close()
	next := acceptNext(t, g)
	const runs = 100
	conns := make([]net.Conn, runs+1) // AllocsPerRun runs once more to warm up
	for i := range conns {
		client := dial(t, g.Addr().String())
		conns[i] = next()
		// What the server leaves unread, then the client's FIN: the linger
		// drops it and ends without waiting.
		if _, err := client.Write([]byte("GET / HTTP/1.1\r\n")); err != nil {
			t.Fatal(err)
		}
		client.Close()
	}
	i := 0
	allocs := testing.AllocsPerRun(runs, func() {
		conns[i].Close()
		i++
	})
	if allocs != 0 {
		t.Errorf("a lingering Close allocates %v times", allocs)
	}
	if g.Open() != 0 {
		t.Errorf("open %d after every Close, want 0", g.Open())
	}
}
