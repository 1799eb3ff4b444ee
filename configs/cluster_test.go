package configs

import (
	"errors"
	"strings"
	"testing"
)

// memberlist takes an IP address for its bind and advertise addresses: a
// host name to bind made it listen on every interface (and "localhost"
// passed the loopback rule, so without a key), one to advertise failed the
// start. A demo node's gossip address is its cluster.bind.
func TestGossipAddressesAreIPAddresses(t *testing.T) {
	key := keyringFile(t, 1)
	for _, tc := range []struct {
		name, file, path, msg string
		line                  int
	}{
		{"bind on localhost", "cluster:\n  name: n1\n  bind: localhost:7946\n", "cluster.bind", "write an IP address", 3},
		{"bind on a host name", "cluster:\n  bind: gossip.example:7946\n  secret_key_file: " + key + "\n", "cluster.bind", "write an IP address", 2},
		{"advertise a host name", "cluster:\n  bind: 127.0.0.1:7946\n  advertise: node-1.example:7946\n", "cluster.advertise", "write an IP address", 3},
		{"advertise no host", "cluster:\n  bind: 127.0.0.1:7946\n  advertise: ':7946'\n", "cluster.advertise", "needs the IP address", 3},
		{"advertise every interface", "cluster:\n  bind: 127.0.0.1:7946\n  advertise: 0.0.0.0:7946\n", "cluster.advertise", "needs the IP address", 3},
		{"a demo node's gossip on localhost", "cluster: { bind: 127.0.0.1:7946 }\ndemo:\n  nodes:\n    - { name: a, role: edge, listen: '127.0.0.1:1', admin: '127.0.0.1:2', gossip: 'localhost:3' }\n", "demo.nodes[0].gossip", "write an IP address", 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("t.yaml", []byte(tc.file))
			if e := expectProblem(t, err, tc.path, tc.msg); e != nil && e.Line != tc.line {
				t.Errorf("at line %d, want %d: %v", e.Line, tc.line, e)
			}
		})
	}
	for _, file := range []string{
		"cluster: { bind: 127.0.0.1:0 }",
		"cluster: { bind: '[::1]:7946' }",
		"cluster: { bind: ':7946', secret_key_file: " + key + " }",
		"cluster: { bind: 0.0.0.0:7946, advertise: 10.0.0.11:7946, secret_key_file: " + key + " }",
		"cluster: { bind: '[::]:7946', advertise: '[fd00::11]:7946', secret_key_file: " + key + " }",
		"cluster: { bind: 127.0.0.1:7946, join: [seed-1.example:7946] }", // seeds are resolved: a name is fine
	} {
		if _, err := Parse("t.yaml", []byte(file)); err != nil {
			t.Errorf("%s: %v", file, err)
		}
	}
}

// The gossip timings are bounded: at 1µs two nodes never saw each other.
func TestGossipIntervalsAreBounded(t *testing.T) {
	for _, tc := range []struct {
		name, file, path, msg string
		line                  int
	}{
		{"probe too fast", "cluster:\n  bind: 127.0.0.1:7946\n  probe_interval: 1us\n", "cluster.probe_interval", "must be in range [100ms, 1m0s], got 1µs", 3},
		{"probe too slow", "cluster:\n  bind: 127.0.0.1:7946\n  probe_interval: 2m\n", "cluster.probe_interval", "got 2m0s", 3},
		{"probe negative", "cluster:\n  bind: 127.0.0.1:7946\n  probe_interval: -1s\n", "cluster.probe_interval", "got -1s", 3},
		{"gossip too fast", "cluster:\n  bind: 127.0.0.1:7946\n  gossip_interval: 1us\n", "cluster.gossip_interval", "must be in range [10ms, 10s], got 1µs", 3},
		{"gossip too slow", "cluster:\n  bind: 127.0.0.1:7946\n  gossip_interval: 1m\n", "cluster.gossip_interval", "got 1m0s", 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("t.yaml", []byte(tc.file))
			if e := expectProblem(t, err, tc.path, tc.msg); e != nil && e.Line != tc.line {
				t.Errorf("at line %d, want %d: %v", e.Line, tc.line, e)
			}
		})
	}
	// Unset takes the profile's; the bounds and what the tests of other
	// packages run with pass.
	for _, file := range []string{
		"cluster: { bind: 127.0.0.1:7946 }",
		"cluster: { bind: 127.0.0.1:7946, probe_interval: 100ms, gossip_interval: 10ms }",
		"cluster: { bind: 127.0.0.1:7946, probe_interval: 60s, gossip_interval: 10s }",
		"cluster: { bind: 127.0.0.1:7946, profile: local, probe_interval: 200ms, gossip_interval: 50ms }",
	} {
		if _, err := Parse("t.yaml", []byte(file)); err != nil {
			t.Errorf("%s: %v", file, err)
		}
	}
}

// A role's addresses are distinct: its data port, its admin port, gossip
// (and a gslb's DNS port, a balancer's redirect port) — two on one port,
// or one on every interface and another on the same port, cannot both be
// bound. Before, the check passed and the start failed ("bind: address
// already in use"); a demo's nodes were checked this way already.
func TestRoleAddressesAreDistinct(t *testing.T) {
	for _, tc := range []struct {
		name, yaml, path, want string
		line                   int
	}{
		{"admin on the data port", "cluster: { bind: 127.0.0.1:7946 }\nbalancer:\n  listen: 127.0.0.1:7000\n  admin: { listen: 127.0.0.1:7000 }\n",
			"balancer.admin.listen", "127.0.0.1:7000 is already used by balancer.listen", 4},
		{"gossip on every interface, the edge on its port", "cluster: { bind: 0.0.0.0:7946 }\nedge:\n  listen: 127.0.0.1:7946\n",
			"edge.listen", "127.0.0.1:7946 is already used by cluster.bind (0.0.0.0:7946)", 3},
	} {
		_, err := Parse("t.yaml", []byte(tc.yaml))
		var errs Errors
		if !errors.As(err, &errs) {
			t.Errorf("%s: want Errors, got %v", tc.name, err)
			continue
		}
		found := false
		for _, e := range errs {
			if e.Path == tc.path && strings.Contains(e.Msg, tc.want) && e.Line == tc.line {
				found = true
			}
		}
		if !found {
			t.Errorf("%s: want %s at line %d saying %q, got %v", tc.name, tc.path, tc.line, tc.want, errs)
		}
	}
	// Each role's own: another role's section in the same file (a node
	// reads only its own) may reuse a port; port 0 is any free port.
	for _, ok := range []string{
		"cluster: { bind: 127.0.0.1:7946 }\nbalancer: { listen: 127.0.0.1:7000 }\nedge: { listen: 127.0.0.1:7000 }\n",
		"cluster: { bind: 127.0.0.1:0 }\nbalancer: { listen: 127.0.0.1:0, admin: { listen: 127.0.0.1:0 } }\n",
	} {
		if _, err := Parse("t.yaml", []byte(ok)); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
}
