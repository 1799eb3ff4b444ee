package configs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestDemoConfigIsValid(t *testing.T) {
	cfg, err := LoadDemo()
	if err != nil {
		t.Fatalf("embedded demo config: %v", err)
	}
	if got := len(cfg.Demo.Nodes); got != 6 {
		t.Fatalf("demo nodes = %d, want 6 (2 balancers, 3 edges, a gslb)", got)
	}
	if g := cfg.ForNode(cfg.Demo.Nodes[5]); g.GSLB.Listen != "127.0.0.1:5353" || g.GSLB.Admin.Listen != "127.0.0.1:9053" || len(g.GSLB.Names) != 1 {
		t.Errorf("ForNode(gslb-1) = %+v", g.GSLB)
	}
	edge := cfg.ForNode(cfg.Demo.Nodes[2])
	if edge.Cluster.Name != "edge-1" || edge.Edge.Listen != "127.0.0.1:7101" || edge.Edge.AdvertiseURL != "http://127.0.0.1:7101" || edge.Cluster.Bind != "127.0.0.1:7948" {
		t.Errorf("ForNode(edge-1) = %+v / %+v", edge.Cluster, edge.Edge)
	}
	if len(edge.Demo.Nodes) != 0 {
		t.Error("a node's config still lists the demo nodes")
	}
}

// The examples pass `ringlb check` once the secrets they name exist, as
// an operator following their comments would have them (ringlb keygen).
func TestExampleFilesAreValid(t *testing.T) {
	files, _ := filepath.Glob("examples/*.yaml")
	if len(files) == 0 {
		t.Fatal("no example files in configs/examples")
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Parse(f, withSecrets(t, data)); err != nil {
			t.Errorf("%s:\n%v", f, err)
		}
	}
}

