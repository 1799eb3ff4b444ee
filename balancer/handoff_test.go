//go:build linux

package balancer

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/fasthttp/websocket"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/ringlb/ringlb/balancer/handoff"
	"github.com/ringlb/ringlb/balancer/ring"
	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health"
	"github.com/ringlb/ringlb/health/healthtest"
)

// newHandOffBalancer is a balancer routing to edgeURL, serving ln.
func newHandOffBalancer(t *testing.T, edgeURL string, ln net.Listener) *Balancer {
	t.Helper()
	return newHandOffBalancerWith(t, configs.Balancer{}, edgeURL, ln)
}

func newHandOffBalancerWith(t *testing.T, cfg configs.Balancer, edgeURL string, ln net.Listener) *Balancer {
	t.Helper()
	return newHandOffBalancerNamed(t, cfg, "raw", edgeURL, ln)
}

// newHandOffBalancerNamed is a balancer routing to edgeURL under the name
// edge, serving ln.
func newHandOffBalancerNamed(t *testing.T, cfg configs.Balancer, edge, edgeURL string, ln net.Listener) *Balancer {
	t.Helper()
	r := ring.New(ring.DefaultConfig())
	if edgeURL != "" {
		r.Update([]ring.Member{{Name: edge, URL: edgeURL, Weight: 1}})
	}
	return newHandOffBalancerOn(t, cfg, r, ln)
}

// newHandOffBalancerOn is a balancer of cfg routing by r, serving ln until
// the test ends.
func newHandOffBalancerOn(t *testing.T, cfg configs.Balancer, r *ring.Ring, ln net.Listener) *Balancer {
	t.Helper()
	cfg.Provision()
	b, err := New(cfg, "bal", r, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = b.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = b.Shutdown(ctx)
	})
	return b
}

// sameSocket returns a second listener on ln's socket, as a new process
// inheriting it has.
func sameSocket(t *testing.T, ln net.Listener) net.Listener {
	t.Helper()
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	l2, err := net.FileListener(f)
	if err != nil {
		t.Fatal(err)
	}
	return l2
}

// Every tunnel of the relay moves to the new balancer in the middle of its
// traffic: small echo tunnels and one saturated by a bulk transfer whose
// reader is paused during the hand-off (so the old relay holds bytes it
// read and could not write yet). Nothing is lost, duplicated or reordered,
// the new balancer carries them all, and the counters continue.
func TestHandOffMovesEveryTunnel(t *testing.T) {
	edge := startRawEdge(t)
	lnA, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lnA.Addr().String()
	lnB := sameSocket(t, lnA)
	old := newHandOffBalancer(t, edge, lnA)

	const small = 20
	conns := make([]net.Conn, small)
	readers := make([]io.Reader, small)
	echo := func(i int, msg string) error {
		conns[i].SetDeadline(time.Now().Add(20 * time.Second))
		if _, err := io.WriteString(conns[i], msg); err != nil {
			return err
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(readers[i], got); err != nil {
			return err
		}
		if string(got) != msg {
			return fmt.Errorf("echo %q, want %q", got, msg)
		}
		return nil
	}
	for i := range small {
		c, br := openRawTunnel(t, addr)
		defer c.Close()
		conns[i], readers[i] = c, br
		if err := echo(i, fmt.Sprintf("before %d;", i)); err != nil {
			t.Fatal(err)
		}
	}

	// The bulk tunnel: the client writes size bytes while reading the echo
	// back; reading pauses until the hand-off is over.
	const size = 48 << 20
	data := pattern(size)
	want := sha256.Sum256(data)
	bulk, bulkR := openRawTunnel(t, addr)
	defer bulk.Close()
	bulk.SetDeadline(time.Now().Add(120 * time.Second))
	go bulk.Write(data)
	resume := make(chan struct{})
	bulkDone := make(chan error, 1)
	go func() {
		h := sha256.New()
		if _, err := io.CopyN(h, bulkR, 1<<20); err != nil {
			bulkDone <- err
			return
		}
		<-resume
		if _, err := io.CopyN(h, bulkR, size-1<<20); err != nil {
			bulkDone <- err
			return
		}
		if !bytes.Equal(h.Sum(nil), want[:]) {
			bulkDone <- errors.New("bulk bytes differ after the hand-off")
			return
		}
		bulkDone <- nil
	}()
	waitTunnels(t, old, small+1)
	// The paused reader fills the buffers until the relay holds bytes it
	// cannot write: pending for a while without a break (while the kernel
	// buffers still take bytes, pending bytes come and go).
	held := 0
	for deadline := time.Now().Add(30 * time.Second); held < 50; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the relay never kept pending bytes")
		}
		if relayPending(old) > 0 {
			held++
		} else {
			held = 0
		}
	}

	next := newHandOffBalancer(t, "", lnB)
	a, b := stateHandedOver(t, old, next)
	if n := next.ring.Snapshot().Len(); n != 1 {
		t.Fatalf("new balancer's ring has %d members, want the old one's 1", n)
	}
	// Until the old balancer's table is in, the new one does not route.
	if next.table.routable() {
		t.Error("the new balancer routes before the old one's table arrived")
	}
	// A key with no tunnel, placed before the hand-off, travels too.
	idle := xxhash.Sum64String("idle")
	if r := old.table.record(idle, "raw", placement{at: time.Now().UnixNano()}, netip.MustParseAddr("127.0.0.9"), nil); r != recorded {
		t.Fatalf("record an idle key: %d", r)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, got := handedOff(ctx, t, old, a, takeOverAsync(next, b))
	if got.err != nil {
		t.Fatal(got.err)
	}
	t.Logf("hand-off: %+v, taken %d", res, got.n)
	if res.Moved != small+1 || got.n != small+1 || res.Kept != 0 || res.Closed != 0 {
		t.Fatalf("moved %d, taken %d, kept %d, closed %d; want %d moved and taken", res.Moved, got.n, res.Kept, res.Closed, small+1)
	}
	if res.PendingBytes == 0 {
		t.Error("the saturated tunnel had no pending bytes to move: the test did not exercise them")
	}
	if err := old.Shutdown(ctx); err != nil {
		t.Fatalf("old balancer's shutdown had to close something: %v", err)
	}
	close(resume)
	for i := range small {
		if err := echo(i, fmt.Sprintf("after %d;", i)); err != nil {
			t.Fatalf("tunnel %d after the hand-off: %v", i, err)
		}
	}
	if err := <-bulkDone; err != nil {
		t.Fatal(err)
	}
	if n := next.Tunnels(); n != small+1 {
		t.Errorf("new balancer carries %d tunnels, want %d", n, small+1)
	}
	if v := value(next.metrics.connectionsActive.WithLabelValues("raw")); v != small+1 {
		t.Errorf("connections_active{edge=raw} = %v on the new balancer, want %d", v, small+1)
	}
	if v := value(next.metrics.requestsTotal.WithLabelValues("raw", "101")); v != small+1 {
		t.Errorf("requests_total{edge=raw,code=101} = %v on the new balancer, want the old one's %d", v, small+1)
	}
	// The table came along, the moved tunnels counted in it.
	if !next.table.routable() {
		t.Error("the new balancer does not route after the hand-off")
	}
	snap := next.ring.Snapshot()
	if v, ok := next.table.view(xxhash.Sum64String("bench"), snap); !ok || v.Backend != "raw" || v.OpenHere != small+1 {
		t.Errorf("the moved tunnels' key in the new table: %+v (found %v), want on raw with %d open here", v, ok, small+1)
	}
	if v, ok := next.table.view(idle, snap); !ok || v.Backend != "raw" || v.OpenHere != 0 || !v.LiveUntil.After(time.Now()) {
		t.Errorf("the idle key in the new table: %+v (found %v), want on raw, live, none open", v, ok)
	}
	// A new tunnel on the shared listener is the new balancer's.
	c, br := openRawTunnel(t, addr)
	defer c.Close()
	conns = append(conns, c)
	readers = append(readers, br)
	if err := echo(small, "new;"); err != nil {
		t.Fatal(err)
	}
	waitTunnels(t, next, small+2)
	// Closing moved tunnels releases them in the new balancer.
	for _, c := range conns {
		c.Close()
	}
	bulk.Close()
	waitTunnels(t, next, 0)
	if v, ok := next.table.view(xxhash.Sum64String("bench"), next.ring.Snapshot()); !ok || v.OpenHere != 0 {
		t.Errorf("after every tunnel closed, the key in the new table: %+v (found %v), want none open (lingering)", v, ok)
	}
}

