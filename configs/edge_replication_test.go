package configs

import (
	"testing"
	"time"
)

func TestEdgeReplication(t *testing.T) {
	cfg, err := Parse("t.yaml", []byte("cluster: { bind: 127.0.0.1:7946 }\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Edge.Replication != ReplicationSync || cfg.Edge.ReplicationTimeout.D() != 250*time.Millisecond {
		t.Errorf("defaults: replication %q, timeout %s; want sync, 250ms", cfg.Edge.Replication, cfg.Edge.ReplicationTimeout.D())
	}
	for _, mode := range []string{ReplicationOff, ReplicationAsync, ReplicationSync} {
		if _, err := Parse("t.yaml", []byte("cluster: { bind: 127.0.0.1:7946 }\nedge: { replication: "+mode+", replication_timeout: 1s }\n")); err != nil {
			t.Errorf("%s: %v", mode, err)
		}
	}
	for _, tt := range []struct{ yaml, path, msg string }{
		{"edge: { replication: eventually }", "edge.replication", `must be off, async or sync, got "eventually"`},
		{"edge: { replication_timeout: 1ms }", "edge.replication_timeout", "must be in range [10ms, 10s], got 1ms"},
		{"edge: { replication_timeout: 1m }", "edge.replication_timeout", "must be in range [10ms, 10s], got 1m0s"},
	} {
		_, err := Parse("t.yaml", []byte(tt.yaml))
		expectProblem(t, err, tt.path, tt.msg)
	}
}
