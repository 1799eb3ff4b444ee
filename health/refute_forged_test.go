package health

import (
	"bytes"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// lockedBuffer is a log sink the test reads while memberlist writes to it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Anyone who reaches the gossip port, without the key, can make memberlist
// print what it likes inside one of its lines: a packet or stream with a
// label header it does not expect is discarded with the label quoted. A
// label spelling memberlist's refutation of a death is no refutation: the
// node is not away for it (no warning, no ringlb_gossip_back_total, no
// alert, no settle window, no announcement of itself again).
func TestForgedRefutationInALabelIsNotAway(t *testing.T) {
	key := writeKey(t, 32)
	var logged lockedBuffer
	logger := slog.New(slog.NewTextHandler(&logged, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ca := testCluster("node-0")
	ca.SecretKeyFile = key
	m := startTuned(t, ca, edgeMeta(0), logger, tuning{})
	cb := testCluster("node-1", m.Addr())
	cb.SecretKeyFile = key
	peer := startNode(t, cb, edgeMeta(1))
	waitAll(t, []*Membership{m, peer}, func(ns []Node) bool { return len(ns) == 2 })

	// memberlist's label header: its message type, a length, the label.
	labelled := func(label string) []byte {
		return append([]byte{244, byte(len(label))}, label...)
	}
	for i, label := range []string{"memberlist: Refuting a dead message (from: x)", "memberlist: Refuting a suspect message (from: x)"} {
		pkt, err := net.Dial("udp", m.Addr())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pkt.Write(labelled(label)); err != nil {
			t.Fatal(err)
		}
		pkt.Close()
		stream, err := net.Dial("tcp", m.Addr())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := stream.Write(labelled(label)); err != nil {
			t.Fatal(err)
		}
		// Each is logged once memberlist has read it: a packet and a
		// stream per label.
		deadline := time.Now().Add(30 * time.Second)
		for strings.Count(logged.String(), "unacceptable label") < 2*(i+1) {
			if time.Now().After(deadline) {
				t.Fatalf("memberlist never discarded the labelled packet and stream; logged:\n%s", logged.String())
			}
			time.Sleep(10 * time.Millisecond)
		}
		stream.Close()
	}
	if n := m.backs[backRefuted].Load(); n != 0 {
		t.Errorf("ringlb_gossip_back_total{reason=\"refuted\"} %d after labels sent without the key, want 0", n)
	}
	if strings.Contains(logged.String(), "may have taken this node for dead") {
		t.Errorf("a stranger's label warned that the node was taken for dead")
	}
}
