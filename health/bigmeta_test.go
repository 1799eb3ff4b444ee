package health

import (
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/memberlist"
)

// memberlist bounds the metadata a node announces (512 bytes) but not what
// it takes from others: a member holding the key, its memberlist modified,
// can gossip metadata as large as a push/pull carries (20 MB). What a node
// makes of it is bounded: it is not parsed, and the reason it is ignored
// for — kept, and logged — quotes at most 64 bytes of it. Before, a 1 MiB
// role or name was parsed, kept in the reason (1,048,591 and 1,048,634
// bytes) and logged: 3,146,208 bytes for the two.
func TestOversizedMetadataIsNotParsedOrQuoted(t *testing.T) {
	var mu sync.Mutex
	var logged strings.Builder
	h := slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return logged.Write(p)
	}), nil)
	cfg := testCluster("target")
	m, err := Join(t.Context(), cfg, Meta{Role: RoleBalancer, Region: "east", State: StateAlive}, slog.New(h))
	if err != nil {
		t.Fatal(err)
	}
	stopAtCleanup(t, m)
	huge := strings.Repeat("x", 1<<20)
	for _, n := range []memberlist.Node{
		{Name: "big-meta", Addr: net.IPv4(127, 0, 0, 1), Port: 7946, Meta: []byte(`{"role":"` + huge + `","state":"alive"}`)},
		{Name: "big-" + huge, Addr: net.IPv4(127, 0, 0, 1), Port: 7947, Meta: []byte(`{"role":"edge","state":"alive"}`)},
	} {
		// What memberlist's event callbacks hand on once a member is
		// believed (joins.go): the member's node as gossiped.
		m.record("join", &n)
	}
	m.mu.Lock()
	for name, why := range m.ignored {
		if len(why) > 1024 {
			t.Errorf("the reason %.40s… is ignored for is %d bytes", name, len(why))
		}
	}
	if len(m.ignored) != 2 {
		t.Errorf("ignored %d members, want 2", len(m.ignored))
	}
	m.mu.Unlock()
	mu.Lock()
	defer mu.Unlock()
	t.Logf("two members with 1 MiB of metadata or name: %d bytes logged", logged.Len())
	if n := logged.Len(); n > 8<<10 {
		t.Errorf("two members with 1 MiB of metadata or name logged %d bytes", n)
	}
}