// TLS tunnels cannot move (crypto/tls keeps the session keys in the
// process): a hand-off keeps them in the old balancer, where they go on
// until its Shutdown closes them at its deadline.
func TestHandOffKeepsTLSTunnels(t *testing.T) {
	certFile, keyFile, pool := writeTestCert(t)
	edge := startRawEdge(t)
	ln := mustListen(t)
	old := newHandOffBalancerWith(t, configs.Balancer{TLS: configs.TLS{CertFile: certFile, KeyFile: keyFile}}, edge, ln)
	var conns []*tls.Conn
	for i := range 3 {
		c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: pool})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(20 * time.Second))
		io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nctstickiness: k\r\n\r\n")
		head := make([]byte, 0, 256)
		buf := make([]byte, 1)
		for !bytes.HasSuffix(head, []byte("\r\n\r\n")) {
			if _, err := c.Read(buf); err != nil {
				t.Fatalf("tunnel %d: %v", i, err)
			}
			head = append(head, buf[0])
		}
		conns = append(conns, c)
	}
	waitTunnels(t, old, 3)
	a, b, err := handoff.Pair()
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	defer b.Close()
	next := newHandOffBalancer(t, "", mustListen(t))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, got := handedOff(ctx, t, old, a, takeOverAsync(next, b))
	if res.Moved != 0 || res.Kept != 3 || got.n != 0 {
		t.Fatalf("hand-off of TLS tunnels: %+v; want all 3 kept", res)
	}
	for i, c := range conns {
		msg := fmt.Sprintf("still here %d", i)
		io.WriteString(c, msg)
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(c, got); err != nil || string(got) != msg {
			t.Fatalf("kept TLS tunnel %d: %q %v", i, got, err)
		}
	}
	stopCtx, stop := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer stop()
	if err := old.Shutdown(stopCtx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("shutdown with kept tunnels: %v, want the deadline (it closed them)", err)
	}
	for i, c := range conns {
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Errorf("TLS tunnel %d still open after the old balancer's shutdown", i)
		}
	}
}

// A tunnel record survives encoding; the parser refuses lengths beyond the
// limits and records whose lengths do not add up.
func TestMovedRecord(t *testing.T) {
	m := movedTunnel{edge: "edge-1", key: "k", start: time.Unix(0, 1234), lastActive: 99,
		bytes: [2]uint64{7, 8}, clientEOF: true, counted: true, toClient: []byte("abc"), toEdge: []byte("de")}
	got, err := decodeMoved(m.encode())
	if err != nil {
		t.Fatal(err)
	}
	if got.edge != m.edge || got.key != m.key || !got.start.Equal(m.start) || got.lastActive != 99 || got.bytes != m.bytes ||
		!got.clientEOF || got.edgeEOF || !got.counted || string(got.toClient) != "abc" || string(got.toEdge) != "de" {
		t.Fatalf("round trip: %+v, want %+v", got, m)
	}
	// A record of an earlier release has no movedCounted, and flag bits
	// this release does not know are ignored, as an earlier one ignores
	// movedCounted.
	earlier := m.encode()
	earlier[1] = movedClientEOF | 0x80
	if got, err := decodeMoved(earlier); err != nil || got.counted || !got.clientEOF {
		t.Fatalf("a record without movedCounted, with an unknown flag: %+v %v", got, err)
	}
	big := m
	big.toEdge = make([]byte, maxMovedPending+1)
	long := m.encode()
	for _, bad := range [][]byte{
		nil,
		long[:10],
		append(long, 'x'),
		big.encode(),
		append([]byte{9}, long[1:]...),
	} {
		if _, err := decodeMoved(bad); !errors.Is(err, errBadRecord) {
			t.Errorf("record of %d bytes: %v, want errBadRecord", len(bad), err)
		}
	}
}

// The counters a new balancer carries on from are the old one's, added to
// its own (an odd status's under codeOther); a series with unknown labels
// is refused without a panic.
func TestCarriedCounters(t *testing.T) {
	oldB := newHandOffBalancer(t, "", mustListen(t))
	newB := newHandOffBalancer(t, "", mustListen(t))
	oldB.metrics.requestsTotal.WithLabelValues("e", "200").Add(5)
	newB.metrics.requestsTotal.WithLabelValues("e", "200").Add(1)
	p, err := oldB.countersPayload()
	if err != nil {
		t.Fatal(err)
	}
	if err := newB.addCounters(p); err != nil {
		t.Fatal(err)
	}
	if v := value(newB.metrics.requestsTotal.WithLabelValues("e", "200")); v != 6 {
		t.Errorf("requests_total = %v, want 6", v)
	}
	// A release that labelled each odd status its own way hands them on
	// under codeOther.
	odd := []byte(`[{"name":"ringlb_balancer_requests_total","labels":{"edge":"e","code":"999"},"value":2},` +
		`{"name":"ringlb_balancer_requests_total","labels":{"edge":"e","code":"600"},"value":3}]`)
	if err := newB.addCounters(odd); err != nil {
		t.Fatal(err)
	}
	if v := value(newB.metrics.requestsTotal.WithLabelValues("e", codeOther)); v != 5 {
		t.Errorf("requests_total{code=%q} = %v, want 5", codeOther, v)
	}
	bad := []byte(`[{"name":"ringlb_balancer_requests_total","labels":{"nope":"x"},"value":1}]`)
	if err := newB.addCounters(bad); err == nil || !strings.Contains(err.Error(), "requests_total") {
		t.Errorf("unknown labels: %v", err)
	}
}

