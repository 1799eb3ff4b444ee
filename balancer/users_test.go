package balancer

import (
	"fmt"
	"math"
	"testing"

	"github.com/axiomhq/hyperloglog"

	"github.com/ringlb/ringlb/configs"
)

func sketchOf(t *testing.T, users ...string) *hyperloglog.Sketch {
	t.Helper()
	sk := hyperloglog.New14()
	for _, u := range users {
		sk.Insert([]byte(u))
	}
	raw, err := sk.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	back, err := decodeSketch(raw) // as it travels from an edge
	if err != nil {
		t.Fatal(err)
	}
	return back
}

// A user online on two edges is one user of the cluster; token-less
// participants are each their own; an edge that did not answer is said.
func TestMergeUsersCountsOnce(t *testing.T) {
	got := mergeUsers([]edgeUsersAnswer{
		{asked: true, sketch: sketchOf(t, "alice", "bob"), anonymous: 2},
		{}, // a balancer: not asked
		{asked: true, sketch: sketchOf(t, "alice", "carol"), anonymous: 1},
		{asked: true}, // did not answer
	})
	if got.Online != 3+3 || got.Edges != 2 || got.Missing != 1 {
		t.Errorf("merged %+v, want 3 token users + 3 anonymous from 2 edges, 1 missing", got)
	}
	if mergeUsers([]edgeUsersAnswer{{}}) != nil {
		t.Error("no edge asked: a count anyway")
	}
	// Many users: the estimate stays within HyperLogLog's error.
	var a, b []string
	for i := range 20000 {
		a = append(a, fmt.Sprintf("user-%d", i))
		b = append(b, fmt.Sprintf("user-%d", i+10000)) // half shared
	}
	got = mergeUsers([]edgeUsersAnswer{{asked: true, sketch: sketchOf(t, a...)}, {asked: true, sketch: sketchOf(t, b...)}})
	if got.Online < 29000 || got.Online > 31000 {
		t.Errorf("30000 distinct users estimated %d", got.Online)
	}
}

// A sketch a peer made up is refused, never a panic.
func TestDecodeSketchRefusesGarbage(t *testing.T) {
	for _, raw := range [][]byte{nil, {1}, {2, 14, 1, 0, 0, 0, 200}, make([]byte, 40000)} {
		if _, err := decodeSketch(raw); err == nil {
			t.Errorf("%d bytes of garbage decoded", len(raw))
		}
	}
}

// An edge's token-less participants are at most its connections: an edge
// answering more (a lying one, math.MaxInt64) counted as many, and three
// such wrapped the cluster's figure around.
func TestMergeUsersBoundsAnEdgesCount(t *testing.T) {
	lie := edgeUsersAnswer{asked: true, sketch: sketchOf(t), anonymous: math.MaxInt64}
	got := mergeUsers([]edgeUsersAnswer{lie, lie, lie})
	t.Logf("three edges answering %d token-less participants each: %d users online", int64(math.MaxInt64), got.Online)
	if got.Online > 3*configs.MaxConnections {
		t.Errorf("%d users online, over three edges' %d connections", got.Online, 3*configs.MaxConnections)
	}
}
