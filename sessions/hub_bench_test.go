package sessions

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ringlb/ringlb/configs"
)

// BenchmarkHubBroadcast is the relay core alone, without sockets: a pooled
// frame is filled and encoded, fanned out to n-1 queues under the session
// lock, and released by each "writer". It is the part of a delivery the edge
// controls; BenchmarkFanout adds the kernel and the library's reader.
func BenchmarkHubBroadcast(b *testing.B) {
	payload := []byte("an edit: insert 'x' at line 42, column 7 (64 bytes of payload).")
	for _, n := range []int{2, 8, 64} {
		b.Run(fmt.Sprintf("participants=%d", n), func(b *testing.B) {
			m, err := newMetrics(prometheus.NewRegistry())
			if err != nil {
				b.Fatal(err)
			}
			h := newHub(n, m)
			var frames framePool
			var budget byteBudget // counted, as on an edge
			budget.limit.Store(configs.DefaultMaxQueuedBytes)
			ps := make([]*participant, n)
			for i := range ps {
				ps[i] = &participant{}
				ps[i].out.limit = 1
				ps[i].out.budget = &budget
				ps[i].out.writing = true // no writer goroutine: the loop below takes the frames
				if err := h.join([]byte("bench"), ps[i]); err != nil {
					b.Fatal(err)
				}
			}
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				f := frames.get()
				f.kind = 2
				f.buf = append(f.buf, payload...)
				f.encode()
				f.readAt = time.Now()
				h.broadcast(ps[0], f)
				f.release()
				for _, p := range ps[1:] {
					_, f, _ := p.nextJob()
					f.release()
				}
			}
			b.StopTimer()
			runtime.ReadMemStats(&after)
			deliveries := float64(b.N * (n - 1))
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/deliveries, "ns/delivery")
			b.ReportMetric(float64(after.Mallocs-before.Mallocs)/deliveries, "allocs/delivery")
		})
	}
}

// BenchmarkIdleParticipant measures what an idle participant costs the
// edge, in raw mode and in ringlb.v1: 1000 participants (500 sessions of 2,
// as bench/edge-direct.sh) join and sit idle. The clients run in a child
// process (this test binary, TestIdleClients), so every figure is the
// edge's alone: per participant, the Go heap and the goroutine stacks
// (after two GCs) and the growth of the process's RSS. Kernel socket
// buffers are in none of them. Run with -benchtime=1x, one mode per
// process for a meaningful RSS (-bench 'IdleParticipant/mode=v1$': memory the
// first mode freed is reused by the second without growing RSS); with
// IDLE_HEAP_PROFILE=FILE it writes a heap profile while they are connected.
func BenchmarkIdleParticipant(b *testing.B) {
	for _, mode := range []string{"raw", "v1"} {
		b.Run("mode="+mode, func(b *testing.B) {
			for range b.N {
				benchmarkIdle(b, mode)
			}
		})
	}
}

func benchmarkIdle(b *testing.B, mode string) {
	const sessions, per = 500, 2
	const n = sessions * per
	e := startEdge(b, configs.Edge{}, nil)
	// Warm up: the first connection pays for pools and server state.
	if mode == "v1" {
		rawJoinV1(b, e, "warm-up")
	} else {
		rawJoinKey(b, e, "warm-up")
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	rssBefore := rss(b)
	goroutinesBefore := runtime.NumGoroutine()

	startIdleClients(b, e.data, mode, sessions, per)
	for range n {
		e.waitJoined(b)
	}
	e.waitIdle(b, n+1)
	runtime.GC()
	runtime.GC() // a second cycle shrinks stacks grown during the join
	runtime.ReadMemStats(&after)
	rssAfter := rss(b)
	if path := os.Getenv("IDLE_HEAP_PROFILE"); path != "" {
		writeHeapProfile(b, path)
	}
	heap := float64(after.HeapInuse) - float64(before.HeapInuse)
	stacks := float64(after.StackInuse) - float64(before.StackInuse)
	b.ReportMetric(heap/n, "heap-B/participant")
	b.ReportMetric(stacks/n, "stack-B/participant")
	b.ReportMetric((heap+stacks)/n, "go-B/participant")
	b.ReportMetric(float64(rssAfter-rssBefore)/n, "rss-B/participant")
	b.ReportMetric(float64(runtime.NumGoroutine()-goroutinesBefore)/n, "goroutines/participant")
	if _, c := e.s.Stats(); c != n+1 {
		b.Fatalf("%d connections, want %d", c, n+1)
	}
}

// idleClientsEnv names the edge a TestIdleClients child connects to.
const idleClientsEnv = "RINGLB_IDLE_CLIENTS"

// startIdleClients starts a child process (TestIdleClients) holding
// sessions × per idle WebSockets to addr (mode raw or v1), and returns once
// every handshake is answered. The connections close when the benchmark
// ends (the child exits when its stdin closes).
func startIdleClients(tb testing.TB, addr, mode string, sessions, per int) {
	tb.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestIdleClients$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s,%s,%d,%d", idleClientsEnv, addr, mode, sessions, per))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		stdin.Close()
		_ = cmd.Wait()
	})
	ready := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if sc.Text() == "idle clients ready" {
				ready <- nil
				_, _ = io.Copy(io.Discard, stdout)
				return
			}
		}
		ready <- fmt.Errorf("idle clients ended before connecting: %v", sc.Err())
	}()
	select {
	case err := <-ready:
		if err != nil {
			tb.Fatal(err)
		}
	case <-time.After(4 * testDeadline):
		tb.Fatal("idle clients never ready")
	}
}