func mustListen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// value reads a counter's or a gauge's current value.
func value(m prometheus.Metric) float64 {
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		return -1
	}
	if d.Counter != nil {
		return d.Counter.GetValue()
	}
	return d.Gauge.GetValue()
}

// relayPending is how many bytes b's relay has read and not yet written.
func relayPending(b *Balancer) int {
	n := 0
	for _, l := range b.relay.loops {
		l.mu.Lock()
		for _, e := range l.ends {
			n += len(e.pending)
		}
		l.mu.Unlock()
	}
	return n
}

// Tunnels taken over count against the new balancer's limits as if it had
// accepted them: a client at its max_connections_per_ip before the upgrade
// is still at it after, and the total counts them too.
func TestHandOffKeepsLimits(t *testing.T) {
	edge := startRawEdge(t)
	lnA := mustListen(t)
	addr := lnA.Addr().String()
	lnB := sameSocket(t, lnA)
	cfg := configs.Balancer{Limits: configs.Limits{MaxConnectionsPerIP: 3}}
	old := newHandOffBalancerWith(t, cfg, edge, lnA)
	for range 3 {
		c, _ := openRawTunnel(t, addr)
		defer c.Close()
	}
	waitTunnels(t, old, 3)
	a, b, err := handoff.Pair()
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	defer b.Close()
	next := newHandOffBalancerWith(t, cfg, edge, lnB)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, got := handedOff(ctx, t, old, a, takeOverAsync(next, b)); got.n != 3 {
		t.Fatalf("took %d tunnels, want 3", got.n)
	}
	if open := next.limiterOrNil(time.Second).guard.Open(); open != 3 {
		t.Errorf("new balancer counts %d open connections, want the 3 taken over", open)
	}
	// A fourth connection from the same address: refused by the new one.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nctstickiness: k\r\n\r\n")
	line := make([]byte, 12)
	if _, err := io.ReadFull(c, line); err != nil || string(line) != "HTTP/1.1 429" {
		t.Fatalf("fourth connection from a client at its limit: %q %v, want 429", line, err)
	}
}

// A second Shutdown (the hand-off path stops a balancer after HandOff, and
// its owner may stop it again) closes nothing that is not the balancer's:
// the relay's descriptors, closed by number, are closed once.
func TestShutdownTwiceClosesNothingElse(t *testing.T) {
	b, _ := startRawBalancer(t, configs.Balancer{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := b.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	// New descriptors take the lowest numbers free: the relay's own.
	var files []*os.File
	for range 8 {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		defer w.Close()
		files = append(files, w)
	}
	if err := b.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	for i, w := range files {
		if _, err := w.Write([]byte{1}); err != nil {
			t.Fatalf("pipe %d (fd %d) broken by the second Shutdown: %v", i, w.Fd(), err)
		}
	}
}

// The new process starts from the old one's view: the same ring, and each
// static edge's monitor state — an edge the old one saw down stays off the
// new one's ring (a fresh monitor would start it up until Fall checks fail).
func TestHandOffState(t *testing.T) {
	old := newHandOffBalancer(t, startRawEdge(t), mustListen(t))
	dead := mustListen(t)
	deadAddr := dead.Addr().String()
	dead.Close()
	_, port, _ := net.SplitHostPort(deadAddr)
	mon := configs.Monitor{Type: configs.MonitorTCP, Interval: configs.Duration(20 * time.Millisecond), Timeout: configs.Duration(500 * time.Millisecond), Rise: 2, Fall: 1}
	mon.Port, _ = strconv.Atoi(port)
	edges := []configs.StaticEdge{{Name: "gone", URL: "http://" + deadAddr, Monitor: &mon}}
	st := newStaticEdges(edges, nil, nil, nil, nil, nil)
	defer st.Close()
	old.static.Store(st)
	for deadline := time.Now().Add(10 * time.Second); len(st.Members()) != 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the dead static edge never went down")
		}
	}
	a, b, err := handoff.Pair()
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	defer b.Close()
	// The new process's monitor is slow to take the edge down (Fall 100):
	// without the old state the edge would be on the ring for 100 checks.
	slow := mon
	slow.Fall = 100
	next := newHandOffBalancerWith(t, configs.Balancer{Edges: []configs.StaticEdge{{Name: "gone", URL: "http://" + deadAddr, Monitor: &slow}}}, "", mustListen(t))
	go old.SendState(a)
	if err := next.ReceiveState(b); err != nil {
		t.Fatal(err)
	}
	if got, want := next.ring.Snapshot().Members(), old.ring.Snapshot().Members(); !slices.Equal(got, want) {
		t.Errorf("ring %v, want the old one's %v", got, want)
	}
	if m := next.static.Load().Members(); len(m) != 0 {
		t.Errorf("a static edge the old process saw down is on the new ring from the start: %v", m)
	}
}

