package configs

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// The key section is checked, parsed and resolved here, once: the balancer
// takes Parsed, NoKey and AssignCookieName as they are.
func TestKeySection(t *testing.T) {
	const loopback = "cluster: { bind: 127.0.0.1:7946 }\n"
	for _, tt := range []struct {
		name, yaml, path, msg string
	}{
		{"bad kinds", "balancer: { key: { sources: [heder:x, cookie:ctstickiness, query] } }", "balancer.key.sources[0]", "kind must be"},
		{"no name", "balancer: { key: { sources: [heder:x, cookie:ctstickiness, query] } }", "balancer.key.sources[2]", "KIND:NAME"},
		{"the admin login cookie", "balancer: { key: { sources: [header:ctstickiness, cookie:ringlb_admin] } }", "balancer.key.sources[1]", "admin ports' login"},
		{"the admin login cookie over TLS", "balancer: { key: { sources: [cookie:__Host-ringlb_admin] } }", "balancer.key.sources[0]", "admin ports' login"},
		{"max length", "balancer: { key: { max_length: 100000 } }", "balancer.key.max_length", "[1, 4096]"},
		{"assign without cookie", "balancer: { key: { sources: [header:ctstickiness], assign_cookie: true } }", "balancer.key.assign_cookie", "cookie:NAME"},
		{"no_key assign without cookie", "balancer: { key: { sources: [header:ctstickiness], no_key: assign_cookie } }", "balancer.key.no_key", "cookie:NAME"},
		{"no_key", "balancer: { key: { no_key: guess } }", "balancer.key.no_key", "must be assign_cookie, source_ip or reject"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("k.yaml", []byte(loopback+tt.yaml))
			expectProblem(t, err, tt.path, tt.msg)
		})
	}
	for _, tt := range []struct {
		yaml, noKey, cookie string
		sources             []KeySource
	}{
		{"{}", NoKeyAssignCookie, "ctstickiness", []KeySource{{KeyFromHeader, "ctstickiness", 0}, {KeyFromCookie, "ctstickiness", 0}, {KeyFromQuery, "token", 0}}},
		{"{ sources: [header:x, path:2] }", NoKeyReject, "", []KeySource{{KeyFromHeader, "x", 0}, {KeyFromPath, "2", 2}}},
		{"{ sources: [cookie:sid], assign_cookie: false }", NoKeyReject, "", []KeySource{{KeyFromCookie, "sid", 0}}},
		{"{ sources: [cookie:sid], no_key: source_ip }", NoKeySourceIP, "", []KeySource{{KeyFromCookie, "sid", 0}}},
	} {
		cfg, err := Parse("k.yaml", []byte(loopback+"balancer: { key: "+tt.yaml+" }"))
		if err != nil {
			t.Fatalf("%s: %v", tt.yaml, err)
		}
		k := cfg.Balancer.Key
		if k.NoKey != tt.noKey || k.AssignCookieName != tt.cookie || len(k.Parsed) != len(tt.sources) {
			t.Errorf("%s: no_key %q cookie %q parsed %+v", tt.yaml, k.NoKey, k.AssignCookieName, k.Parsed)
			continue
		}
		for i := range tt.sources {
			if k.Parsed[i] != tt.sources[i] {
				t.Errorf("%s: source %d = %+v, want %+v", tt.yaml, i, k.Parsed[i], tt.sources[i])
			}
		}
	}
}

