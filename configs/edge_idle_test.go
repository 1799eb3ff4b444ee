package configs

import "testing"

// edge.max_idle_sessions: its default when unset, and its range.
func TestEdgeMaxIdleSessions(t *testing.T) {
	cfg, err := Parse("t.yaml", []byte("cluster: { bind: 127.0.0.1:7946 }\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Edge.MaxIdleSessions != DefaultMaxIdleSessions {
		t.Errorf("max_idle_sessions = %d, want the default %d", cfg.Edge.MaxIdleSessions, DefaultMaxIdleSessions)
	}
	for _, v := range []string{"-1", "10000001"} {
		_, err := Parse("t.yaml", []byte("cluster: { bind: 127.0.0.1:7946 }\nedge: { max_idle_sessions: "+v+" }\n"))
		expectProblem(t, err, "edge.max_idle_sessions", "must be in range [1, 10000000]")
	}
}
