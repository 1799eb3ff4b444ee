package health

import (
	"encoding/binary"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// ghostPinner is a member's delegate that hands, in each push/pull, the
// whole pin set of a node that does not exist, a new one each time.
type ghostPinner struct {
	metaDelegate
	pins  int
	round atomic.Int64
}

func (g *ghostPinner) LocalState(bool) []byte {
	name := fmt.Sprintf("ghost-%d", g.round.Add(1))
	b := appendName([]byte{msgPinState}, name)
	b = binary.BigEndian.AppendUint64(b, 1)
	b = binary.BigEndian.AppendUint32(b, uint32(g.pins))
	for i := range g.pins {
		b = binary.BigEndian.AppendUint64(b, uint64(i)+1)
		b = binary.BigEndian.AppendUint64(b, 1)
	}
	return b
}

// ghostPinOp is a pin operation of a node that does not exist.
func ghostPinOp(i int) []byte {
	b := appendName([]byte{msgPinOp}, fmt.Sprintf("ghost-op-%d", i))
	b = binary.BigEndian.AppendUint64(b, 1)
	b = append(b, 1)
	return binary.BigEndian.AppendUint64(b, uint64(i)+1)
}

// Pins name the node they belong to in the message itself (memberlist
// gives a delegate no sender), and a node's pins were kept until that
// node left — which a node that never was a member never does. A member
// holding the key (a node of another build) sent pins under names no node
// has: every node kept them for good, a whole push/pull's worth (20 MB,
// 1.3 million pins) at a time, looked through at every balancer's upgrade
// (PinnedTo), and counted in PinCount. Pins are taken only from a node
// memberlist has told this one of (a member, believed or not yet) or one
// whose pins are kept since it left.
func TestPinsOfNoMemberAreNotKept(t *testing.T) {
	key := writeKey(t, 32)
	var logged lockedBuffer
	logger := slog.New(slog.NewTextHandler(&logged, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg := testCluster("target")
	cfg.SecretKeyFile = key
	target := startTuned(t, cfg, edgeMeta(0), logger, tuning{})

	const rounds, pinsEach, ops = 20, 1000, 50
	mallory, _ := startPlainMember(t, "mallory", key, &ghostPinner{pins: pinsEach}, target.Addr())
	for range rounds - 1 { // its first push/pull was its join
		if _, err := mallory.Join([]string{target.Addr()}); err != nil {
			t.Fatal(err)
		}
	}
	var to *memberlist.Node
	for _, n := range mallory.Members() {
		if n.Name == "target" {
			to = n
		}
	}
	if to == nil {
		t.Fatal("mallory does not know the target")
	}
	for i := range ops {
		if err := mallory.SendReliable(to, ghostPinOp(i)); err != nil {
			t.Fatal(err)
		}
	}
	// Each state and operation has been taken once it is kept or refused.
	ghosts := func() (origins, pins int) {
		target.pins.mu.Lock()
		defer target.pins.mu.Unlock()
		for name, o := range target.pins.remote {
			if strings.HasPrefix(name, "ghost-") {
				origins++
				pins += len(o.pins)
			}
		}
		return origins, pins
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		origins, _ := ghosts()
		refused := strings.Count(logged.String(), "ignoring gossip")
		if origins+refused >= rounds+ops {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 30 s the target has kept %d and refused %d of %d states and operations", origins, refused, rounds+ops)
		}
		time.Sleep(10 * time.Millisecond)
	}
	origins, pins := ghosts()
	_, remote := target.PinCount()
	t.Logf("kept %d pins of %d nodes that do not exist; PinCount remote %d", pins, origins, remote)
	if origins != 0 || remote != 0 {
		t.Errorf("the target kept the pins of %d nodes that never were members (%d pins, PinCount remote %d), want none", origins, pins, remote)
	}
}
