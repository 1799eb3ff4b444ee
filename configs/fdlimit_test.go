package configs

import (
	"fmt"
	"strings"
	"testing"
)

func TestMaxConnectionsFor(t *testing.T) {
	for _, tt := range []struct {
		limit, balancer, edge int
	}{
		{64, 16, 32},         // tiny: half kept
		{128, 32, 64},        // the reserve of 64
		{1024, 480, 960},     // a common default soft limit
		{20000, 9500, 19000}, // 5% kept
		{1 << 20, 498074, 996148},
		{1 << 40, 10_000_000, 10_000_000}, // unlimited: validation's ceiling
		{2, 1, 1},
	} {
		if b, e := maxConnectionsFor(tt.limit, 2), maxConnectionsFor(tt.limit, 1); b != tt.balancer || e != tt.edge {
			t.Errorf("limit %d: balancer %d, edge %d; want %d, %d", tt.limit, b, e, tt.balancer, tt.edge)
		}
	}
}

func TestMaxConnectionsDefaults(t *testing.T) {
	// 0 (or absent) derives from this process's open-file limit.
	cfg, err := Parse("derived.yaml", []byte("cluster: { bind: 127.0.0.1:7946 }\nbalancer: { limits: { max_connections: 0 } }\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := cfg.Balancer.Limits.MaxConnections, DefaultBalancerMaxConnections(); got != want || got <= 0 {
		t.Errorf("balancer.limits.max_connections = %d, want the derived %d", got, want)
	}
	if got, want := cfg.Edge.MaxConnections, DefaultEdgeMaxConnections(); got != want || got <= 0 {
		t.Errorf("edge.max_connections = %d, want the derived %d", got, want)
	}
	if got, want := cfg.GSLB.MaxTCPConnections, DefaultGSLBMaxTCPConnections(); got != want || got <= 0 || got > 1000 {
		t.Errorf("gslb.max_tcp_connections = %d, want the derived %d (at most 1000)", got, want)
	}
	if !strings.Contains(cfg.Summary(), "open-file limit") {
		t.Errorf("summary does not show the limit the defaults derive from: %s", cfg.Summary())
	}
	// An explicit value is kept, even above what the descriptors allow.
	cfg, err = Parse("explicit.yaml", []byte("cluster: { bind: 127.0.0.1:7946 }\nbalancer: { limits: { max_connections: 5000000 } }\nedge: { max_connections: 7 }\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Balancer.Limits.MaxConnections != 5000000 || cfg.Edge.MaxConnections != 7 {
		t.Errorf("explicit limits: balancer %d, edge %d", cfg.Balancer.Limits.MaxConnections, cfg.Edge.MaxConnections)
	}
	_, err = Parse("bad.yaml", []byte("edge: { max_connections: -1 }\n"))
	if err == nil || !strings.Contains(err.Error(), "edge.max_connections: must be in range [0, 10000000], got -1") {
		t.Errorf("negative edge.max_connections: %v", err)
	}
}

func TestMaxDirectPerIP(t *testing.T) {
	// Unset: a sixteenth of max_connections, at least 1.
	for conns, want := range map[int]int{64: 4, 960: 60, 7: 1} {
		cfg, err := Parse("share.yaml", []byte(fmt.Sprintf("cluster: { bind: 127.0.0.1:7946 }\nedge: { max_connections: %d }\n", conns)))
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Edge.MaxDirectPerIP != want {
			t.Errorf("max_connections %d: edge.max_direct_per_ip = %d, want %d", conns, cfg.Edge.MaxDirectPerIP, want)
		}
	}
	_, err := Parse("bad.yaml", []byte("cluster: { bind: 127.0.0.1:7946 }\nedge:\n  max_connections: 64\n  max_direct_per_ip: 65\n"))
	if err == nil || !strings.Contains(err.Error(), "bad.yaml:4") || !strings.Contains(err.Error(), "edge.max_direct_per_ip: must be in range [1, edge.max_connections (64)], got 65") {
		t.Errorf("max_direct_per_ip above max_connections: %v", err)
	}
	_, err = Parse("neg.yaml", []byte("edge: { max_direct_per_ip: -1 }\n"))
	if err == nil || !strings.Contains(err.Error(), "edge.max_direct_per_ip: must be in range [1,") {
		t.Errorf("negative max_direct_per_ip: %v", err)
	}
}