// A hand-off carries the tunnels whatever the table beside them holds: a
// backend named as the config allows ("app:7101": `ringlb check` asks only
// for a unique name) travels in the table like any other, and a table part
// the new process cannot read (a confused old process) costs that part's
// entries, not the tunnels that follow. Before, the new process stopped
// reading at such a part, and every tunnel sent after it was closed.
func TestHandOffCarriesTunnelsPastTheTable(t *testing.T) {
	for _, tc := range []struct {
		name, edge string
		badPart    bool
	}{
		{"a backend named as the config allows", "app:7101", false},
		{"an unreadable table part first", "raw", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			edge := startRawEdge(t)
			lnA := mustListen(t)
			addr := lnA.Addr().String()
			lnB := sameSocket(t, lnA)
			old := newHandOffBalancerNamed(t, configs.Balancer{}, tc.edge, edge, lnA)
			const n = 5
			conns := make([]net.Conn, n)
			readers := make([]*bufio.Reader, n)
			for i := range n {
				conns[i], readers[i] = openRawTunnel(t, addr)
				defer conns[i].Close()
			}
			waitTunnels(t, old, n)
			idle := xxhash.Sum64String("idle")
			if r := old.table.record(idle, tc.edge, placement{at: time.Now().UnixNano()}, netip.MustParseAddr("127.0.0.9"), nil); r != recorded {
				t.Fatalf("record an idle key: %d", r)
			}

			next := newHandOffBalancerNamed(t, configs.Balancer{}, tc.edge, "", lnB)
			a, b := stateHandedOver(t, old, next)
			taken := takeOverAsync(next, b)
			if tc.badPart {
				if err := a.Send(handoff.TypeTable, []byte{1, 3, 'a', ' ', 'b'}); err != nil {
					t.Fatal(err)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			res, got := handedOff(ctx, t, old, a, taken)
			t.Logf("hand-off: moved %d, taken %d (%v)", res.Moved, got.n, got.err)
			if got.n != n {
				t.Fatalf("the new process took %d of %d tunnels (%v)", got.n, n, got.err)
			}
			for i := range n {
				conns[i].SetDeadline(time.Now().Add(20 * time.Second))
				msg := fmt.Sprintf("after %d;", i)
				if _, err := io.WriteString(conns[i], msg); err != nil {
					t.Fatalf("tunnel %d after the hand-off: %v", i, err)
				}
				b := make([]byte, len(msg))
				if _, err := io.ReadFull(readers[i], b); err != nil || string(b) != msg {
					t.Fatalf("tunnel %d after the hand-off: %q %v", i, b, err)
				}
			}
			if v, ok := next.table.view(idle, next.ring.Snapshot()); !ok || v.Backend != tc.edge {
				t.Errorf("the idle key in the new table: %+v (found %v), want on %s", v, ok, tc.edge)
			}
		})
	}
}

// A tunnel the old process's table did not count — its key's shard was
// full when it opened, so the ring alone routed it — is not counted by the
// new process into an entry of its key that names another backend (one a
// peer placed once the shard had room): an entry's open tunnels are on its
// backend. Before, the new process counted it there: the entry on edge-x
// claimed 1 open tunnel while the key's only tunnel was on edge-y, which
// held the key live on edge-x, announced open there, for as long as that
// tunnel lasted — the never-split state with the session elsewhere. The
// tunnels the old table counted are counted as before.
func TestHandOffKeepsRingRoutedTunnelsUncounted(t *testing.T) {
	ex, ey := startRawEdge(t), startRawEdge(t)
	members := []ring.Member{{Name: "edge-x", URL: ex, Weight: 1}, {Name: "edge-y", URL: ey, Weight: 1}}
	start := func(r *ring.Ring, ln net.Listener) *Balancer {
		return newHandOffBalancerOn(t, configs.Balancer{SessionTable: configs.SessionTable{MaxEntries: 1000}}, r, ln)
	}
	entryOf := func(b *Balancer, h uint64) (e entry, tunnels int, ok bool) {
		s := b.table.shard(h)
		s.mu.Lock()
		defer s.mu.Unlock()
		e, ok = s.entries[h]
		return e, len(s.tunnels[h]), ok
	}
	lnA := mustListen(t)
	addr := lnA.Addr().String()
	lnB := sameSocket(t, lnA)
	rOld := ring.New(ring.DefaultConfig())
	rOld.Update(members)
	old := start(rOld, lnA)

	// The key, which the ring sends to edge-y, and as many others of its
	// shard as the shard holds.
	var key string
	for i := 0; key == ""; i++ {
		if m, _ := rOld.Snapshot().Locate([]byte(fmt.Sprintf("ring-%d", i))); m.Name == "edge-y" {
			key = fmt.Sprintf("ring-%d", i)
		}
	}
	h := xxhash.Sum64String(key)
	perShard := old.table.settings.Load().perShard
	var fillers []string
	for i := 0; len(fillers) < perShard; i++ {
		if k := fmt.Sprintf("filler-%d", i); xxhash.Sum64String(k)&(tableShards-1) == h&(tableShards-1) {
			fillers = append(fillers, k)
		}
	}
	// The shard fills with live sessions, a tunnel each; the key's tunnel
	// then finds no room and goes where the ring says, uncounted.
	fillConns := make([]net.Conn, len(fillers))
	for i, k := range fillers {
		c, _ := openKeyedTunnel(t, addr, k)
		defer c.Close()
		fillConns[i] = c
	}
	healthtest.WaitUntil(t, "the fillers' entries fill the shard", func() bool {
		for _, k := range fillers {
			if e, _, ok := entryOf(old, xxhash.Sum64String(k)); !ok || e.open != 1 {
				return false
			}
		}
		return true
	})
	c, br := openKeyedTunnel(t, addr, key)
	defer c.Close()
	refused := old.metrics.tableRefused.WithLabelValues(refusedFull)
	healthtest.WaitUntil(t, "the key's tunnel refused a table entry", func() bool { return value(refused) == 1 })
	// A filler's session ends, and a peer's placement of the key on
	// edge-x comes in (its delta) into the room it left.
	fillConns[0].Close()
	healthtest.WaitUntil(t, "the ended filler idle", func() bool {
		e, _, ok := entryOf(old, xxhash.Sum64String(fillers[0]))
		return ok && e.open == 0
	})
	now := time.Now().UnixNano()
	old.table.merge(tableRecord{hash: h, backend: "edge-x", placer: "bal-2", open: true, placedAt: now, until: now + int64(time.Minute)}, true)
	if e, n, ok := entryOf(old, h); !ok || old.table.names.name(e.backend) != "edge-x" || e.open != 0 || n != 0 {
		t.Fatalf("the old process's entry of the key: %+v (found %v), %d tunnels; want on edge-x, none counted", e, ok, n)
	}

	next := start(ring.New(ring.DefaultConfig()), lnB)
	a, b := stateHandedOver(t, old, next)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, got := handedOff(ctx, t, old, a, takeOverAsync(next, b))
	if got.n != perShard || res.Moved != perShard {
		t.Fatalf("hand-off: %+v, taken %d (%v); want %d tunnels moved", res, got.n, got.err, perShard)
	}
	e, n, ok := entryOf(next, h)
	t.Logf("the new process's entry of the key: on %s, %d open, %d tunnels held", next.table.names.name(e.backend), e.open, n)
	if !ok || next.table.names.name(e.backend) != "edge-x" || e.open != 0 || n != 0 {
		t.Errorf("the new process's entry of the key: %+v (found %v), %d tunnels; want on edge-x with none counted (the key's tunnel is on edge-y)", e, ok, n)
	}
	for _, k := range fillers[1:] {
		if e, n, ok := entryOf(next, xxhash.Sum64String(k)); !ok || e.open != 1 || n != 1 {
			t.Errorf("the new process's entry of %s: %+v (found %v), %d tunnels; want its tunnel counted", k, e, ok, n)
		}
	}
	// The key's tunnel carries on, on edge-y.
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(c, "after;"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len("after;"))
	if _, err := io.ReadFull(br, buf); err != nil || string(buf) != "after;" {
		t.Fatalf("the key's tunnel after the hand-off: %q %v", buf, err)
	}
}

// stateHandedOver pairs old with next as an upgrade does and hands old's
// state (ring, settings) to next: what is left is the table and the
// tunnels (old.HandOff on a, next.TakeOver on b). Both ends close at the
// test's end.
func stateHandedOver(t *testing.T, old, next *Balancer) (a, b *handoff.Conn) {
	t.Helper()
	a, b, err := handoff.Pair()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	errc := make(chan error, 1)
	go func() { errc <- old.SendState(a) }()
	if err := next.ReceiveState(b); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	return a, b
}

// took is what a new balancer's TakeOver returned.
type took struct {
	n   int
	err error
}

// takeOverAsync runs next.TakeOver(b) on a goroutine of its own; its result
// comes on the channel.
func takeOverAsync(next *Balancer, b *handoff.Conn) <-chan took {
	taken := make(chan took, 1)
	go func() {
		n, err := next.TakeOver(b)
		taken <- took{n, err}
	}()
	return taken
}

// handedOff runs the old balancer's side of a hand-off on a and returns its
// result with what the new one's TakeOver (takeOverAsync) returned. A
// TakeOver that does not return within healthtest.Patience of the
// hand-off's end fails the test instead of hanging it.
func handedOff(ctx context.Context, t *testing.T, old *Balancer, a *handoff.Conn, taken <-chan took) (HandOffResult, took) {
	t.Helper()
	res, err := old.HandOff(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-taken:
		return res, got
	case <-time.After(healthtest.Patience):
		t.Fatalf("the new balancer's TakeOver had not returned %s after the hand-off (moved %d)", healthtest.Patience, res.Moved)
		return res, took{}
	}
}

// A move made while a balancer is being upgraded reaches the new process,
// and so does a placement the new process made before it joined gossip: no
// session splits between it and the other balancers. Between the old
// process's hand-off of its table and the new one's join, the others'
// changes go to the old process, whose table is discarded, and the new one
// tells nobody what it places. Before, the new process asked nobody (the
// table it took over counted as ready) and sent its changes with its first
// refresh (linger/2 after it joined): a key moved to edge-c through bal-2
// in the gap stayed on edge-a v0 at the new bal-1 while bal-2 had edge-c v1
// — a participant through each met on different edges — and a key placed
// by the new process was unknown to bal-2. Now it asks its peers once it
// has joined and sends its changes at once, and again to each peer once
// its answer is in: a bal-2 that had not yet believed the new process's
// join dropped the first, and nothing sent the changes again before a
// refresh (TestNewProcessPlacementReachesAPeerThatBelievesItLate). The
// linger here is 10 minutes, so no refresh repairs either within the test.
func TestMoveDuringUpgradeReachesTheNewProcess(t *testing.T) {
	ea, eb, ec := startTestEdge(t, "edge-a"), startTestEdge(t, "edge-b"), startTestEdge(t, "edge-c")
	cl := healthtest.New(t)
	cfg := configs.Balancer{Edges: staticEdgesOf(ea, eb, ec),
		SessionTable: configs.SessionTable{StartupWait: configs.Duration(time.Second), Linger: configs.Duration(10 * time.Minute)}}
	b1 := startClusterBalancer(t, cl, "bal-1", cfg)
	b2 := startClusterBalancer(t, cl, "bal-2", cfg)
	for _, b := range []*clusterBalancer{b1, b2} {
		waitRing(t, b, "edge-a", "edge-b", "edge-c")
	}
	healthtest.WaitUntil(t, "both tables ready", func() bool { return b1.bal.table.routable() && b2.bal.table.routable() })
	entryIs := func(b *Balancer, r *ring.Ring, key, backend string, version uint16) func() bool {
		return func() bool {
			v, ok := b.table.view(xxhash.Sum64String(key), r.Snapshot())
			return ok && v.Backend == backend && v.Version == version
		}
	}
	key := b1.keyOwnedBy(t, "edge-a")
	p1, e1 := wsEdge(t, b1, key)
	defer p1.Close()
	if e1 != "edge-a" {
		t.Fatalf("first participant on %s, want edge-a", e1)
	}
	healthtest.WaitUntil(t, "bal-2 has the placement", entryIs(b2.bal, b2.ring, key, "edge-a", 0))

	// bal-1 is upgraded: its state, then its table and tunnel, go to the
	// new process, which serves at once and joins gossip later.
	logger := slog.New(slog.DiscardHandler)
	if testing.Verbose() {
		logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo})).With("node", "bal-1 (new)")
	}
	cfgN := cfg
	cfgN.Provision()
	ringN := ring.New(ring.DefaultConfig())
	reg := prometheus.NewRegistry()
	child, err := New(cfgN, "bal-1", ringN, logger, reg)
	if err != nil {
		t.Fatal(err)
	}
	childH := &harness{bal: child, ring: ringN, reg: reg, byName: map[string]*testEdge{}}
	oldEnd, newEnd := stateHandedOver(t, b1.bal, child)
	childH.serve(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if res, got := handedOff(ctx, t, b1.bal, oldEnd, takeOverAsync(child, newEnd)); got.n != 1 || res.Moved != 1 {
		t.Fatalf("hand-off: %+v, taken %d (%v); want the one tunnel moved", res, got.n, got.err)
	}

	// In the gap a participant through bal-2 is sent on by edge-a (421) to
	// edge-c: the key moves, and bal-2 tells bal-1's old process.
	ea.pin(key, "edge-c")
	p2, e2 := wsEdge(t, b2, key)
	defer p2.Close()
	ea.pin(key, "")
	if e2 != "edge-c" {
		t.Fatalf("participant through bal-2 on %s, want edge-c (edge-a's 421)", e2)
	}
	healthtest.WaitUntil(t, "bal-1's old process has bal-2's move", entryIs(b1.bal, b1.ring, key, "edge-c", 1))
	// And the new process places a key of its own.
	fresh := childH.keyOwnedBy(t, "edge-b")
	if _, w := childH.whoami(t, "/whoami", http.Header{"Ctstickiness": {fresh}}); w.Edge != "edge-b" {
		t.Fatalf("a new key through the new process went to %s, want edge-b", w.Edge)
	}

	// The old process leaves gossip; the new one joins in its place.
	if err := b1.m.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	cc := cl.Config("bal-1")
	cc.Join = []string{b2.m.Addr()}
	m := cl.JoinWith(cc, health.Meta{Role: health.RoleBalancer, Region: "east", State: health.StateAlive})
	child.SetCluster(m)
	if err := child.FollowCluster(); err != nil {
		t.Fatal(err)
	}
	healthtest.WaitUntil(t, "the new bal-1 process has bal-2's move", entryIs(child, ringN, key, "edge-c", 1))
	healthtest.WaitUntil(t, "bal-2 has the new process's placement", entryIs(b2.bal, b2.ring, fresh, "edge-b", 0))
	// The participant the old process had on edge-a is closed: its client
	// reconnects to the session's edge.
	ws := p1.(*websocket.Conn)
	ws.SetReadDeadline(time.Now().Add(healthtest.Patience))
	for {
		if _, _, err := ws.ReadMessage(); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatal("the participant left on edge-a stays open")
			}
			break
		}
	}
	p3, resp := dialWS(t, childH.addr, "/ws", http.Header{"Ctstickiness": {key}})
	defer p3.Close()
	if e3 := resp.Header.Get("X-Ringlb-Edge"); e3 != e2 {
		t.Errorf("split: a participant through bal-2 on %s, through the new bal-1 on %s", e2, e3)
	}
}

