package sessions

import (
	"fmt"
	"net"
	"os"
	"runtime"
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
			ps := make([]*participant, n)
			for i := range ps {
				ps[i] = &participant{}
				ps[i].out.limit = 1
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

// BenchmarkIdleParticipant measures the memory an idle participant costs:
// 1000 participants join (in 1000 sessions) and sit idle; reported per
// participant are the Go heap and goroutine stacks, and the process RSS,
// after a GC. Both sides are in this process, so the figures include the
// client's net.Conn (a few hundred bytes): an upper bound for the edge.
// Kernel socket buffers are not in RSS. Run with -benchtime=1x.
func BenchmarkIdleParticipant(b *testing.B) {
	const n = 1000
	for range b.N {
		e := startEdge(b, configs.Edge{}, nil)
		// Warm up: the first connection pays for pools and server state.
		rawJoinKey(b, e, "warm-up")

		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		rssBefore := rss(b)
		conns := make([]net.Conn, 0, n)
		for i := range n {
			conns = append(conns, rawJoinKey(b, e, "idle-"+strconv.Itoa(i)))
		}
		runtime.GC()
		runtime.GC() // a second cycle shrinks stacks grown during the join
		runtime.ReadMemStats(&after)
		rssAfter := rss(b)
		heap := float64(after.HeapInuse) - float64(before.HeapInuse)
		stacks := float64(after.StackInuse) - float64(before.StackInuse)
		b.ReportMetric(heap/n, "heap-B/participant")
		b.ReportMetric(stacks/n, "stack-B/participant")
		b.ReportMetric((heap+stacks)/n, "go-B/participant")
		b.ReportMetric(float64(rssAfter-rssBefore)/n, "rss-B/participant")
		if _, c := e.s.Stats(); c != n+1 {
			b.Fatalf("%d connections, want %d", c, n+1)
		}
		runtime.KeepAlive(conns)
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
