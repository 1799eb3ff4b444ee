package configs

import (
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