// An old process that waits long for an answer in flight before it hands
// over — a download or a stream, for as long as -shutdown-timeout lets it
// — loses nothing to that wait: the new process takes the table and every
// tunnel once they come. Before, the new process read the old one's first
// frame within a frame's 30 s like any other, gave up, and routed with an
// empty table; the old one then wrote the table and the tunnels into a
// socket nobody read and counted them moved (a 60 s hand-off and one 36 s
// stream: 0 taken, 1 counted moved). Now the old process sends the new one
// an empty table part (what any release reads as nothing) every
// KeepAliveEvery while it waits, and a new process that gives up
// reading shuts its end, so nothing it did not take is counted moved.
func TestHandOffWaitsForAnAnswerInFlight(t *testing.T) {
	// The frames' bound is 2 s here (30 s in a node), the stream 5 s.
	const frame, chunks = 2 * time.Second, 10 // one every 500 ms: beyond the frame's bound
	url := serveConns(t, func(c net.Conn, br *bufio.Reader) {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		if req.Header.Get("Upgrade") != "" {
			if _, err := io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "+wsSampleAccept+"\r\n\r\n"); err != nil {
				return
			}
			_, _ = io.Copy(c, br) // an echo
			return
		}
		if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"); err != nil {
			return
		}
		for i := range chunks {
			line := fmt.Sprintf("line %d\n", i)
			if _, err := fmt.Fprintf(c, "%x\r\n%s\r\n", len(line), line); err != nil {
				return
			}
			time.Sleep(500 * time.Millisecond)
		}
		_, _ = io.WriteString(c, "0\r\n\r\n")
	})
	lnA := mustListen(t)
	addr := lnA.Addr().String()
	lnB := sameSocket(t, lnA)
	old := newHandOffBalancerNamed(t, configs.Balancer{}, "app", url, lnA)
	tun, tunR := openRawTunnel(t, addr)
	defer tun.Close()
	waitTunnels(t, old, 1)

	// The stream has begun through the old process.
	sc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	_ = sc.SetDeadline(time.Now().Add(2 * healthtest.Patience))
	if _, err := io.WriteString(sc, "GET /stream HTTP/1.1\r\nHost: x\r\nctstickiness: slow\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	sr := bufio.NewReader(sc)
	resp, err := http.ReadResponse(sr, nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("stream: %v %v", resp, err)
	}
	streamed := make(chan int, 1)
	go func() {
		n := 0
		s := bufio.NewScanner(resp.Body)
		for s.Scan() {
			n++
		}
		streamed <- n
	}()

	next := newHandOffBalancerNamed(t, configs.Balancer{}, "app", "", lnB)
	a, b := stateHandedOver(t, old, next)
	a.SetFrameBound(frame)
	b.SetFrameBound(frame)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, got := handedOff(ctx, t, old, a, takeOverAsync(next, b))
	t.Logf("hand-off after %s stopping: moved %d, closed %d; the new process took %d (%v)", res.Stopping.Round(time.Second), res.Moved, res.Closed, got.n, got.err)
	if n := <-streamed; n != chunks {
		t.Errorf("the stream in flight got %d of its %d lines", n, chunks)
	}
	if got.n != 1 || res.Moved != got.n {
		t.Fatalf("the new process took %d tunnels (%v), the old one counted %d moved; want the one tunnel, taken", got.n, got.err, res.Moved)
	}
	if v, ok := next.table.view(xxhash.Sum64String("bench"), next.ring.Snapshot()); !ok || v.OpenHere != 1 {
		t.Errorf("the tunnel's key in the new table: %+v (found %v), want open here", v, ok)
	}
	_ = tun.SetDeadline(time.Now().Add(healthtest.Patience))
	if _, err := io.WriteString(tun, "after;"); err != nil {
		t.Fatal(err)
	}
	echo := make([]byte, len("after;"))
	if _, err := io.ReadFull(tunR, echo); err != nil || string(echo) != "after;" {
		t.Fatalf("the tunnel after the hand-off: %q %v", echo, err)
	}
}

