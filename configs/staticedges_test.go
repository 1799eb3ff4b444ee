package configs

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
)

// balancer.edges is bounded: MaxStaticEdges check, one more is refused at
// the list's line, and a list of tens of thousands is refused before its
// entries are read. Before, any number passed: 170,000 empty entries (a
// file of about a megabyte) held 230 MB in `ringlb check` and were counted as
// 340,000 problems, and a valid list of tens of thousands was accepted —
// a monitor and a ring member each, on every balancer.
func TestStaticEdgesAreBounded(t *testing.T) {
	file := func(n int, entry func(i int) string) []byte {
		var b strings.Builder
		b.WriteString("cluster: { name: b1, bind: 127.0.0.1:7946 }\nbalancer:\n  edges:\n")
		for i := range n {
			b.WriteString("    - " + entry(i) + "\n")
		}
		return []byte(b.String())
	}
	good := func(i int) string { return fmt.Sprintf("{ name: e%d, url: \"http://127.0.0.1:%d\" }", i, 1024+i) }

	cfg, err := Parse("b.yaml", file(MaxStaticEdges, good))
	if err != nil {
		t.Fatalf("%d static edges: %v", MaxStaticEdges, err)
	}
	if len(cfg.Balancer.Edges) != MaxStaticEdges {
		t.Fatalf("%d static edges read, want %d", len(cfg.Balancer.Edges), MaxStaticEdges)
	}

	want := fmt.Sprintf("b.yaml:4: balancer.edges: %d static edges, at most %d", MaxStaticEdges+1, MaxStaticEdges)
	_, err = Parse("b.yaml", file(MaxStaticEdges+1, good))
	var errs Errors
	if !errors.As(err, &errs) || len(errs) != 1 || !strings.HasPrefix(errs[0].Error(), want) {
		t.Fatalf("%d static edges: %v, want the one problem %q", MaxStaticEdges+1, err, want)
	}

	// Tens of thousands of empty entries: one problem, and the entries are
	// not walked (nor checked) to be refused afterwards.
	const many = 170_000
	data := file(many, func(int) string { return "{}" })
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, err = Parse("b.yaml", data)
	runtime.ReadMemStats(&after)
	allocated := after.TotalAlloc - before.TotalAlloc
	t.Logf("%d empty static edges (%d bytes of file): %d MB allocated; %v", many, len(data), allocated>>20, err)
	var refused *Refused
	if !errors.As(err, &refused) || len(refused.Errors) != 1 || refused.Unsaid != 0 ||
		!strings.HasPrefix(refused.Errors[0].Error(), fmt.Sprintf("b.yaml:4: balancer.edges: %d static edges, at most %d", many, MaxStaticEdges)) {
		t.Fatalf("%d empty static edges: %v, want the one problem of their number", many, err)
	}
	// The YAML tree alone (yaml.v3's) is about 30 times the file; walking
	// and checking every entry made it 500 MB.
	if limit := uint64(100 * len(data)); allocated > limit {
		t.Errorf("%d MB allocated to refuse %d static edges, want at most %d MB", allocated>>20, many, limit>>20)
	}
}
