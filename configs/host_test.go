package configs

import (
	"strings"
	"testing"
)

func TestSplitHost(t *testing.T) {
	for _, tt := range []struct{ in, host, port string }{
		{"ide.example.com", "ide.example.com", ""},
		{"ide.example.com:8443", "ide.example.com", "8443"},
		{"ide.example.com:", "ide.example.com", ""},
		{"ide.example.com.", "ide.example.com.", ""},
		{"localhost", "localhost", ""},
		{"127.0.0.1:80", "127.0.0.1", "80"},
		{"[::1]", "[::1]", ""},
		{"[2001:db8::1]:443", "[2001:db8::1]", "443"},
		{strings.Repeat("a", 63) + ".example", strings.Repeat("a", 63) + ".example", ""},
	} {
		host, port, err := SplitHost(tt.in)
		if err != nil || host != tt.host || port != tt.port {
			t.Errorf("SplitHost(%q) = %q, %q, %v; want %q, %q", tt.in, host, port, err, tt.host, tt.port)
		}
	}
	for _, in := range []string{
		"", ":80", "a@evil.example", "good.example@evil.example", "<script>", "a b", "evil.example/x",
		"g\xc3\xb6od.example", strings.Repeat("a", 64) + ".example", strings.Repeat("a.", 127) + "com",
		"ide.example.com:0", "ide.example.com:65536", "ide.example.com:+80", "ide.example.com:080", "ide.example.com:x",
		"::1", "[::1", "[::1]x", "[127.0.0.1]", "[fe80::1%eth0]", "a..b", ".",
	} {
		if host, port, err := SplitHost(in); err == nil {
			t.Errorf("SplitHost(%q) = %q, %q; want an error", in, host, port)
		} else if strings.Contains(err.Error(), "\n") {
			t.Errorf("SplitHost(%q): multi-line error %q", in, err)
		}
	}
}

func TestRedirectHost(t *testing.T) {
	const head = "cluster: { bind: 127.0.0.1:7946 }\nbalancer:\n  tls:\n"
	for _, tt := range []struct {
		name, yaml, msg string
		line            int
	}{
		{"userinfo", "    redirect_from: 127.0.0.1:8081\n    redirect_host: a@evil.example\n", "neither a host name nor an IP address", 5},
		{"a bare IPv6 address", "    redirect_from: 127.0.0.1:8081\n    redirect_host: \"::1\"\n", "in brackets", 5},
		{"a bad port", "    redirect_from: 127.0.0.1:8081\n    redirect_host: ide.example.com:70000\n", "[1, 65535]", 5},
		{"without redirect_from", "    redirect_host: ide.example.com\n", "redirect_from is not", 4},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("b.yaml", []byte(head+tt.yaml))
			if e := expectProblem(t, err, "balancer.tls.redirect_host", tt.msg); e != nil && (e.File != "b.yaml" || e.Line != tt.line) {
				t.Errorf("located at %s:%d, want b.yaml:%d", e.File, e.Line, tt.line)
			}
		})
	}
	cfg, err := Parse("b.yaml", []byte(head+"    redirect_from: 127.0.0.1:8081\n    redirect_host: \"[2001:db8::1]:443\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Balancer.TLS.RedirectHost; got != "[2001:db8::1]:443" {
		t.Errorf("redirect_host %q", got)
	}
	cfg, err = Parse("b.yaml", []byte(head+"    redirect_from: 127.0.0.1:8081\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Balancer.TLS.RedirectHost; got != "" {
		t.Errorf("default redirect_host %q, want \"\" (the request's Host)", got)
	}
}

func TestAdminHosts(t *testing.T) {
	const head = "cluster: { bind: 127.0.0.1:7946 }\n"
	for _, tt := range []struct {
		name, yaml, path string
		line             int
	}{
		{"a port", "edge:\n  admin:\n    hosts: [admin.example.com:9101]\n", "edge.admin.hosts[0]", 4},
		{"userinfo", "gslb:\n  admin:\n    hosts:\n      - admin.example.com\n      - a@admin.example.com\n", "gslb.admin.hosts[1]", 6},
		{"a URL", "balancer:\n  admin:\n    hosts: [\"http://admin.example.com\"]\n", "balancer.admin.hosts[0]", 4},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("a.yaml", []byte(head+tt.yaml))
			if e := expectProblem(t, err, tt.path, "is not a host name"); e != nil && e.Line != tt.line {
				t.Errorf("located at line %d, want %d", e.Line, tt.line)
			}
		})
	}
	cfg, err := Parse("a.yaml", []byte(head+"balancer:\n  admin: { hosts: [admin.example.com, Bal-1.example.com.] }\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Balancer.Admin.Hosts; len(got) != 2 || cfg.Edge.Admin.Hosts != nil {
		t.Errorf("hosts %q; the edge's %q (default none)", got, cfg.Edge.Admin.Hosts)
	}
	next := cfg.Balancer.Admin
	next.Hosts = []string{"admin.example.com"}
	if err := cfg.Balancer.Admin.RestartChanges("balancer", next); err == nil || !strings.Contains(err.Error(), "balancer.admin.hosts") {
		t.Errorf("changing hosts: %v, want a restart named", err)
	}
}