// A new process that stops reading the hand-off (a frame it cannot take, or
// none within the frame's bound) shuts its end: what the old process sends
// after fails there, and it counts those tunnels closed, not moved into a
// socket nobody reads.
func TestTakeOverThatStopsReadingRefusesWhatFollows(t *testing.T) {
	old := newHandOffBalancer(t, startRawEdge(t), mustListen(t))
	next := newHandOffBalancer(t, "", mustListen(t))
	a, b := stateHandedOver(t, old, next)
	taken := takeOverAsync(next, b)
	if err := a.Send(handoff.TypeState, []byte("{}")); err != nil {
		t.Fatal(err)
	}
	if got := <-taken; got.err == nil {
		t.Fatal("TakeOver took a state frame among the tunnels")
	}
	if err := a.Send(handoff.TypeTable, newMsgWriter(handoff.MaxFrame, nil).bytes()); err == nil {
		t.Error("a frame sent after the new process stopped reading went into its socket")
	}
}

// A process whose table did not route yet — it waited for the other
// balancers' table after a restart — says so in the state it hands over,
// and the new process, given that table, waits for the others' as well
// instead of routing with what the old one had (TestUpgradeWhile-
// StartingWaitsForThePeersTable: the split it made). One whose table
// routed hands over a table that routes (the other hand-off tests).
func TestHandOffOfATableNotReadyWaits(t *testing.T) {
	edge := startRawEdge(t)
	lnA := mustListen(t)
	lnB := sameSocket(t, lnA)
	old := newHandOffBalancer(t, edge, lnA)
	// Shared and still asking: its startup wait.
	sy := old.table.newSync(nil, time.Hour)
	sy.ch = &tfLink{}
	old.table.sync.Store(sy)
	idle := xxhash.Sum64String("idle")
	if r := old.table.record(idle, "raw", placement{at: time.Now().UnixNano()}, netip.MustParseAddr("127.0.0.9"), nil); r != recorded {
		t.Fatalf("record an idle key: %d", r)
	}

	next := newHandOffBalancer(t, "", lnB)
	a, b := stateHandedOver(t, old, next)
	taken := takeOverAsync(next, b)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, got := handedOff(ctx, t, old, a, taken); got.err != nil {
		t.Fatal(got.err)
	}
	if _, ok := next.table.view(idle, next.ring.Snapshot()); !ok {
		t.Error("the old table's entry is not in the new one")
	}
	if next.table.routable() {
		t.Error("the new process routes with the table of one that waited for the other balancers'")
	}
}

