package configs

import (
	"strings"
	"testing"
)

// One address under two spellings is one address at bind time: the check
// compared the text, passed localhost beside 127.0.0.1 (or 127.0.0.1 beside
// ::ffff:127.0.0.1) on one port, and the start failed "address already in
// use".
func TestRoleAddressesAreComparedAsBound(t *testing.T) {
	for _, tc := range []struct {
		name, yaml, path, want string
		line                   int
	}{
		{"localhost beside 127.0.0.1", "cluster: { bind: 127.0.0.1:7946 }\nbalancer:\n  listen: 127.0.0.1:9090\n  admin: { listen: localhost:9090 }\n",
			"balancer.admin.listen", "localhost:9090 is already used by balancer.listen (127.0.0.1:9090)", 4},
		{"a mapped spelling of 127.0.0.1", "cluster: { bind: 127.0.0.1:7946 }\nedge:\n  listen: 127.0.0.1:9090\n  admin: '[::ffff:127.0.0.1]:9090'\n",
			"edge.admin.listen", "[::ffff:127.0.0.1]:9090 is already used by edge.listen (127.0.0.1:9090)", 4},
		{"::1 written out", "cluster: { bind: '[::1]:7946' }\ngslb:\n  listen: '[0:0:0:0:0:0:0:1]:7946'\n",
			"gslb.listen", "[0:0:0:0:0:0:0:1]:7946 is already used by cluster.bind ([::1]:7946)", 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("t.yaml", []byte(tc.yaml))
			if e := expectProblem(t, err, tc.path, tc.want); e != nil && e.Line != tc.line {
				t.Errorf("at line %d, want %d: %v", e.Line, tc.line, e)
			}
		})
	}
	// A demo's nodes run in one process: the same, between them.
	demo := "demo: { nodes: [ {name: a, role: edge, listen: '127.0.0.1:1', admin: '127.0.0.1:2', gossip: '127.0.0.1:3'}, {name: b, role: balancer, listen: 'localhost:1', admin: '127.0.0.1:4', gossip: '127.0.0.1:5'} ] }"
	_, err := Parse("t.yaml", []byte(demo))
	expectProblem(t, err, "demo.nodes[1].listen", "localhost:1 is already used by demo.nodes[0].listen (127.0.0.1:1)")
	// localhost is bound as 127.0.0.1 (a listener takes a name's first IPv4
	// address): ::1 on its port is another socket.
	ok := "cluster: { bind: 127.0.0.1:7946 }\nbalancer:\n  listen: '[::1]:9090'\n  admin: { listen: localhost:9090 }\n"
	if _, err := Parse("t.yaml", []byte(ok)); err != nil {
		t.Errorf("%q: %v", ok, err)
	}
}

// A prefix is written as it is matched: one with host bits set was taken
// as its masked form (10.1.0.0/8 as 10.0.0.0/8, a typo that moves a whole
// /8 of clients, or trusts it), and an IPv4-mapped one matched no address
// (addresses are compared unmapped).
func TestPrefixesAreWrittenAsMatched(t *testing.T) {
	for _, tc := range []struct{ name, to, path, msg string }{
		{"host bits set", "west: [127.0.0.2/32, 10.1.0.0/8]", "gslb.names[0].geo.west[1]", "10.1.0.0/8 has bits set beyond its length: it would be taken as 10.0.0.0/8; write that, or the length meant"},
		{"IPv4-mapped", "west: [127.0.0.2/32, '::ffff:10.0.0.0/104']", "gslb.names[0].geo.west[1]", "::ffff:10.0.0.0/104 is an IPv4-mapped IPv6 prefix, and addresses are matched in their IPv4 form: write 10.0.0.0/8"},
		{"IPv4-mapped, host bits set", "west: [127.0.0.2/32, '::ffff:10.1.0.0/104']", "gslb.names[0].geo.west[1]", "write 10.0.0.0/8"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := strings.Replace(goodGSLB, "west: [127.0.0.2/32]", tc.to, 1)
			_, err := Parse("g.yaml", []byte(src))
			if e := expectProblem(t, err, tc.path, tc.msg); e != nil && e.Line != 14 {
				t.Errorf("at line %d, want 14: %v", e.Line, e)
			}
		})
	}
	// Who may transfer a zone is a client prefix too: 192.0.2.53/8 let a /8 do it.
	allow := strings.Replace(goodGSLB, `"ns1 3600 IN A 127.0.0.1"`, `"ns1 3600 IN A 127.0.0.1"`+"\n      transfer: { allow: [192.0.2.53/8] }", 1)
	_, err := Parse("g.yaml", []byte(allow))
	if e := expectProblem(t, err, "gslb.zones[0].transfer.allow[0]", "192.0.2.53/8 has bits set beyond its length: it would be taken as 192.0.0.0/8"); e != nil && e.Line != 10 {
		t.Errorf("at line %d, want 10: %v", e.Line, e)
	}
	// Who may gossip (and be announced) and who may send a PROXY header.
	for _, tc := range []struct{ yaml, path, msg string }{
		{"cluster: { bind: 127.0.0.1:7946, allowed_networks: [10.0.0.5/8] }\n", "cluster.allowed_networks[0]", "10.0.0.5/8 has bits set beyond its length: it would be taken as 10.0.0.0/8"},
		{"cluster: { bind: 127.0.0.1:7946 }\nbalancer:\n  proxy_protocol: { enabled: true, trusted_from: [192.0.2.10/24] }\n", "balancer.proxy_protocol.trusted_from[0]", "it would be taken as 192.0.2.0/24"},
		{"cluster: { bind: 127.0.0.1:7946 }\nbalancer:\n  proxy_protocol: { enabled: true, trusted_from: ['::ffff:192.0.2.0/120'] }\n", "balancer.proxy_protocol.trusted_from[0]", "write 192.0.2.0/24"},
	} {
		_, err := Parse("t.yaml", []byte(tc.yaml))
		if e := expectProblem(t, err, tc.path, tc.msg); e != nil && e.Line != strings.Count(tc.yaml, "\n") {
			t.Errorf("at line %d, want %d: %v", e.Line, strings.Count(tc.yaml, "\n"), e)
		}
	}
	src := strings.Replace(goodGSLB, "west: [127.0.0.2/32]", "west: [127.0.0.2/32, 10.0.0.0/8, '2001:db8::/32', '::/0', 0.0.0.0/0]", 1)
	if _, err := Parse("g.yaml", []byte(src)); err != nil {
		t.Error(err)
	}
}

