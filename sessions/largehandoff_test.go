package sessions

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health/healthtest"
)

// largeDrain is a drain of a session of msgs msgs of 1.5 MiB from edge-a,
// whose edge.history.bytes is 16 MiB, to edge-b, whose is newOwnerBytes,
// reached by its peers through front (unless nil:
// startClusterEdgeBehind). It returns once the session's participant was
// closed for the move: edge-b, the key, the session's epoch, the msgs'
// data as a client reads them (JSON strings), and Drain's result.
func largeDrain(t *testing.T, newOwnerBytes, msgs int, front func(data string) string) (b *clusterEdge, key, epoch string, data []string, drained <-chan error) {
	t.Helper()
	edge := func(historyBytes int) configs.Edge {
		cfg := configs.Edge{IdleGrace: configs.Duration(time.Minute), MaxMessageBytes: 2 << 20}
		cfg.History.Bytes = historyBytes
		return cfg
	}
	cl := healthtest.New(t)
	a := startClusterEdgeConfig(t, cl, "edge-a", edge(16<<20), slog.New(slog.DiscardHandler), testRing, nil)
	b = startClusterEdgeBehind(t, cl, "edge-b", edge(newOwnerBytes), slog.New(slog.DiscardHandler), testRing, nil, front)
	waitRing(t, []*clusterEdge{a, b}, "edge-a", "edge-b")
	key = keyOwnedBy("large", "edge-a", "edge-a", "edge-b")

	p := a.joinV1(t, key, "", nil)
	big := strings.Repeat("x", 1500<<10)
	for i := range msgs {
		d := fmt.Sprint(i, big)
		p.msg(t, d)
		if ack := p.readType(t, "ack"); ack.Seq != uint64(i+1) {
			t.Fatalf("ack %+v", ack)
		}
		data = append(data, fmt.Sprintf("%q", d))
	}
	drained = startDrain(a)
	if code := closeCode(t, p.Conn); code != closeServiceRestart {
		t.Fatalf("close code %d, want 1012", code)
	}
	return b, key, p.welcome.Epoch, data, drained
}

// A session whose history is larger than one hand-off request may carry
// (an operator raised edge.history.bytes and edge.max_message_bytes for
// large documents) is handed on whole by a drain: its clients resume on
// the new owner with every msg, not reset.
func TestDrainHandsOnAHistoryLargerThanARequest(t *testing.T) {
	b, key, epoch, data, drained := largeDrain(t, 16<<20, 5, nil)
	resumeWhole(t, b, key, epoch, data, drained)
}

// A session larger than a request crossing a slow link between edges
// (12 MiB at 1.6 MiB/s: 7.5 s) is given the time its size takes, not a
// request's usual bound: handed on whole, its clients resume with every
// msg, not cut to what crossed in that bound.
func TestDrainGivesALargeHandOffItsTime(t *testing.T) {
	b, key, epoch, data, drained := largeDrain(t, 16<<20, 8, func(data string) string {
		return throttledFront(t, data, 1600<<10)
	})
	resumeWhole(t, b, key, epoch, data, drained)
}

// resumeWhole checks that a client resuming a drained session from 0 on
// its new owner b gets every msg of it.
func resumeWhole(t *testing.T, b *clusterEdge, key, epoch string, data []string, drained <-chan error) {
	t.Helper()
	r := b.joinV1(t, key, "resume=0&epoch="+epoch, nil)
	if r.welcome.Epoch != epoch || r.welcome.Seq != uint64(len(data)) {
		t.Fatalf("welcome on the new edge %+v, want epoch %s seq %d", r.welcome, epoch, len(data))
	}
	for i, d := range data {
		if m := r.readType(t, "msg"); m.Seq != uint64(i+1) || string(m.Data) != d {
			t.Fatalf("replay %d: seq %d, %d bytes", i, m.Seq, len(m.Data))
		}
	}
	if err := <-drained; err != nil {
		t.Fatalf("drain: %v", err)
	}
}