// A message of the table counts its drains in one byte (at most 255), and
// the table handed to a new process put every drain in its first part,
// whatever addDrain said: with 300 static edges an operator drained, the
// new process knew 255, and the other 45 took new keys again after the
// upgrade. It knows all 300 now.
func TestHandOffCarriesEveryDrain(t *testing.T) {
	const n = 300
	var edges []configs.StaticEdge
	for i := range n {
		edges = append(edges, configs.StaticEdge{Name: fmt.Sprintf("s%03d", i), URL: fmt.Sprintf("http://127.0.0.1:%d", 20000+i)})
	}
	cfg := configs.Balancer{Edges: edges}
	old := newHandOffBalancerWith(t, cfg, "", mustListen(t))
	deadline := time.Now().Add(time.Hour)
	for _, e := range edges {
		old.table.setDrain(e.Name, true, deadline)
	}
	if got := len(old.table.drains.all()); got != n {
		t.Fatalf("old drains %d", got)
	}
	next := newHandOffBalancerWith(t, cfg, "", mustListen(t))
	a, b := stateHandedOver(t, old, next)
	taken := takeOverAsync(next, b)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	handedOff(ctx, t, old, a, taken)
	if got := len(next.table.drains.all()); got != n {
		t.Fatalf("the new process knows %d of the old process's %d drains: the rest were dropped from the table it was handed", got, n)
	}
}

