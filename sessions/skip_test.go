package sessions

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ringlb/ringlb/balancer/ring"
	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health"
	"github.com/ringlb/ringlb/health/healthtest"
)

// skipPermutations returns every ordering of every subset of up to k of
// names, shortest first.
func skipPermutations(names []string, k int) [][]string {
	var out [][]string
	var walk func(prefix []string)
	walk = func(prefix []string) {
		if len(prefix) > 0 {
			out = append(out, slices.Clone(prefix))
		}
		if len(prefix) == k {
			return
		}
		for _, n := range names {
			if !slices.Contains(prefix, n) {
				walk(append(prefix, n))
			}
		}
	}
	walk(nil)
	slices.SortStableFunc(out, func(a, b []string) int { return len(a) - len(b) })
	return out
}

// X-Ringlb-Skip was anyone's to send on a join (a keyless cluster still
// takes it unsigned; a keyed one, from any holder of the key), and each set
// of edges it names is a ring to build (milliseconds) and keep until the
// ring changes.
// The attack: token-less joins naming every ordering of up to 5 of an
// 8-edge ring's edges. Before, each ordering was a ring of its own: 1,099
// joins held the edge 2.6–5 s and +35 MiB of heap (and 8 names of 20
// edges reach 10^8 rings). Now the names are a set, any order builds its
// one ring, at most maxSkipSets sets of two or more per ring version; a
// join naming another is refused with 503 and counted.
func TestSkipSetsBounded(t *testing.T) {
	cl := healthtest.New(t)
	// The default ring, as `ringlb edge` builds it.
	rc := ring.Config{Partitions: configs.DefaultRingPartitions, Replication: configs.DefaultRingReplication, Load: configs.DefaultRingLoad}
	a := startClusterEdgeWith(t, cl, "edge-a", slog.New(slog.DiscardHandler), rc)
	others := []string{"edge-b", "edge-c", "edge-d", "edge-e", "edge-f", "edge-g", "edge-h"}
	for _, name := range others {
		// Edges of the cluster where nothing listens: on the ring all the same.
		cl.Join(name, health.Meta{Role: health.RoleEdge, Region: "east", URL: "http://127.0.0.1:1", Weight: 1, State: health.StateAlive})
	}
	ownership := a.s.hub.owner.Load()
	healthtest.WaitUntil(t, "edge-a's ring has 8 edges", func() bool { return ownership.ring.Snapshot().Len() == 8 })
	version := ownership.ring.Snapshot().Version()

	// edge-a itself first in every list: the ring without it never gives
	// the key to edge-a, so every join is answered (421) without a session.
	// The last one names edge-a alone: one edge's ring is never refused.
	lists := [][]string{}
	for _, p := range skipPermutations(others, 4) {
		lists = append(lists, append([]string{"edge-a"}, p...))
	}
	lists = append(lists, []string{"edge-a"})
	// What the edge should answer: the first maxSkipSets sets (in the
	// order they come) are built, any ordering of them again; others 503.
	want := map[int]int{}
	built := map[string]bool{}
	for _, l := range lists {
		set := slices.Sorted(slices.Values(l))
		key := strings.Join(set, ",")
		switch {
		case len(set) == 1 || built[key]:
			want[http.StatusMisdirectedRequest]++
		case len(built) < maxSkipSets:
			built[key] = true
			want[http.StatusMisdirectedRequest]++
		default:
			want[http.StatusServiceUnavailable]++
		}
	}

	c, err := net.Dial("tcp", a.data)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * testDeadline))
	base := heapInUse()
	start := time.Now()
	go func() {
		w := bufio.NewWriter(c)
		for i, l := range lists {
			key := fmt.Sprintf("skip-%d", i)
			h := a.skipHeader(key, "", l...)
			fmt.Fprintf(w, "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nctstickiness: %s\r\n%s: %s\r\n%s: %s\r\n\r\n",
				key, headerSkip, h.Get(headerSkip), configs.HeaderPeer, h.Get(configs.HeaderPeer))
		}
		w.Flush()
	}()
	br := bufio.NewReader(c)
	got := map[int]int{}
	for range lists {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		got[resp.StatusCode]++
	}
	t.Logf("%d joins naming orderings of edges in X-Ringlb-Skip: %v in %v, heap +%d MiB", len(lists), got, time.Since(start), (int64(heapInUse())-int64(base))>>20)
	if v := ownership.ring.Snapshot().Version(); v != version {
		// Gossip changed the ring meanwhile: the sets were counted anew.
		t.Skipf("the ring changed during the test (version %d → %d); answers %v", version, v, got)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("answers %v, want %v", got, want)
	}
	if v := metricValue(t, a.s, "ringlb_edge_skip_sets_refused_total"); v != float64(want[http.StatusServiceUnavailable]) {
		t.Errorf("ringlb_edge_skip_sets_refused_total = %v, want %d", v, want[http.StatusServiceUnavailable])
	}
}