// A check asks for its monitor's path: a fragment is never sent (a client
// keeps it), so /health#ready asked for /health.
func TestMonitorPathHasNoFragment(t *testing.T) {
	src := strings.Replace(goodGSLB, "bal: { type: http, port: 8080", `bal: { type: http, path: "/health#ready", port: 8080`, 1)
	_, err := Parse("g.yaml", []byte(src))
	if e := expectProblem(t, err, "gslb.monitors.bal.path", `"/health#ready" has a fragment (#ready), which a request never carries: the check would ask for /health; escape it as %23 if the path holds a #`); e != nil && e.Line != 11 {
		t.Errorf("at line %d, want 11: %v", e.Line, e)
	}
	src = strings.Replace(goodGSLB, "bal: { type: http, port: 8080", `bal: { type: http, path: "/health%23ready?full=1", port: 8080`, 1)
	if _, err := Parse("g.yaml", []byte(src)); err != nil {
		t.Error(err)
	}
}

// YAML's merge key (<<: *base) is not read: it was said an unknown field,
// which left the operator looking for a typo.
func TestMergeKeysAreSaidUnsupported(t *testing.T) {
	src := "cluster: { bind: 127.0.0.1:7946 }\nedge: &base { listen: 127.0.0.1:9090 }\nbalancer:\n  <<: *base\n"
	_, err := Parse("t.yaml", []byte(src))
	if e := expectProblem(t, err, "balancer.<<", "merge keys (<<) are not supported: write the fields out, or name each value with an alias (*name)"); e != nil && e.Line != 4 {
		t.Errorf("at line %d, want 4: %v", e.Line, e)
	}
	// In a map of names (monitors, regions) it was read as a name "<<".
	src = strings.Replace(goodGSLB, "  monitors:\n", "  monitors:\n    <<: {}\n", 1)
	_, err = Parse("g.yaml", []byte(src))
	if e := expectProblem(t, err, "gslb.monitors.<<", "merge keys (<<) are not supported"); e != nil && e.Line != 11 {
		t.Errorf("at line %d, want 11: %v", e.Line, e)
	}
}

// An explicit "" the defaults replace is refused as an explicit 0 is: the
// node would run with a value the file does not say.
func TestEmptyStringTakenForDefault(t *testing.T) {
	for _, tc := range []struct {
		name, yaml, path, msg string
		line                  int
	}{
		{"cluster name", "cluster:\n  bind: 127.0.0.1:7946\n  name: ''\n", "cluster.name", `"" would be taken for the default, `, 3},
		{"edge ownership", "cluster: { bind: 127.0.0.1:7946 }\nedge:\n  ownership: ''\n", "edge.ownership", `"" would be taken for the default, "ring"`, 3},
		{"admin address, short form", "cluster: { bind: 127.0.0.1:7946 }\nedge:\n  admin: ''\n", "edge.admin.listen", `"" would be taken for the default, "127.0.0.1:`, 3},
		{"admin address", "cluster: { bind: 127.0.0.1:7946 }\nbalancer:\n  admin: { listen: '' }\n", "balancer.admin.listen", `"" would be taken for the default, "127.0.0.1:`, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("t.yaml", []byte(tc.yaml))
			if e := expectProblem(t, err, tc.path, tc.msg); e != nil && e.Line != tc.line {
				t.Errorf("at line %d, want %d: %v", e.Line, tc.line, e)
			}
		})
	}
}