// A new owner that reads less than the draining edge's histories make (its
// edge.history.bytes is smaller: a rolling change of the setting) is sent
// each session's newest msgs, as many as every edge reads: the session
// keeps its epoch and seq, a client that saw them resumes with nothing
// lost, and one from before them gets a reset that says so.
func TestDrainCutsAHistoryTheNewEdgeCannotRead(t *testing.T) {
	b, key, epoch, data, drained := largeDrain(t, 2<<20, 5, nil)
	n := uint64(len(data))
	// Seen up to the last msg: nothing lost.
	r := b.joinV1(t, key, fmt.Sprintf("resume=%d&epoch=%s", n, epoch), nil)
	if r.welcome.Epoch != epoch || r.welcome.Seq != n {
		t.Fatalf("welcome on the new edge %+v, want epoch %s seq %d", r.welcome, epoch, n)
	}
	// The newest msg is in edge-b's history; the first is not.
	last := b.joinV1(t, key, fmt.Sprintf("resume=%d&epoch=%s", n-1, epoch), nil)
	if m := last.readType(t, "msg"); m.Seq != n || string(m.Data) != data[n-1] {
		t.Fatalf("replay of the newest msg: seq %d, %d bytes", m.Seq, len(m.Data))
	}
	first := b.joinV1(t, key, "resume=0&epoch="+epoch, nil)
	if m := first.readType(t, "reset"); m.Reason != "history" {
		t.Fatalf("resume from 0: %+v, want a reset for history", m)
	}
	if err := <-drained; err != nil {
		t.Fatalf("drain: %v", err)
	}
}

// An owner whose edge.max_message_bytes is above its replica's (a rolling
// change of the setting, one edge reloaded before the other) replicates
// its largest msgs too: the replica's stream reads what any owner may send,
// so the msg is acknowledged once the replica has it and survives the
// owner's crash.
func TestReplicaTakesAMsgAboveItsOwnLimit(t *testing.T) {
	// The longest replication_timeout: a fallback to async then says the
	// stream broke, not that a 6 MiB batch took its time (-race).
	owner := configs.Edge{IdleGrace: configs.Duration(time.Minute), MaxMessageBytes: 8 << 20, ReplicationTimeout: configs.Duration(10 * time.Second)}
	owner.History.Bytes = 16 << 20
	replica := configs.Edge{IdleGrace: configs.Duration(time.Minute)}
	replica.History.Bytes = 16 << 20
	cl := healthtest.New(t)
	a := startClusterEdgeConfig(t, cl, "edge-a", owner, slog.New(slog.DiscardHandler), testRing, nil)
	b := startClusterEdgeConfig(t, cl, "edge-b", replica, slog.New(slog.DiscardHandler), testRing, nil)
	waitRing(t, []*clusterEdge{a, b}, "edge-a", "edge-b")
	key := keyOwnedBy("above", "edge-a", "edge-a", "edge-b")

	p := a.joinV1(t, key, "", nil)
	big := strings.Repeat("y", 6<<20)
	p.msg(t, big)
	if ack := p.readType(t, "ack"); ack.Seq != 1 {
		t.Fatalf("ack %+v", ack)
	}
	p.msg(t, "small")
	if ack := p.readType(t, "ack"); ack.Seq != 2 {
		t.Fatalf("ack %+v", ack)
	}
	waitCopy(t, b, key, 2)
	if v := metricValue(t, a.s, "ringlb_edge_replication_fallbacks_total"); v != 0 {
		t.Errorf("replication fell back to async %v times, want 0", v)
	}
	epoch := p.welcome.Epoch
	a.crash(t)
	waitRing(t, []*clusterEdge{b}, "edge-b")
	r := b.joinV1(t, key, "resume=0&epoch="+epoch, nil)
	if r.welcome.Epoch != epoch {
		t.Fatalf("welcome on the replica %+v, want epoch %s", r.welcome, epoch)
	}
	if m := r.readType(t, "msg"); m.Seq != 1 || len(m.Data) != len(big)+2 {
		t.Fatalf("replay: seq %d, %d bytes, want seq 1, %d", m.Seq, len(m.Data), len(big)+2)
	}
}

// throttledFront forwards connections to target, the bytes toward target
// at most rate a second (the answers unthrottled), and returns its
// address: a slow link to target's edge.
func throttledFront(t *testing.T, target string, rate int) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	track := func(c net.Conn) {
		mu.Lock()
		defer mu.Unlock()
		conns = append(conns, c)
	}
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.DialTimeout("tcp", target, testDeadline)
			if err != nil {
				in.Close()
				continue
			}
			track(in)
			track(out)
			wg.Add(2)
			go func() {
				defer wg.Done()
				defer out.Close()
				start, sent := time.Now(), 0
				buf := make([]byte, 16<<10)
				for {
					n, err := in.Read(buf)
					if n > 0 {
						if _, werr := out.Write(buf[:n]); werr != nil {
							return
						}
						sent += n
						time.Sleep(time.Until(start.Add(time.Duration(sent) * time.Second / time.Duration(rate))))
					}
					if err != nil {
						return
					}
				}
			}()
			go func() {
				defer wg.Done()
				defer in.Close()
				_, _ = io.Copy(in, out)
			}()
		}
	}()
	return ln.Addr().String()
}
