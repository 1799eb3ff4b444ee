package sessions

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"testing"
	"time"

	"github.com/ringlb/ringlb/balancer/acceptguard"
	"github.com/ringlb/ringlb/balancer/acceptguard/acceptguardtest"
	"github.com/ringlb/ringlb/configs"
)

// heapInUse is the heap in use after two collections: the second frees
// what sync.Pools held at the first (their victim caches) — a 4 MiB
// hand-off body kept by fasthttp's pool after another test, freed between
// two of a test's figures, counted against that test.
func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// declareBodies opens n connections to addr, each sending the head of a
// POST to path that announces declared body bytes, and one byte of it.
func declareBodies(t *testing.T, addr, path string, n, declared int) []net.Conn {
	t.Helper()
	return declareBodiesWith(t, addr, path, n, func(int) (int, string) { return declared, "" })
}

// declareBodiesWith is declareBodies where the i-th head announces
// length bytes and carries the header lines extra ("Name: value\r\n"...).
func declareBodiesWith(t *testing.T, addr, path string, n int, head func(i int) (length int, extra string)) []net.Conn {
	t.Helper()
	conns := make([]net.Conn, 0, n)
	for i := range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		_ = c.SetDeadline(time.Now().Add(testDeadline))
		length, extra := head(i)
		if _, err := fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n%s\r\nx", path, length, extra); err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	return conns
}

// settledHeap samples the heap until it stops growing (a few samples
// without growth) and returns its growth over base; a figure to log, not
// to assert on.
func settledHeap(base uint64) int64 {
	var last uint64
	still := 0
	for range 50 {
		h := heapInUse()
		if h <= last+1<<20 {
			still++
			if still == 3 {
				break
			}
		} else {
			still = 0
		}
		last = h
		time.Sleep(100 * time.Millisecond)
	}
	return int64(last) - int64(base)
}

// shortHandoffRead sets s.handoffRead for a test that waits for a
// hand-off head whose body never comes to be answered 408: at the
// handoffTime of a maxHandoffBody (9 s) each such wait was that long. It
// stays long enough for every head the test sends meanwhile to be
// answered while the slots are still held, on a busy machine.
func shortHandoffRead(s *Server) { s.handoffRead = 3 * time.Second }

// taken is the number of hand-off slots held at now.
func (g *bodyGate) taken(now time.Time) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := 0
	for _, sl := range g.slots {
		if sl.req != nil && now.Before(sl.until) {
			n++
		}
	}
	return n
}

// answers reads one answer from each of conns (each on a goroutine of its
// own, so an answer that waits does not hold the others up) and sends its
// status on the channel (0: the connection ended without one).
func answers(conns []net.Conn) <-chan int {
	ch := make(chan int, len(conns))
	for _, c := range conns {
		go func() {
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				ch <- 0
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			ch <- resp.StatusCode
		}()
	}
	return ch
}

