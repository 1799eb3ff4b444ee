package configs

import (
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// StatsD on every role (udp or tcp), the access log, cluster.log_level and
// the join-token secret's rotation overlap: defaults and checks.
func TestTelemetrySettings(t *testing.T) {
	cfg, err := Parse("t.yaml", []byte("cluster: { bind: 127.0.0.1:7946 }\nbalancer: { statsd: { address: 127.0.0.1:8125, protocol: tcp }, access_log: { enabled: true } }\ngslb: { statsd: { address: 127.0.0.1:8125 } }\n"))
	if err != nil {
		t.Fatal(err)
	}
	for role, s := range map[string]StatsD{"edge": cfg.Edge.StatsD, "balancer": cfg.Balancer.StatsD, "gslb": cfg.GSLB.StatsD} {
		if s.Interval.D() != DefaultStatsDInterval || s.Protocol == "" {
			t.Errorf("%s.statsd provisioned: %+v", role, s)
		}
	}
	if cfg.Balancer.StatsD.Protocol != StatsDTCP || cfg.GSLB.StatsD.Protocol != StatsDUDP {
		t.Errorf("protocols: balancer %q gslb %q", cfg.Balancer.StatsD.Protocol, cfg.GSLB.StatsD.Protocol)
	}
	if a := cfg.Balancer.AccessLog; !a.Enabled || a.Path != "" || a.Sample != 1 {
		t.Errorf("access log provisioned: %+v", a)
	}
	if o := cfg.Edge.Auth.RotationOverlap; o == nil || *o != cfg.Edge.Auth.MaxTokenTTL {
		t.Errorf("rotation_overlap default: %v, want max_token_ttl", o)
	}
	secret := writeFile(t, "secret", strings.Repeat("s", 32))
	tests := []struct{ yaml, path, msg string }{
		{"gslb: { statsd: { address: 127.0.0.1:8125, protocol: sctp } }", "gslb.statsd.protocol", `must be udp or tcp, got "sctp"`},
		{"balancer: { statsd: { address: nope } }", "balancer.statsd.address", "is not host:port"},
		{"balancer: { access_log: { enabled: true, sample: 1.5 } }", "balancer.access_log.sample", "must be in range (0, 1], got 1.5"},
		{"balancer: { access_log: { path: /tmp/a.log } }", "balancer.access_log.enabled", "is false, so path has no effect"},
		{"balancer: { access_log: { enabled: true, path: /does/not/exist/a.log } }", "balancer.access_log.path", "does not exist"},
		// A directory passed the check, and the start failed opening it.
		{"balancer: { access_log: { enabled: true, path: " + t.TempDir() + " } }", "balancer.access_log.path", "is a directory: name a file"},
		{"cluster: { log_level: loud }", "cluster.log_level", `"loud": want debug, info, warn or error`},
		{"edge: { auth: { hmac_secret_file: " + secret + ", max_token_ttl: 1h, rotation_overlap: 2h } }", "edge.auth.rotation_overlap", "must be in range [0s, max_token_ttl (1h0m0s)], got 2h0m0s"},
	}
	for _, tt := range tests {
		yaml := tt.yaml
		if strings.HasPrefix(yaml, "cluster:") {
			yaml = strings.Replace(yaml, "cluster: { ", "cluster: { bind: 127.0.0.1:7946, ", 1)
		} else {
			yaml = "cluster: { bind: 127.0.0.1:7946 }\n" + yaml
		}
		_, err := Parse("t.yaml", []byte(yaml))
		expectProblem(t, err, tt.path, tt.msg)
	}
	// 0s is allowed and kept (no overlap), and a relative access log path
	// is relative to the config file.
	dir := t.TempDir()
	cfg, err = Parse(filepath.Join(dir, "t.yaml"), []byte("cluster: { bind: 127.0.0.1:7946, log_level: DEBUG }\nedge: { auth: { hmac_secret_file: "+secret+", rotation_overlap: 0s } }\nbalancer: { access_log: { enabled: true, path: access.log, sample: 0.25 } }\n"))
	if err != nil {
		t.Fatal(err)
	}
	if o := cfg.Edge.Auth.RotationOverlap; o == nil || *o != 0 {
		t.Errorf("rotation_overlap 0s read as %v", o)
	}
	if cfg.Balancer.AccessLog.Path != filepath.Join(dir, "access.log") {
		t.Errorf("access log path %q", cfg.Balancer.AccessLog.Path)
	}
}

// A reload names each field it cannot change, in one form for every role.
func TestRestartNeeded(t *testing.T) {
	if err := RestartNeeded("edge.listen", ":7101", ":7101"); err != nil {
		t.Errorf("same value: %v", err)
	}
	err := errors.Join(
		RestartNeeded("edge.listen", ":7101", ":7102"),
		nil,
		fmt.Errorf("reload refused: %w", RestartNeeded("cluster.join", []string{"a:1"}, []string{"b:1"})),
		RestartNeeded("edge.idle_grace", Duration(time.Minute), Duration(time.Second)),
	)
	if !errors.Is(err, ErrNeedsRestart) {
		t.Error("errors.Is(ErrNeedsRestart) false")
	}
	if got := RestartFields(err); strings.Join(got, ",") != "edge.listen,cluster.join,edge.idle_grace" {
		t.Errorf("RestartFields = %v", got)
	}
	for _, want := range []string{"edge.listen: changing :7101 to :7102 needs a restart", "cluster.join: changing [a:1] to [b:1] needs a restart", "edge.idle_grace: changing 1m0s to 1s needs a restart"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q not in %v", want, err)
		}
	}
	a := Cluster{Name: "n1", Bind: "127.0.0.1:7946", SecretKeyFile: "/a", LogLevel: "info"}
	b := a
	b.SecretKeyFile, b.LogLevel = "/b", "debug"
	if err := a.RestartChanges(b); err != nil {
		t.Errorf("the keyring and log level change live: %v", err)
	}
	b.StateDir = "/var/lib/x"
	if got := RestartFields(a.RestartChanges(b)); len(got) != 1 || got[0] != "cluster.state_dir" {
		t.Errorf("state_dir: %v", got)
	}
}