// A balancer an operator put in maintenance (POST /api/maintenance?state=on:
// its health path answers 503, so keepalived or a gslb monitor keeps
// traffic away) and then upgraded in place is still in maintenance once the
// new process serves the same listeners. With cluster.state_dir unset (the
// default) nothing carried it: the hand-off sent the ring, the static
// monitors' states and the table, and the new process's health path
// answered 200 — the balancer was back in every health check.
func TestUpgradeKeepsMaintenance(t *testing.T) {
	edge := startRawEdge(t)
	lnA := mustListen(t)
	addr := lnA.Addr().String()
	lnB := sameSocket(t, lnA)
	old := newHandOffBalancer(t, edge, lnA)
	old.maintenance.Store(true) // what POST /api/maintenance?state=on does

	health := func() (int, string) {
		t.Helper()
		c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := c.Get("http://" + addr + HealthPath)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := health(); code != http.StatusServiceUnavailable {
		t.Fatalf("before the upgrade: health %d %q, want 503 maintenance", code, body)
	}

	next := newHandOffBalancer(t, edge, lnB)
	a, b := stateHandedOver(t, old, next)
	taken := takeOverAsync(next, b)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	handedOff(ctx, t, old, a, taken)
	// The old process has stopped serving: every connection now reaches the
	// new one.
	code, body := health()
	if code != http.StatusServiceUnavailable || !next.maintenance.Load() {
		t.Fatalf("after the upgrade: health %d %q, maintenance %v: the operator's maintenance was dropped by the upgrade", code, body, next.maintenance.Load())
	}
}

// The table's messages carry a name in at most 255 bytes. configs holds a
// static edge's name to a node name's 64 (TestStaticEdgeNameLongerThanANodeNameRefused
// in configs); a balancer given a longer one all the same (a config built
// in code, unchecked) cannot share the entries on it nor hand them over.
// Before, they were dropped without a word; now each is counted and said
// in the log, and the entries beside it go on.
func TestRecordNoMessageCanCarryIsCounted(t *testing.T) {
	long := "edge-" + strings.Repeat("x", 300)
	edge := startRawEdge(t)
	lnA := mustListen(t)
	lnB := sameSocket(t, lnA)
	r := ring.New(ring.DefaultConfig())
	r.Update([]ring.Member{{Name: long, URL: edge, Weight: 1}, {Name: "raw", URL: edge, Weight: 1}})
	old := newHandOffBalancerOn(t, configs.Balancer{}, r, lnA)
	now := time.Now().UnixNano()
	hLong, hShort := xxhash.Sum64String("on-the-long-name"), xxhash.Sum64String("on-raw")
	for h, e := range map[uint64]string{hLong: long, hShort: "raw"} {
		if got := old.table.record(h, e, placement{at: now}, netip.MustParseAddr("127.0.0.9"), nil); got != recorded {
			t.Fatalf("record on %.16s: %d", e, got)
		}
	}
	next := newHandOffBalancerNamed(t, configs.Balancer{}, "raw", edge, lnB)
	a, b := stateHandedOver(t, old, next)
	taken := takeOverAsync(next, b)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	handedOff(ctx, t, old, a, taken)
	if got := old.table.unwritten.Load(); got != 1 {
		t.Errorf("records no message could carry counted: %d, want the 1 on the %d-byte name", got, len(long))
	}
	if _, ok := next.table.view(hShort, next.ring.Snapshot()); !ok {
		t.Error("the entry beside it did not reach the new process")
	}
}

// The new process routes as soon as the old one has stopped accepting and
// sent its table, not once the old one's slowest request in flight has
// ended: its requests wait for that table, and a download, or a request
// sent a byte at a time to the admin port (whose stop came first, the data
// port accepting meanwhile), on the old process held every one of them for
// up to -shutdown-timeout. The stream here runs until the new process
// routes, or the test's patience runs out.
func TestHandOffTableDoesNotWaitForAnswersInFlight(t *testing.T) {
	release := make(chan struct{})
	url := serveConns(t, func(c net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nfirst\n\r\n"); err != nil {
			return
		}
		select {
		case <-release:
		case <-time.After(2 * healthtest.Patience):
		}
		_, _ = io.WriteString(c, "5\r\nlast\n\r\n0\r\n\r\n")
	})
	lnA := mustListen(t)
	addr := lnA.Addr().String()
	lnB := sameSocket(t, lnA)
	old := newHandOffBalancerNamed(t, configs.Balancer{}, "app", url, lnA)
	sc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	_ = sc.SetDeadline(time.Now().Add(3 * healthtest.Patience))
	if _, err := io.WriteString(sc, "GET /stream HTTP/1.1\r\nHost: x\r\nctstickiness: slow\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(sc), nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("stream: %v %v", resp, err)
	}
	adminLn := mustListen(t)
	go func() { _ = old.ServeAdmin(adminLn) }()
	slow, err := net.Dial("tcp", adminLn.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	if _, err := io.WriteString(slow, "GET /api/state HTTP/1.1\r\nHost: 127.0.0.1\r\n"); err != nil {
		t.Fatal(err)
	}
	streamed := make(chan string, 1)
	go func() {
		body, _ := io.ReadAll(resp.Body)
		streamed <- string(body)
	}()

	next := newHandOffBalancerNamed(t, configs.Balancer{}, "app", "", lnB)
	a, b := stateHandedOver(t, old, next)
	ctx, cancel := context.WithTimeout(context.Background(), 3*healthtest.Patience)
	defer cancel()
	began := time.Now()
	done := make(chan HandOffResult, 1)
	taken := takeOverAsync(next, b)
	go func() {
		res, err := old.HandOff(ctx, a)
		if err != nil {
			t.Error(err)
		}
		done <- res
	}()
	routed := make(chan struct{})
	go func() {
		next.table.waitRoutable(release)
		close(routed)
	}()
	select {
	case <-routed:
		t.Logf("the new process routes %s after the hand-off began, the stream still in flight", time.Since(began).Round(time.Millisecond))
	case <-time.After(healthtest.Patience):
		t.Errorf("the new process did not route within %s while a stream was in flight on the old one", healthtest.Patience)
	}
	close(release)
	res := <-done
	if got := <-taken; got.err != nil {
		t.Errorf("take over: %v", got.err)
	}
	if body := <-streamed; body != "first\nlast\n" {
		t.Errorf("the stream in flight got %q, want it whole", body)
	}
	t.Logf("the old process stopped after %s", res.Stopping.Round(time.Millisecond))
}

// A request trickled to the old process's admin port — its head half sent,
// or its body — holds no upgrade: the tunnels move, and the hand-off ends,
// while it is still unfinished, and it is cut (its client retries on the
// new process, which serves the same port). Before, the tunnels stayed
// until the admin port's request timeout or the whole -shutdown-timeout
// (the old process left gossip, and `ringlb upgrade` answered, only then):
// anyone who reaches the admin port (the login form is open) could stretch
// every upgrade so.
func TestHandOffDoesNotWaitForATrickledAdminRequest(t *testing.T) {
	edge := startRawEdge(t)
	lnA := mustListen(t)
	addr := lnA.Addr().String()
	lnB := sameSocket(t, lnA)
	// The request timeout beyond the test's patience: only the hand-off's
	// own bound ends the trickled requests.
	cfg := configs.Balancer{Admin: configs.Admin{RequestTimeout: configs.Duration(10 * time.Minute)}}
	old := newHandOffBalancerWith(t, cfg, edge, lnA)
	states := make(chan http.ConnState, 8)
	old.admin.ConnState = func(_ net.Conn, s http.ConnState) {
		select {
		case states <- s:
		default:
		}
	}
	adminLn := mustListen(t)
	go func() { _ = old.ServeAdmin(adminLn) }()

	tunnel, tr := openRawTunnel(t, addr)
	defer tunnel.Close()
	waitTunnels(t, old, 1)
	var trickled []net.Conn
	for _, req := range []string{
		"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n", // the head half sent
		"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nuser=a", // the body
	} {
		c, err := net.Dial("tcp", adminLn.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := io.WriteString(c, req); err != nil {
			t.Fatal(err)
		}
		trickled = append(trickled, c)
	}
	// Both are accepted, and the body's head read, before the upgrade
	// begins.
	seen := map[http.ConnState]int{}
	for seen[http.StateNew] < len(trickled) || seen[http.StateActive] < 1 {
		select {
		case s := <-states:
			seen[s]++
		case <-time.After(healthtest.Patience):
			t.Fatalf("the admin port's connections: %v", seen)
		}
	}

	next := newHandOffBalancerWith(t, cfg, edge, lnB)
	a, b := stateHandedOver(t, old, next)
	ctx, cancel := context.WithTimeout(context.Background(), 3*healthtest.Patience)
	defer cancel()
	began := time.Now()
	type handed struct {
		res HandOffResult
		err error
	}
	done := make(chan handed, 1)
	taken := takeOverAsync(next, b)
	go func() {
		res, err := old.HandOff(ctx, a)
		done <- handed{res, err}
	}()
	select {
	case h := <-done:
		res := h.res
		t.Logf("hand-off over %s after it began (stopping %s), the admin requests trickled", time.Since(began).Round(time.Millisecond), res.Stopping.Round(time.Millisecond))
		if h.err != nil {
			t.Error(h.err)
		}
		if res.Moved != 1 {
			t.Errorf("moved %d tunnels, want 1", res.Moved)
		}
	case <-time.After(healthtest.Patience):
		t.Fatalf("the hand-off had not ended %s after it began: a trickled admin request held it", healthtest.Patience)
	}
	if got := <-taken; got.err != nil || got.n != 1 {
		t.Errorf("take over: %d, %v", got.n, got.err)
	}
	for i, c := range trickled {
		_ = c.SetReadDeadline(time.Now().Add(healthtest.Patience))
		if _, err := io.ReadAll(c); err != nil {
			t.Errorf("trickled request %d: %v, want its connection closed", i, err)
		}
	}
	tunnel.SetDeadline(time.Now().Add(healthtest.Patience))
	if _, err := io.WriteString(tunnel, "after;"); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len("after;"))
	if _, err := io.ReadFull(tr, got); err != nil || string(got) != "after;" {
		t.Fatalf("the moved tunnel echoed %q, %v", got, err)
	}
}