// withSecrets rewrites the secret files a shipped config names under
// /etc/ringlb/ to generated ones in a temporary directory.
func withSecrets(t *testing.T, data []byte) []byte {
	t.Helper()
	dir := t.TempDir()
	for _, name := range []string{"gossip.key", "admin.token", "join.secret"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(GenerateKey()+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// A users file of one user (password "secret", bcrypt's least cost).
	users := "admin:$2a$04$lEfHSWNLiJdhzxRE17pzy.DpOobvVtLskaSwA51xe2mPZne/B78zG\n"
	if err := os.WriteFile(filepath.Join(dir, "admin.users"), []byte(users), 0o600); err != nil {
		t.Fatal(err)
	}
	out := strings.ReplaceAll(string(data), "/etc/ringlb-secrets/", dir+"/")
	return []byte(strings.ReplaceAll(out, "/etc/ringlb/", dir+"/"))
}

// keyringFile writes a keyring of n generated keys and returns its path.
func keyringFile(t *testing.T, n int) string {
	t.Helper()
	var b strings.Builder
	for range n {
		b.WriteString(GenerateKey() + "\n")
	}
	f := filepath.Join(t.TempDir(), "gossip.key")
	if err := os.WriteFile(f, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// An empty file is refused for one reason only: gossip on every interface
// without a key. With a key, a zero config plus defaults is a working node.
func TestEmptyConfigTakesDefaults(t *testing.T) {
	_, err := Parse("empty.yaml", nil)
	var errs Errors
	if !errors.As(err, &errs) || len(errs) != 1 || errs[0].Path != "cluster.secret_key_file" {
		t.Fatalf("empty config: want exactly the missing-key error, got %v", err)
	}
	cfg, err := Parse("keyed.yaml", []byte("cluster: { secret_key_file: "+keyringFile(t, 1)+" }"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Cluster.Ring.Partitions != DefaultRingPartitions || cfg.Edge.IdleGrace.D() != 60*time.Second ||
		!*cfg.Balancer.Key.HashQuery || !strings.HasPrefix(cfg.Edge.AdvertiseURL, "http://") || !strings.HasSuffix(cfg.Edge.AdvertiseURL, ":7101") ||
		strings.Join(cfg.Balancer.Key.Sources, ",") != "header:ctstickiness,cookie:ctstickiness,query:token" {
		t.Errorf("defaults not applied: %+v", cfg)
	}
	if cfg.Balancer.Limits.MaxBodyBytes != 1<<20 {
		t.Errorf("balancer.limits.max_body_bytes defaults to %d, want 1 MiB", cfg.Balancer.Limits.MaxBodyBytes)
	}
}

func TestErrorsAreAllReportedWithLineAndPath(t *testing.T) {
	const file = `cluster:
  name: n1
  bnid: 1.2.3.4:7946
edge:
  listen: 127.0.0.1:7101
  max_participants: lots
  idle_grace: forever
  history: { messages: -1 }
balancer:
  key:
    sources: [header:ctstickiness, body:x]
  ring: { load: 0.9 }
  edges:
    - { name: e1, url: "ftp://x" }
    - { name: e1, url: "http://127.0.0.1:1" }
`
	_, err := Parse("bad.yaml", []byte(file))
	var errs Errors
	if !errors.As(err, &errs) {
		t.Fatalf("want Errors, got %v", err)
	}
	want := []struct {
		line int
		path string
		msg  string
	}{
		// Left out: at the line of its section.
		{1, "cluster.secret_key_file", "is required when cluster.bind (0.0.0.0:7946) is not a loopback address"},
		{3, "cluster.bnid", "unknown field"},
		{5, "edge.listen", "set edge.advertise_url"}, // gossip on every interface: the typo's default
		{6, "edge.max_participants", `"lots" is not a valid integer`},
		{7, "edge.idle_grace", "is not a duration"},
		{8, "edge.history.messages", "must be in range [0, 10000000], got -1"},
		{11, "balancer.key.sources[1]", "kind must be header, cookie, query or path"},
		{12, "balancer.ring.load", "must be in range (1.0, 10], got 0.9"},
		{14, "balancer.edges[0].url", "must be an http:// or https:// URL"},
		{15, "balancer.edges[1].name", `"e1" is listed twice`},
	}
	if len(errs) != len(want) {
		t.Fatalf("got %d errors, want %d:\n%v", len(errs), len(want), err)
	}
	for i, w := range want {
		e := errs[i]
		if e.File != "bad.yaml" || e.Line != w.line || e.Path != w.path || !strings.Contains(e.Msg, w.msg) {
			t.Errorf("error %d = %q, want line %d path %s containing %q", i, e.Error(), w.line, w.path, w.msg)
		}
	}
	if !strings.HasPrefix(errs[1].Error(), "bad.yaml:3: cluster.bnid: unknown field (known fields here: ") {
		t.Errorf("message format: %q", errs[1].Error())
	}
}

func TestRules(t *testing.T) {
	tests := []struct {
		name, yaml, path, msg string
	}{
		{"admin beyond loopback needs a token", "balancer: { admin: { listen: 0.0.0.0:9090 } }", "balancer.admin.token_file", "is required"},
		{"tls pair", "balancer: { tls: { cert_file: a.pem } }", "balancer.tls", "set together"},
		{"auth needs a secret", "edge: { auth: { required: true } }", "edge.auth.required", "hmac_secret_file"},
		{"bad listen", "edge: { listen: 'nope' }", "edge.listen", "not host:port"},
		{"bad port", "balancer: { listen: ':70000' }", "balancer.listen", "port must be in range"},
		{"seed port 0", "cluster: { join: ['127.0.0.1:0'] }", "cluster.join[0]", "port must be in range"},
		{"profile", "cluster: { profile: wan2 }", "cluster.profile", "must be lan or local"},
		{"missing file", "cluster: { secret_key_file: /does/not/exist }", "cluster.secret_key_file", "cannot read"},
		{"demo duplicate address", "demo: { nodes: [ {name: a, role: edge, listen: '127.0.0.1:1', admin: '127.0.0.1:2', gossip: '127.0.0.1:3'}, {name: b, role: balancer, listen: '127.0.0.1:1', admin: '127.0.0.1:4', gossip: '127.0.0.1:5'} ] }", "demo.nodes[1].listen", "already used by demo.nodes[0].listen"},
		// A demo node's admin address is that role's admin listener: the
		// same rule, or `ringlb demo` opened a token-less admin port on every
		// interface that `ringlb check` passed.
		{"demo admin beyond loopback needs a token", "demo: { nodes: [ {name: a, role: gslb, listen: '127.0.0.1:1', admin: '0.0.0.0:2', gossip: '127.0.0.1:3'} ] }", "demo.nodes[0].admin", "gslb.admin.token_file"},
		{"demo role", "demo: { nodes: [ {name: a, role: dns, listen: '127.0.0.1:1', admin: '127.0.0.1:2', gossip: '127.0.0.1:3'} ] }", "demo.nodes[0].role", "must be edge, balancer or gslb"},
		{"list expected", "cluster: { join: 127.0.0.1:7946 }", "cluster.join", "want a list"},
		// A name the other nodes would ignore as a member's (no gossip, no
		// ring, not a word at the start before): refused here.
		{"node name", "cluster: { name: 'edge 1' }", "cluster.name", "is no node name"},
		{"node name too long", "cluster: { name: " + strings.Repeat("e", MaxNodeName+1) + " }", "cluster.name", "1 to 64 letters"},
		{"demo node name", "demo: { nodes: [ {name: 'a,b', role: edge, listen: '127.0.0.1:1', admin: '127.0.0.1:2', gossip: '127.0.0.1:3'} ] }", "demo.nodes[0].name", "is no node name"},
		{"not yaml", "edge: [", "", "not valid YAML"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("t.yaml", []byte(tt.yaml))
			expectProblem(t, err, tt.path, tt.msg)
		})
	}
}

// A file that is no YAML is refused at the line the parser names, said
// once: the message repeated "line 1:" after the file:line prefix.
func TestNotYAMLSaysItsLineOnce(t *testing.T) {
	_, err := Parse("t.yaml", []byte("cluster: {}\nedge: [\n"))
	e := expectProblem(t, err, "", "not valid YAML")
	if e != nil && (e.Line == 0 || strings.Contains(e.Msg, "line ")) {
		t.Errorf("%s: want the line once, in its place", e)
	}
}

// expectProblem fails t unless err is an Errors list holding a problem at
// path whose message contains msg, and returns that problem.
func expectProblem(t *testing.T, err error, path, msg string) *FieldError {
	t.Helper()
	var errs Errors
	if !errors.As(err, &errs) {
		t.Fatalf("want Errors, got %v", err)
	}
	for _, e := range errs {
		if e.Path == path && strings.Contains(e.Msg, msg) {
			return e
		}
	}
	t.Errorf("no error at %s containing %q in:\n%v", path, msg, err)
	return nil
}

func TestSecretFileThatExistsIsAccepted(t *testing.T) {
	if _, err := Parse("t.yaml", []byte("cluster: { secret_key_file: "+keyringFile(t, 2)+" }")); err != nil {
		t.Fatal(err)
	}
}

func TestEdgeStatsD(t *testing.T) {
	cfg, err := Parse("statsd.yaml", []byte("cluster: { bind: 127.0.0.1:7946 }\nedge:\n  statsd: { address: 127.0.0.1:8125 }\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Edge.StatsD.Interval.D() != DefaultStatsDInterval {
		t.Errorf("interval default = %s", cfg.Edge.StatsD.Interval.D())
	}
	for _, tt := range []struct{ statsd, want string }{
		{"{ address: nope }", `edge.statsd.address: "nope" is not host:port`},
		{"{ address: ':8125' }", `edge.statsd.address: ":8125" needs a host`},
		{"{ address: 127.0.0.1:8125, interval: 1ms }", "edge.statsd.interval: must be in range [100ms, 1h], got 1ms"},
		{"{ address: 127.0.0.1:8125, prefix: 'a:b|c' }", "edge.statsd.prefix: \"a:b|c\" may hold only letters"},
		{"{ prefix: ringlb. }", "edge.statsd.address: is required when edge.statsd.prefix is set"},
		{"{ address: 127.0.0.1:8125, port: 1 }", "port"},
	} {
		_, err := Parse("statsd.yaml", []byte("edge:\n  statsd: "+tt.statsd+"\n"))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("statsd %s: error %v, want it to contain %q", tt.statsd, err, tt.want)
		}
	}
}

// Aliases that repeat a block are read as if it were written out; aliases
// that multiply (an alias of a list of aliases) are refused at the first
// node past a few times the file's size, in one problem, before any work
// is done on what they name.
func TestAliases(t *testing.T) {
	shared := "cluster: { bind: 127.0.0.1:7946 }\nedge:\n  admin:\n    hosts: &h [a.example.com, b.example.com]\nbalancer:\n  admin: { hosts: *h }\ngslb:\n  admin: { hosts: *h }\n"
	cfg, err := Parse("shared.yaml", []byte(shared))
	if err != nil {
		t.Fatalf("a file that shares a list: %v", err)
	}
	if got := strings.Join(cfg.GSLB.Admin.Hosts, ","); got != "a.example.com,b.example.com" {
		t.Errorf("gslb.admin.hosts through an alias = %q", got)
	}

	// Fifty monitors of one block.
	var m strings.Builder
	m.WriteString("cluster: { bind: 127.0.0.1:7946 }\ngslb:\n  monitors:\n    m0: &m { type: http, port: 8080, path: /health, expect_status: 204, interval: 3s, timeout: 1s, rise: 3, fall: 3 }\n")
	for i := 1; i < 50; i++ {
		fmt.Fprintf(&m, "    m%d: *m\n", i)
	}
	if cfg, err := Parse("monitors.yaml", []byte(m.String())); err != nil || len(cfg.GSLB.Monitors) != 50 || cfg.GSLB.Monitors["m49"].Port != 8080 {
		t.Fatalf("fifty monitors of one block (%d bytes): %v", m.Len(), err)
	}

	var b strings.Builder
	b.WriteString("cluster: { bind: 127.0.0.1:7946 }\ngslb:\n  zones:\n  - &z\n    origin: example.com\n    records: [&s bad")
	b.WriteString(strings.Repeat(",*s", 1000))
	b.WriteString("]\n")
	b.WriteString(strings.Repeat("  - *z\n", 1000))
	_, err = Parse("product.yaml", []byte(b.String()))
	var errs Errors
	if !errors.As(err, &errs) || len(errs) != 1 || !strings.Contains(errs[0].Error(), "aliases (*name) repeat more than") || errs[0].Line == 0 {
		t.Fatalf("a %d-byte file of aliases of aliases: %d problems, first %.200v", b.Len(), len(errs), err)
	}
}

// A config file is one YAML document. Before, only the first was read and
// the rest was neither checked nor parsed: a check (or a PUT of the config
// API, which writes the whole body) passed a file whose second half, an
// edit meant to apply, was silently ignored, and that was not even YAML.
func TestOneDocument(t *testing.T) {
	for _, tc := range []struct{ name, file string }{
		{"a second document", "cluster: { bind: 127.0.0.1:7946 }\n---\nedge: { listen: ':1' }\n"},
		{"a second document that is not YAML", "cluster: { bind: 127.0.0.1:7946 }\n---\n[: :\n"},
	} {
		_, err := Parse("two.yaml", []byte(tc.file))
		var errs Errors
		if !errors.As(err, &errs) || len(errs) != 1 || !strings.Contains(errs[0].Msg, "one YAML document") || errs[0].Line < 2 {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
	// The first document is checked all the same, its problems said with
	// the second's in one run: before, the second document was the only
	// problem reported, and the first one's came a run later.
	_, err := Parse("two.yaml", []byte("cluster: { bind: 127.0.0.1:7946 }\nedge:\n  bogus: 1\n---\nedge: {}\n"))
	var errs Errors
	if !errors.As(err, &errs) || len(errs) != 2 || !strings.Contains(err.Error(), "two.yaml:3: edge.bogus: unknown field") ||
		!strings.Contains(err.Error(), "two.yaml:4: a config file is one YAML document") {
		t.Errorf("a second document after a first with an unknown field: want both reported, got:\n%v", err)
	}
	for _, file := range []string{"---\ncluster: { bind: 127.0.0.1:7946 }\n", "# a comment\n---\ncluster: { bind: 127.0.0.1:7946 }\n", "cluster: { bind: 127.0.0.1:7946 }\n...\n"} {
		if _, err := Parse("one.yaml", []byte(file)); err != nil {
			t.Errorf("%q: %v", file, err)
		}
	}
}

// Text after a document that ended without a "---" (a file opening with
// a value in braces, a "..." line) is no second document: it was said to
// be one, at line 1, with "remove its ---", which the file did not have.
func TestTextAfterTheDocumentIsNotASecondOne(t *testing.T) {
	for _, file := range []string{
		"{cluster: { bind: 127.0.0.1:7946 }}\nedge:\n  listen: ':1'\n",
		"cluster: { bind: 127.0.0.1:7946 }\n...\nedge: { listen: ':1' }\n",
	} {
		_, err := Parse("t.yaml", []byte(file))
		var errs Errors
		if !errors.As(err, &errs) || len(errs) != 1 || !strings.Contains(errs[0].Msg, "not valid YAML") || strings.Contains(errs[0].Msg, "---") || errs[0].Line == 0 {
			t.Errorf("%q:\n%v", file, err)
		}
	}
}

// FileChanges names the fields that name a file of the host the running
// config does not name in the same field: a zone's file moves between
// zones, a file goes away, and both are not changes; a new path, or a known
// one moved to another field, is.
func TestFileChanges(t *testing.T) {
	dir := t.TempDir()
	key := keyringFile(t, 1)
	zone := filepath.Join(dir, "a.zone")
	if err := os.WriteFile(zone, []byte("@ 3600 IN SOA ns1 hostmaster 1 7200 3600 1209600 60\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	parse := func(s string) *Config {
		t.Helper()
		cfg, err := Parse(filepath.Join(dir, "c.yaml"), []byte("cluster: { bind: 127.0.0.1:7946, secret_key_file: "+key+" }\n"+s))
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	running := parse("gslb: { zones: [ { origin: a.test, file: a.zone }, { origin: b.test, records: [ '@ 60 IN SOA ns1 h 1 7200 3600 1209600 60' ] } ] }\n")
	for _, tc := range []struct{ name, next, want string }{
		{"the same", "gslb: { zones: [ { origin: a.test, file: a.zone } ] }\n", ""},
		{"a zone's file at another index", "gslb: { zones: [ { origin: b.test, records: [ '@ 60 IN SOA ns1 h 1 7200 3600 1209600 60' ] }, { origin: a.test, file: " + zone + " } ] }\n", ""},
		{"another file", "balancer: { access_log: { enabled: true, path: /etc/sudoers } }\n", "balancer.access_log.path"},
		{"the keyring as a zone", "gslb: { zones: [ { origin: a.test, file: " + key + " } ] }\n", "gslb.zones[0].file"},
	} {
		if got := strings.Join(running.FileChanges(parse(tc.next)), ","); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

// A duration is at most ten years, for every field: a few fields had no
// upper bound, and one near the largest a duration holds overflowed where
// it was added to: a monitor's interval with its jitter came out negative,
// and the next check came at once; an edge's drain_timeout with the stop's
// margin made a stop that drained nothing.
func TestDurationsAreBounded(t *testing.T) {
	for _, field := range []struct{ yaml, path string }{
		{"gslb: { monitors: { m: { interval: %s, jitter: 1 } } }", "gslb.monitors.m.interval"},
		{"edge: { drain_timeout: %s }", "edge.drain_timeout"},
		{"balancer: { tunnel_idle_timeout: %s }", "balancer.tunnel_idle_timeout"},
	} {
		_, err := Parse("d.yaml", []byte("cluster: { bind: 127.0.0.1:7946 }\n"+fmt.Sprintf(field.yaml, "2562047h")))
		if e := expectProblem(t, err, field.path, "at most 87600h"); e != nil && e.Line == 0 {
			t.Errorf("%s has no line", e)
		}
		if _, err := Parse("d.yaml", []byte("cluster: { bind: 127.0.0.1:7946 }\n"+fmt.Sprintf(field.yaml, "87600h"))); err != nil && strings.Contains(err.Error(), "at most 87600h") {
			t.Errorf("87600h refused: %v", err)
		}
	}
}

// YAML spells "not a number" and the infinities (.nan, .inf, -.inf), and
// every comparison with NaN is false: a limit checked "<= 0 or > max"
// passed it and was switched off (a client address's new keys a second,
// new connections a second), and a reload of a file with NaN was refused
// as "needs a restart", NaN never equal to itself. A number field takes
// finite numbers only.
func TestNumbersAreFinite(t *testing.T) {
	for _, field := range []struct{ yaml, path string }{
		{"balancer: { session_table: { new_keys_per_ip: %s } }", "balancer.session_table.new_keys_per_ip"},
		{"balancer: { limits: { new_connections_per_ip: %s } }", "balancer.limits.new_connections_per_ip"},
		{"cluster: { ring: { load: %s } }", "cluster.ring.load"},
		{"balancer: { access_log: { path: /dev/null, sample: %s } }", "balancer.access_log.sample"},
	} {
		for _, v := range []string{".nan", ".inf", "-.inf"} {
			_, err := Parse("n.yaml", []byte(fmt.Sprintf(field.yaml, v)))
			var errs Errors
			if !errors.As(err, &errs) || !slices.ContainsFunc(errs, func(e *FieldError) bool {
				return e.Path == field.path && strings.Contains(e.Msg, "not a finite number")
			}) {
				t.Errorf("%s: %s taken (%v), want it refused as not a finite number", field.path, v, err)
			}
		}
	}
}

// A number set to 0 that the defaults replace is refused, at its line: the
// node would run with a value the file does not say. Before, ttl: 0 served
// 30 s TTLs, idle_grace: 0s kept empty sessions a minute, history messages
// 0 kept 1000, a monitor's jitter 0 spread its probes by a tenth, and
// max_body_bytes: 0, documented as no limit, was 1 MiB. A 0 the
// description gives a meaning (max_connections: derived from the
// open-file limit; RRL off; a drained edge's weight) is kept.
func TestZeroTakenForDefaultRefused(t *testing.T) {
	gslb := strings.NewReplacer("ttl: 30", "ttl: 0", "failover_ttl: 5", "failover_ttl: 0", "interval: 1s,", "interval: 1s, jitter: 0,").Replace(string(DemoFile))
	if gslb == string(DemoFile) || strings.Count(gslb, ": 0") < 4 {
		t.Fatal("the demo file no longer has the ttl, failover_ttl and monitor fields this test sets to 0")
	}
	edgeBal := "cluster: { bind: 127.0.0.1:7946 }\n" +
		"edge:\n  idle_grace: 0s\n  history: { messages: 0, bytes: 4096 }\n  max_connections: 0\n" +
		"balancer:\n  limits: { max_body_bytes: 0, max_connections: 0, new_connections_per_ip: 0 }\n" +
		"  edges: [ { name: a, url: \"http://127.0.0.1:1\" }, { name: b, url: \"http://127.0.0.1:2\", weight: 0 } ]\n"
	for _, c := range []struct {
		name, yaml string
		want       []string // path: default, each at its line
	}{
		{"gslb.yaml", gslb, []string{
			"gslb.yaml:65: gslb.names[0].ttl: 0 would be taken for the default, 30",
			"gslb.yaml:66: gslb.names[0].failover_ttl: 0 would be taken for the default, 10",
			"gslb.monitors.balancer.jitter: 0 would be taken for the default, 0.1",
		}},
		{"edge.yaml", edgeBal, []string{
			"edge.yaml:3: edge.idle_grace: 0 would be taken for the default, 1m0s",
			"edge.yaml:4: edge.history.messages: 0 would be taken for the default, 1000",
			"edge.yaml:7: balancer.limits.max_body_bytes: 0 would be taken for the default, 1048576",
		}},
	} {
		_, err := Parse(c.name, []byte(c.yaml))
		var refused *Refused
		if !errors.As(err, &refused) {
			t.Fatalf("%s: got %v, want a refusal", c.name, err)
		}
		got := err.Error()
		for _, w := range c.want {
			if !strings.Contains(got, w) {
				t.Errorf("%s: no %q in:\n%s", c.name, w, got)
			}
		}
		if n := strings.Count(got, "would be taken for the default"); n != len(c.want) {
			t.Errorf("%s: %d zeros refused, want %d (the 0s with a meaning kept):\n%s", c.name, n, len(c.want), got)
		}
	}
}
