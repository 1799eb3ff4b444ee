package balancer

import (
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/ringlb/ringlb/configs"
)

// The data port's request timeout and header bound are set on its server
// at start (fasthttp reads them while serving): a reload that changes them
// is refused, naming each, as every field read only at start is. Before,
// it was answered "reloaded" and changed nothing: a max_header_bytes
// lowered to 1 KiB still let a 3 KiB head through, while GET /api/config
// showed the new value as the one running.
func TestReloadRefusesLimitsReadAtStart(t *testing.T) {
	h := newHarness(t, configs.Balancer{})
	next := h.bal.current.Load().cfg
	next.Limits.MaxHeaderBytes = 1 << 10
	next.Limits.RequestTimeout = configs.Duration(5 * 60e9)
	err := h.bal.Reload(provision(next))
	t.Logf("reload: %v", err)
	if !errors.Is(err, configs.ErrNeedsRestart) {
		t.Fatalf("reload changing limits read only at start: %v, want it refused as needing a restart", err)
	}
	got := configs.RestartFields(err)
	for _, want := range []string{"balancer.limits.max_header_bytes", "balancer.limits.request_timeout"} {
		if !slices.Contains(got, want) {
			t.Errorf("restart fields %v, want %s among them", got, want)
		}
	}
	// What runs is what the balancer says runs: the start's bound.
	if cur := h.bal.current.Load().cfg.Limits.MaxHeaderBytes; cur != configs.DefaultMaxHeaderBytes {
		t.Errorf("refused reload left max_header_bytes %d in the running config, want %d", cur, configs.DefaultMaxHeaderBytes)
	}
	resp, body := h.get(t, "/whoami", http.Header{"Ctstickiness": {"k"}, "X-Pad": {strings.Repeat("a", 3<<10)}})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("a 3 KiB head under the start's 8 KiB bound: %d %s", resp.StatusCode, body)
	}
}
