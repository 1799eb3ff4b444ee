package configs

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestEdgeAuthDefaults(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "hmac.key")
	if err := os.WriteFile(secret, []byte("0123456789abcdef"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, auth, want string
	}{
		{"no auth configured: editor", "{}", AnonymousEditor},
		{"a secret: viewer", "{ hmac_secret_file: " + secret + " }", AnonymousViewer},
		{"required: deny", "{ hmac_secret_file: " + secret + ", required: true }", AnonymousDeny},
		{"explicit editor with a secret", "{ hmac_secret_file: " + secret + ", anonymous: editor }", AnonymousEditor},
		{"required and deny agree", "{ hmac_secret_file: " + secret + ", required: true, anonymous: deny }", AnonymousDeny},
	} {
		cfg, err := Parse("auth.yaml", []byte("cluster: { bind: 127.0.0.1:7946 }\nedge: { auth: "+tt.auth+" }\n"))
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		if cfg.Edge.Auth.Anonymous != tt.want || cfg.Edge.Auth.MaxTokenTTL.D() != DefaultMaxTokenTTL {
			t.Errorf("%s: anonymous %q, max_token_ttl %s; want %q, %s", tt.name, cfg.Edge.Auth.Anonymous, cfg.Edge.Auth.MaxTokenTTL.D(), tt.want, DefaultMaxTokenTTL)
		}
	}
	// Provision is the one home of the defaults: a config built in code
	// gets the same, and provisioning twice changes nothing.
	a := EdgeAuth{HMACSecretFile: secret}
	a.Provision()
	a.Provision()
	if a.Anonymous != AnonymousViewer || a.MaxTokenTTL.D() != 24*time.Hour {
		t.Errorf("Provision: %+v", a)
	}
}

func TestEdgeAuthRules(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "hmac.key")
	if err := os.WriteFile(secret, []byte("0123456789abcdef"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, auth, want string
	}{
		{"unknown mode", "{ hmac_secret_file: " + secret + ", anonymous: guest }", `edge.auth.anonymous: must be editor, viewer or deny, got "guest"`},
		{"required contradicts anonymous", "{ hmac_secret_file: " + secret + ", required: true, anonymous: viewer }", `edge.auth.required: true means anonymous: deny, but edge.auth.anonymous is "viewer"`},
		{"required without a secret", "{ required: true }", "edge.auth.required: needs edge.auth.hmac_secret_file"},
		{"deny without a secret", "{ anonymous: deny }", "edge.auth.anonymous: deny needs edge.auth.hmac_secret_file"},
		{"viewer without a secret", "{ anonymous: viewer }", "edge.auth.anonymous: viewer needs edge.auth.hmac_secret_file"},
		{"ttl too long", "{ max_token_ttl: 1000h }", "edge.auth.max_token_ttl: must be in range [1m, 720h0m0s], got 1000h0m0s"},
		{"ttl negative", "{ max_token_ttl: -1h }", "edge.auth.max_token_ttl: must be in range"},
	} {
		_, err := Parse("auth.yaml", []byte("edge: { auth: "+tt.auth+" }\n"))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %v, want it to contain %q", tt.name, err, tt.want)
		}
	}
}
