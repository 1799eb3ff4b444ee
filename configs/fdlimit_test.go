package configs

import (
	"fmt"
	"strings"
	"testing"
)

func TestMaxConnectionsFor(t *testing.T) {
	// The reserve: max(64, 5 %) for the node's own work, and a descriptor
	// for each connection the admin port (its max_connections) and gossip
	// (64 streams in each of two pools) may hold.
	for _, tt := range []struct {
		limit, admin, balancer, edge int
	}{
		{64, 128, 1, 1},           // tiny: the admin port and gossip may hold it all
		{256, 128, 1, 1},          // the same
		{256, 8, 28, 56},          // admin.max_connections lowered makes room
		{512, 128, 96, 192},       // the reserve of 320
		{1024, 128, 352, 704},     // a common default soft limit
		{20000, 128, 9372, 18744}, // 5% kept
		{1 << 20, 128, 497946, 995892},
		{1 << 40, 128, 10_000_000, 10_000_000}, // unlimited: validation's ceiling
		{2, 128, 1, 1},
	} {
		if b, e := maxConnectionsFor(tt.limit, 2, tt.admin), maxConnectionsFor(tt.limit, 1, tt.admin); b != tt.balancer || e != tt.edge {
			t.Errorf("limit %d, admin.max_connections %d: balancer %d, edge %d; want %d, %d", tt.limit, tt.admin, b, e, tt.balancer, tt.edge)
		}
	}
}

func TestMaxConnectionsDefaults(t *testing.T) {
	// 0 (or absent) derives from this process's open-file limit.
	cfg, err := Parse("derived.yaml", []byte("cluster: { bind: 127.0.0.1:7946 }\nbalancer: { limits: { max_connections: 0 } }\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := cfg.Balancer.Limits.MaxConnections, DefaultBalancerMaxConnections(DefaultAdminMaxConnections); got != want || got <= 0 {
		t.Errorf("balancer.limits.max_connections = %d, want the derived %d", got, want)
	}
	if got, want := cfg.Edge.MaxConnections, DefaultEdgeMaxConnections(DefaultAdminMaxConnections); got != want || got <= 0 {
		t.Errorf("edge.max_connections = %d, want the derived %d", got, want)
	}
	if got, want := cfg.GSLB.MaxTCPConnections, DefaultGSLBMaxTCPConnections(DefaultAdminMaxConnections); got != want || got <= 0 || got > 1000 {
		t.Errorf("gslb.max_tcp_connections = %d, want the derived %d (at most 1000)", got, want)
	}
	if !strings.Contains(cfg.Summary(), "open-file limit") {
		t.Errorf("summary does not show the limit the defaults derive from: %s", cfg.Summary())
	}
	// The reserve follows the admin port's cap.
	cfg, err = Parse("admin.yaml", []byte("cluster: { bind: 127.0.0.1:7946 }\nbalancer: { admin: { max_connections: 8 } }\nedge: { admin: { max_connections: 16 } }\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := cfg.Balancer.Limits.MaxConnections, DefaultBalancerMaxConnections(8); got != want || got <= DefaultBalancerMaxConnections(DefaultAdminMaxConnections) {
		t.Errorf("balancer.limits.max_connections with admin.max_connections 8 = %d, want the derived %d", got, want)
	}
	if got, want := cfg.Edge.MaxConnections, DefaultEdgeMaxConnections(16); got != want {
		t.Errorf("edge.max_connections with admin.max_connections 16 = %d, want the derived %d", got, want)
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