// A request head of a hundred bytes announcing a large body must not make
// the data port allocate that body before any of it came. The attack:
// POST heads announcing 4 MiB and sending one byte of it. Before, fasthttp
// allocated the 4 MiB on every one and waited up to the read timeout
// (30 s) for the rest: 64 heads held +257 MiB of heap. Now a body over its
// path's limit is refused (413) on its head; hand-offs, the one large body
// the data port takes, are read at most handoffBodies at once, and the
// others answered 503 at once.
func TestDeclaredBodiesAllocateNothing(t *testing.T) {
	e := startEdge(t, configs.Edge{}, shortHandoffRead)
	const n, declared = 64, 4 << 20
	counts := func(ch <-chan int, want int) map[int]int {
		got := map[int]int{}
		for range want {
			select {
			case code := <-ch:
				got[code]++
			case <-time.After(testDeadline):
				t.Fatalf("%d answers of %d came: %v", len(got), want, got)
			}
		}
		return got
	}

	base := heapInUse()
	plain := answers(declareBodies(t, e.data, "/whoami", n, declared))
	if got := counts(plain, n); got[http.StatusRequestEntityTooLarge] != n {
		t.Errorf("heads announcing %d MiB to /whoami answered %v, want %d × 413", declared>>20, got, n)
	}
	t.Logf("%d heads announcing %d MiB to /whoami: heap +%d MiB", n, declared>>20, settledHeap(base)>>20)

	base = heapInUse()
	handoffs := answers(declareBodies(t, e.data, pathHandoff, n, declared))
	// The ones beyond the slots are answered at once; the others wait
	// for their bodies until their read deadline (408).
	if got := counts(handoffs, n-handoffBodies); got[http.StatusServiceUnavailable] != n-handoffBodies {
		t.Errorf("hand-off heads beyond the %d slots answered %v, want %d × 503", handoffBodies, got, n-handoffBodies)
	}
	t.Logf("%d hand-off heads announcing %d MiB, %d read: heap +%d MiB", n, declared>>20, handoffBodies, settledHeap(base)>>20)
	if got := counts(handoffs, handoffBodies); got[http.StatusRequestTimeout] != handoffBodies {
		t.Errorf("hand-offs whose body never came answered %v, want %d × 408", got, handoffBodies)
	}
	for reason, want := range map[string]float64{bodyTooLarge: n, bodyBusy: n - handoffBodies} {
		if got := labelledValue(t, e.s, "ringlb_edge_request_bodies_refused_total", reason); got != want {
			t.Errorf("ringlb_edge_request_bodies_refused_total{reason=%q} = %v, want %v", reason, got, want)
		}
	}

	// The slots are free again, and a head announcing more than a
	// hand-off may carry is refused as too large.
	over := answers(declareBodies(t, e.data, pathHandoff, 1, maxHandoffBody+1))
	if got := counts(over, 1); got[http.StatusRequestEntityTooLarge] != 1 {
		t.Errorf("a hand-off head announcing more than %d bytes answered %v, want 413", maxHandoffBody, got)
	}
	late := answers(declareBodies(t, e.data, pathHandoff, handoffBodies, declared))
	if got := counts(late, handoffBodies); got[http.StatusRequestTimeout] != handoffBodies {
		t.Errorf("hand-offs after the slots were freed answered %v, want %d × 408 (read, then timed out)", got, handoffBodies)
	}
}

// Low on memory, an edge reads no hand-off body: each is up to 4 MiB,
// allotted on its head, and four of them (from anyone: the signature is
// checked once the body has come) took 16 MiB of a process near its
// limit. They are answered 503 + Retry-After at once, before anything is
// allotted — the draining edge that sent one tries again (drain.go) —
// and counted with reason "memory"; once the memory is back a hand-off
// is read again.
func TestLowMemoryRefusesHandoffBodies(t *testing.T) {
	mem, release := acceptguardtest.Low(t)
	e := startEdge(t, configs.Edge{}, func(s *Server) {
		s.incoming.mem = mem
		shortHandoffRead(s)
	})
	const declared = maxHandoffBody

	base := heapInUse()
	low := answers(declareBodies(t, e.data, pathHandoff, handoffBodies, declared))
	held := settledHeap(base) // while the heads wait for their bodies, if they do
	got := map[int]int{}
	for range handoffBodies {
		select {
		case code := <-low:
			got[code]++
		case <-time.After(testDeadline):
			t.Fatalf("%d answers of %d came: %v", len(got), handoffBodies, got)
		}
	}
	t.Logf("low on memory, %d hand-off heads announcing %d MiB: answered %v; heap +%d MiB meanwhile", handoffBodies, declared>>20, got, held>>20)
	if got[http.StatusServiceUnavailable] != handoffBodies {
		t.Errorf("low on memory, hand-off heads answered %v, want %d × 503", got, handoffBodies)
	}
	if v := labelledValue(t, e.s, "ringlb_edge_request_bodies_refused_total", acceptguard.ReasonMemory); v != handoffBodies {
		t.Errorf(`ringlb_edge_request_bodies_refused_total{reason="memory"} = %v, want %d`, v, handoffBodies)
	}

	// The answer says when to try again.
	c := declareBodies(t, e.data, pathHandoff, 1, declared)[0]
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Errorf("low on memory, a hand-off head answered %s with Retry-After %q, want 503 with one", resp.Status, resp.Header.Get("Retry-After"))
	}

	release()
	back := answers(declareBodies(t, e.data, pathHandoff, 1, declared))
	select {
	case code := <-back:
		if code != http.StatusRequestTimeout {
			t.Errorf("a hand-off head once the memory is back answered %d, want 408 (read, then timed out)", code)
		}
	case <-time.After(testDeadline):
		t.Fatal("no answer to a hand-off head once the memory is back")
	}
}