// TestIdleClients is BenchmarkIdleParticipant's client process: it opens
// the WebSockets idleClientsEnv describes, says so on stdout, and holds
// them until stdin closes. Skipped in a normal run.
func TestIdleClients(t *testing.T) {
	spec := os.Getenv(idleClientsEnv)
	if spec == "" {
		t.Skip("the client process of BenchmarkIdleParticipant")
	}
	var addr, mode string
	var sessions, per int
	if _, err := fmt.Sscanf(strings.ReplaceAll(spec, ",", " "), "%s %s %d %d", &addr, &mode, &sessions, &per); err != nil {
		t.Fatalf("%s=%q: %v", idleClientsEnv, spec, err)
	}
	proto := ""
	if mode == "v1" {
		proto = "Sec-WebSocket-Protocol: " + protocolV1 + "\r\n"
	}
	conns := make([]net.Conn, 0, sessions*per)
	for i := range sessions * per {
		c, err := net.DialTimeout("tcp", addr, testDeadline)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		_ = c.SetDeadline(time.Now().Add(testDeadline))
		req := "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
			"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" + proto +
			"ctstickiness: idle-" + strconv.Itoa(i/per) + "\r\n\r\n"
		if _, err := io.WriteString(c, req); err != nil {
			t.Fatal(err)
		}
		// Only the head: what follows (welcome, presence) stays unread.
		var head []byte
		one := make([]byte, 1)
		for len(head) < 4 || string(head[len(head)-4:]) != "\r\n\r\n" {
			if _, err := c.Read(one); err != nil {
				t.Fatal(err)
			}
			head = append(head, one[0])
		}
		if !strings.HasPrefix(string(head), "HTTP/1.1 101 ") {
			t.Fatalf("upgrade %d: %q", i, head)
		}
	}
	fmt.Println("idle clients ready")
	_, _ = io.Copy(io.Discard, os.Stdin)
	for _, c := range conns {
		c.Close()
	}
}

// writeHeapProfile writes the heap profile (after a GC) to path.
func writeHeapProfile(tb testing.TB, path string) {
	tb.Helper()
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		tb.Fatal(err)
	}
}

// rss returns the process's resident set size in bytes (Linux).
func rss(tb testing.TB) int64 {
	tb.Helper()
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		tb.Skip("no /proc/self/statm:", err)
	}
	fields := strings.Fields(string(b))
	pages, err := strconv.ParseInt(fields[1], 10, 64)
	if err != nil {
		tb.Fatal(err)
	}
	return pages * int64(os.Getpagesize())
}

// waitIdle waits until the edge has n connections and each is idle: nothing
// queued, no writer running, and (where readers park) no reader either.
func (e *testEdge) waitIdle(tb testing.TB, n int) {
	tb.Helper()
	deadline := time.Now().Add(testDeadline)
	for {
		idle := 0
		e.s.mu.Lock()
		for p := range e.s.conns {
			p.out.mu.Lock()
			if !p.out.writing && p.out.n == 0 && (!parkSupported || p.reader.Load() == readerParked) {
				idle++
			}
			p.out.mu.Unlock()
		}
		e.s.mu.Unlock()
		if idle == n {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%d of %d connections idle", idle, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
