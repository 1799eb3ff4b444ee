package configs

import (
	"strings"
	"testing"
)

// One client's share of the DNS TCP and admin ports: a default that
// follows its total (gslb) or a fixed quarter of it (admin), ranges
// checked like their siblings', the admin one read only at start.
func TestPerIPShares(t *testing.T) {
	cfg, err := Parse("shares.yaml", []byte("cluster: { bind: 127.0.0.1:7946 }\ngslb: { max_tcp_connections: 320 }\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.GSLB.MaxTCPConnectionsPerIP; got != 20 {
		t.Errorf("gslb.max_tcp_connections_per_ip = %d with max_tcp_connections 320, want 20", got)
	}
	if got := DefaultGSLBMaxTCPConnectionsPerIP(10); got != 1 {
		t.Errorf("a share of 10 connections: %d, want at least 1", got)
	}
	for name, a := range map[string]Admin{"balancer": cfg.Balancer.Admin, "edge": cfg.Edge.Admin, "gslb": cfg.GSLB.Admin} {
		if a.MaxConnectionsPerIP != DefaultAdminMaxConnectionsPerIP || a.MaxConnectionsPerIP >= a.MaxConnections {
			t.Errorf("%s.admin.max_connections_per_ip = %d of %d", name, a.MaxConnectionsPerIP, a.MaxConnections)
		}
	}
	cfg, err = Parse("explicit.yaml", []byte("cluster: { bind: 127.0.0.1:7946 }\ngslb: { max_tcp_connections_per_ip: 5, admin: { max_connections_per_ip: 7 } }\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.GSLB.MaxTCPConnectionsPerIP != 5 || cfg.GSLB.Admin.MaxConnectionsPerIP != 7 {
		t.Errorf("explicit shares: %d, %d", cfg.GSLB.MaxTCPConnectionsPerIP, cfg.GSLB.Admin.MaxConnectionsPerIP)
	}
	_, err = Parse("bad.yaml", []byte("gslb: { max_tcp_connections_per_ip: -1, admin: { max_connections_per_ip: 20000 } }\n"))
	for _, want := range []string{
		"gslb.max_tcp_connections_per_ip: must be in range [1, 10000000], got -1",
		"gslb.admin.max_connections_per_ip: must be in range [1, 10000], got 20000",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("want %q, got %v", want, err)
		}
	}
	a := cfg.GSLB.Admin
	b := a
	b.MaxConnectionsPerIP++
	if err := a.RestartChanges("gslb", b); err == nil || !strings.Contains(err.Error(), "gslb.admin.max_connections_per_ip") {
		t.Errorf("a changed admin.max_connections_per_ip needs no restart: %v", err)
	}
}