// The ring's parameters are the cluster's: cluster.ring, or balancer.ring
// where a file still sets only that, never two different rings.
func TestRingIsTheCluster(t *testing.T) {
	const loopback = "cluster: { bind: 127.0.0.1:7946"
	for _, tt := range []struct {
		name, yaml string
		want       Ring
		path, msg  string
	}{
		{"defaults", loopback + " }", Ring{DefaultRingPartitions, DefaultRingReplication, DefaultRingLoad}, "", ""},
		{"cluster.ring", loopback + ", ring: { load: 1.25 } }", Ring{DefaultRingPartitions, DefaultRingReplication, 1.25}, "", ""},
		{"balancer.ring only", loopback + " }\nbalancer: { ring: { replication: 40, load: 1.25 } }", Ring{DefaultRingPartitions, 40, 1.25}, "", ""},
		{"both, equal", loopback + ", ring: { load: 1.25 } }\nbalancer: { ring: { load: 1.25 } }", Ring{DefaultRingPartitions, DefaultRingReplication, 1.25}, "", ""},
		{"both, different", loopback + ", ring: { load: 1.25 } }\nbalancer: { ring: { load: 1.5 } }", Ring{}, "balancer.ring", "differs from cluster.ring"},
		{"bad balancer.ring located", loopback + " }\nbalancer: { ring: { load: 0.9 } }", Ring{}, "balancer.ring.load", "must be in range (1.0, 10]"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse("r.yaml", []byte(tt.yaml))
			if tt.msg != "" {
				if e := expectProblem(t, err, tt.path, tt.msg); e != nil && e.Line == 0 {
					t.Errorf("%s has no line", e)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Cluster.Ring != tt.want {
				t.Errorf("cluster.ring = %+v, want %+v", cfg.Cluster.Ring, tt.want)
			}
		})
	}
}

// The session table's settings, a static edge's weight 0 (drain) and its
// TLS block are checked here, each problem naming its field.
func TestSessionTableAndStaticEdges(t *testing.T) {
	const loopback = "cluster: { bind: 127.0.0.1:7946 }\n"
	for _, tt := range []struct {
		name, yaml, path, msg string
	}{
		{"linger", "balancer: { session_table: { linger: 10ms } }", "balancer.session_table.linger", "[1s, 24h0m0s]"},
		{"entries", "balancer: { session_table: { max_entries: 10 } }", "balancer.session_table.max_entries", "[1000, 100000000]"},
		{"rate", "balancer: { session_table: { new_keys_per_ip: -1 } }", "balancer.session_table.new_keys_per_ip", "(0, 1000000]"},
		{"startup wait", "balancer: { session_table: { startup_wait: 1h } }", "balancer.session_table.startup_wait", "[1ms, 5m0s]"},
		{"drain deadline", "balancer: { session_table: { drain_deadline: 10000h } }", "balancer.session_table.drain_deadline", "[1s, 720h0m0s]"},
		{"weight", "balancer: { edges: [ { name: a, url: \"http://127.0.0.1:1\", weight: 11 } ] }", "balancer.edges[0].weight", "[0, 10]"},
		{"tls on http", "balancer: { edges: [ { name: a, url: \"http://127.0.0.1:1\", tls: { server_name: a.example } } ] }", "balancer.edges[0].tls", "not https://"},
		{"tls pair", "balancer: { edges: [ { name: a, url: \"https://127.0.0.1:1\", tls: { cert_file: k.yaml } } ] }", "balancer.edges[0].tls", "set together"},
		{"tls ca", "balancer: { edges: [ { name: a, url: \"https://127.0.0.1:1\", tls: { ca_file: /nonexistent/ca.pem } } ] }", "balancer.edges[0].tls.ca_file", "cannot read"},
		{"tls name", "balancer: { edges: [ { name: a, url: \"https://127.0.0.1:1\", tls: { server_name: \"a b\" } } ] }", "balancer.edges[0].tls.server_name", "not a host name"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("k.yaml", []byte(loopback+tt.yaml))
			expectProblem(t, err, tt.path, tt.msg)
		})
	}
	cfg, err := Parse("k.yaml", []byte(loopback+"balancer: { edges: [ { name: a, url: \"http://127.0.0.1:1\" }, { name: b, url: \"http://127.0.0.1:2\", weight: 0 } ] }"))
	if err != nil {
		t.Fatal(err)
	}
	st := cfg.Balancer.SessionTable
	if st.Linger.D() != DefaultSessionLinger || st.MaxEntries != DefaultSessionTableEntries || st.NewKeysPerIP != DefaultNewKeysPerIP ||
		st.NewKeysBurst != 10*DefaultNewKeysPerIP || st.StartupWait.D() != DefaultSessionStartupWait || st.DrainDeadline.D() != DefaultDrainDeadline {
		t.Errorf("session_table defaults: %+v", st)
	}
	if w := cfg.Balancer.Edges; *w[0].Weight != 1 || *w[1].Weight != 0 {
		t.Errorf("weights %d, %d; want the default 1 and an explicit 0", *w[0].Weight, *w[1].Weight)
	}
}