// The effective config is the role's section and the cluster's, with YAML
// names and durations as written; it quotes no secret: key, token, users
// and join-token files are named by path, and an admin user of the
// environment is not part of it.
func TestEffectiveConfigQuotesNoSecret(t *testing.T) {
	line, err := UsersLine("alice", "a long password")
	if err != nil {
		t.Fatal(err)
	}
	hash := strings.SplitN(line, ":", 2)[1]
	t.Setenv(EnvAdminUser, "bob")
	t.Setenv(EnvAdminPasswordHash, hash)
	key := keyringFile(t, 1)
	token := writeFile(t, "token", "token-0123456789-secret-value")
	secret := writeFile(t, "secret", "join-secret-0123456789abcdef")
	users := writeFile(t, "users", line+"\n")
	cfg, err := Parse("t.yaml", []byte("cluster: { bind: 127.0.0.1:7946, secret_key_file: "+key+" }\nedge: { admin: { token_file: "+token+", users_file: "+users+" }, auth: { hmac_secret_file: "+secret+" } }\n"))
	if err != nil {
		t.Fatal(err)
	}
	eff, err := cfg.Effective("edge")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := json.Marshal(eff)
	if err != nil {
		t.Fatal(err)
	}
	text := string(raw)
	for _, leak := range []string{"token-0123456789", "join-secret", hash, "$2a$"} {
		if strings.Contains(text, leak) {
			t.Errorf("the effective config quotes a secret (%q): %s", leak, text)
		}
	}
	for _, want := range []string{`"drain_timeout":"30s"`, `"token_file":"` + token + `"`, `"secret_key_file":"` + key + `"`, `"max_participants":64`} {
		if !strings.Contains(text, want) {
			t.Errorf("%s missing from %s", want, text)
		}
	}
	if _, ok := eff["balancer"]; ok {
		t.Error("an edge's effective config has the balancer section")
	}
	if _, err := cfg.Effective("demo"); err == nil {
		t.Error("unknown role: no error")
	}
}
