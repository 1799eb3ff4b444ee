package configs

import (
	"errors"
	"strings"
	"testing"
)

// A key given twice in a mapping decoded into a map (monitors, a name's
// regions, geo) is refused at its second line, as a struct's field is:
// before, the last one silently won.
func TestMapKeyGivenTwice(t *testing.T) {
	for _, tc := range []struct {
		name, file, path string
		line             int
	}{
		{"a monitor", "cluster: { bind: 127.0.0.1:7946 }\ngslb:\n  monitors:\n    web: { type: tcp, port: 80 }\n    web: { type: http, port: 8080 }\n", "gslb.monitors.web", 5},
		{"a geo region", "cluster: { bind: 127.0.0.1:7946 }\ngslb:\n  names:\n    - name: a.example.com\n      geo:\n        east: [10.0.0.0/8]\n        east: [192.168.0.0/16]\n", "gslb.names[0].geo.east", 7},
		{"in flow style", "cluster: { bind: 127.0.0.1:7946 }\ngslb:\n  names:\n    - name: a.example.com\n      geo: { east: [10.0.0.0/8], east: [192.168.0.0/16] }\n", "gslb.names[0].geo.east", 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("t.yaml", []byte(tc.file))
			if e := expectProblem(t, err, tc.path, "given twice"); e != nil && e.Line != tc.line {
				t.Errorf("at line %d, want %d: %v", e.Line, tc.line, e)
			}
		})
	}
}

// An integer field takes a YAML integer: a fraction was truncated, and an
// edge of weight 0.9 drained (weight 0) with no word.
func TestIntegerFieldsAreWholeNumbers(t *testing.T) {
	for _, tc := range []struct {
		name, file, path, value string
		line                    int
	}{
		{"an edge's weight", "cluster: { bind: 127.0.0.1:7946 }\nbalancer:\n  edges:\n    - name: e1\n      url: http://127.0.0.1:7101\n      weight: 0.9\n", "balancer.edges[0].weight", "0.9", 6},
		{"max_participants", "cluster: { bind: 127.0.0.1:7946 }\nedge:\n  max_participants: 5.5\n", "edge.max_participants", "5.5", 3},
		{"an exponent", "cluster: { bind: 127.0.0.1:7946 }\nedge:\n  max_participants: 1e3\n", "edge.max_participants", "1e3", 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("t.yaml", []byte(tc.file))
			if e := expectProblem(t, err, tc.path, "must be a whole number"); e != nil && (e.Line != tc.line || !strings.Contains(e.Msg, tc.value)) {
				t.Errorf("want line %d quoting %s: %v", tc.line, tc.value, e)
			}
		})
	}
	// A float field still takes an integer, and an integer field one.
	cfg, err := Parse("t.yaml", []byte("cluster: { bind: 127.0.0.1:7946, ring: { load: 2 } }\nedge:\n  max_participants: 5\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Cluster.Ring.Load != 2 || cfg.Edge.MaxParticipants != 5 {
		t.Errorf("ring.load %g, max_participants %d", cfg.Cluster.Ring.Load, cfg.Edge.MaxParticipants)
	}
	// A word in an integer field is refused as before, as a word.
	_, err = Parse("t.yaml", []byte("edge:\n  max_participants: lots\n"))
	var errs Errors
	if !errors.As(err, &errs) {
		t.Fatalf("want Errors, got %v", err)
	}
	expectProblem(t, err, "edge.max_participants", `"lots" is not a valid integer`)
}

// A problem is reported at its field's line: each balancer timeout at its
// own (all three were said at the balancer section's line, as one), and
// a field the file leaves out (a required one) at the line of the nearest
// section around it the file has — the admin token at admin:, where it
// had no line at all.
func TestProblemsAtTheFieldsLine(t *testing.T) {
	file := `cluster: { bind: 127.0.0.1:7946 }
balancer:
  listen: 127.0.0.1:8080
  dial_timeout: -1s
  idle_timeout: 30s
  tunnel_idle_timeout: -2s
  admin:
    listen: 0.0.0.0:9090
`
	_, err := Parse("t.yaml", []byte(file))
	for _, w := range []struct {
		path, msg string
		line      int
	}{
		{"balancer.dial_timeout", "must be positive, got -1s", 4},
		{"balancer.tunnel_idle_timeout", "must be positive, got -2s", 6},
		{"balancer.admin.token_file", "is required", 7},
	} {
		if e := expectProblem(t, err, w.path, w.msg); e != nil && e.Line != w.line {
			t.Errorf("%s: line %d, want %d", e, e.Line, w.line)
		}
	}
	var errs Errors
	if errors.As(err, &errs) {
		for _, e := range errs {
			if e.Path == "balancer.idle_timeout" {
				t.Errorf("a good timeout refused: %s", e)
			}
		}
	}
}
