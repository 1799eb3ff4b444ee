package configs

import (
	"errors"
	"strings"
	"testing"
)

// A node gossips cluster.region (and an edge its advertise_url) in its
// metadata, which memberlist carries up to 512 bytes: a longer region or
// URL passed the check and the start failed to join ("node metadata too
// large"), or, a few bytes short of it, the start joined and the edge's
// load and its drain, which lengthen the metadata later, were never
// announced. Counted as gossiped (JSON), escapes included.
func TestGossipedFieldsAreBounded(t *testing.T) {
	const cluster = "cluster: { bind: 127.0.0.1:7946, region: %s }\n"
	longURL := "http://127.0.0.1:7101/" + strings.Repeat("p", 160)
	for _, tc := range []struct {
		name, region, edge, path string
	}{
		{"a long region", strings.Repeat("r", 300), "", "cluster.region"},
		{"a region of escapes", `"` + strings.Repeat("<", 40) + `"`, "", "cluster.region"},
		{"a long URL", strings.Repeat("r", 40), "edge: { listen: 127.0.0.1:7101, advertise_url: '" + longURL + "' }\n", "edge.advertise_url"},
		{"within the bound", "eu-west-1", "edge: { listen: 127.0.0.1:7101, advertise_url: 'http://127.0.0.1:7101' }\n", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("t.yaml", []byte(strings.Replace(cluster, "%s", tc.region, 1)+tc.edge))
			if tc.path == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if e := expectProblem(t, err, tc.path, "gossiped"); e != nil && e.Line == 0 {
				t.Errorf("%s has no line", e)
			}
			var errs Errors
			if errors.As(err, &errs) && len(errs) != 1 {
				t.Errorf("want one problem, got:\n%v", err)
			}
		})
	}
}