// A static edge's name is held to a node name's bound (MaxNodeName bytes):
// the balancers' live-session table carries a name in at most 255 bytes,
// and the entries of a static edge named longer were shared with no other
// balancer and dropped from the table handed to a new process in an
// upgrade, without a word. Refused with its file, line and path; a name
// of the bound passes.
func TestStaticEdgeNameLongerThanANodeNameRefused(t *testing.T) {
	const loopback = "cluster: { bind: 127.0.0.1:7946 }\n"
	long := "edge-" + strings.Repeat("x", 300)
	_, err := Parse("k.yaml", []byte(loopback+"balancer:\n  edges:\n    - { name: a, url: \"http://127.0.0.1:1\" }\n    - { name: "+long+", url: \"http://127.0.0.1:2\" }\n"))
	if e := expectProblem(t, err, "balancer.edges[1].name", fmt.Sprintf("%d bytes, at most %d", len(long), MaxNodeName)); e != nil && (e.File != "k.yaml" || e.Line != 5) {
		t.Errorf("refused at %s:%d, want k.yaml:5", e.File, e.Line)
	}
	if _, err := Parse("k.yaml", []byte(loopback+"balancer: { edges: [ { name: "+strings.Repeat("x", MaxNodeName)+", url: \"http://127.0.0.1:1\" } ] }")); err != nil {
		t.Errorf("a name of %d bytes: %v", MaxNodeName, err)
	}
}

// A static edge is checked by a TCP connect to its URL's port unless its
// monitor names another type: a block that sets only the timings keeps
// the connect (it switched to an HTTP GET of /_ringlb/health, which a
// third-party backend answers 404, so the edge never came up). A gslb
// monitor keeps its own defaults: http on port 80.
func TestStaticEdgeMonitorDefaults(t *testing.T) {
	const head = "cluster: { bind: 127.0.0.1:7946 }\nbalancer:\n  edges:\n    - name: e1\n      url: http://127.0.0.1:7101\n"
	for _, tt := range []struct {
		name, monitor string
		want          Monitor
	}{
		{"no monitor", "", Monitor{Type: MonitorTCP, Port: 7101, Interval: Duration(2 * time.Second)}},
		{"timings only", "      monitor: { interval: 5s }\n", Monitor{Type: MonitorTCP, Port: 7101, Interval: Duration(5 * time.Second)}},
		{"http named", "      monitor: { type: http }\n", Monitor{Type: MonitorHTTP, Port: 7101, Path: PathHealth, Interval: Duration(2 * time.Second)}},
		{"port given", "      monitor: { port: 9101 }\n", Monitor{Type: MonitorTCP, Port: 9101, Interval: Duration(2 * time.Second)}},
	} {
		cfg, err := Parse("m.yaml", []byte(head+tt.monitor))
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		m := cfg.Balancer.Edges[0].Monitor
		if m.Type != tt.want.Type || m.Port != tt.want.Port || m.Path != tt.want.Path || m.Interval != tt.want.Interval {
			t.Errorf("%s: type %s port %d path %q interval %s, want type %s port %d path %q interval %s", tt.name,
				m.Type, m.Port, m.Path, m.Interval.D(), tt.want.Type, tt.want.Port, tt.want.Path, tt.want.Interval.D())
		}
	}
	cfg, err := Parse("m.yaml", []byte("cluster: { bind: 127.0.0.1:7946 }\ngslb:\n  monitors:\n    bal: { interval: 5s }\n"))
	if err != nil {
		t.Fatal(err)
	}
	if m := cfg.GSLB.Monitors["bal"]; m.Type != MonitorHTTP || m.Port != 80 || m.Path != PathHealth {
		t.Errorf("gslb monitor: type %s port %d path %q, want http 80 %s", m.Type, m.Port, m.Path, PathHealth)
	}
}
