package configs

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(f, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// The trust rules: who may run gossip without a key, the admin token rule
// on every role, the addresses a node may announce.
func TestTrustRules(t *testing.T) {
	key := keyringFile(t, 1)
	token := writeFile(t, "admin.token", GenerateKey())
	short := writeFile(t, "short.token", "hunter2")
	tests := []struct {
		name, yaml, path, msg string // msg "" means: no error at all
	}{
		{"gossip on every interface needs a key", "cluster: { bind: 0.0.0.0:7946 }", "cluster.secret_key_file", "is required when cluster.bind (0.0.0.0:7946) is not a loopback address"},
		{"gossip on a private address needs a key", "cluster: { bind: 10.0.0.3:7946 }", "cluster.secret_key_file", "ringlb keygen"},
		{"gossip on a host name needs a key", "cluster: { bind: gossip.example:7946 }", "cluster.secret_key_file", "is required"},
		{"insecure_gossip is explicit", "cluster: { bind: 0.0.0.0:7946, insecure_gossip: true }", "", ""},
		{"loopback gossip may go without", "cluster: { bind: 127.0.0.1:7946 }", "", ""},
		{"a key beyond loopback", "cluster: { bind: 0.0.0.0:7946, secret_key_file: " + key + " }", "", ""},
		{"key and insecure together", "cluster: { bind: 0.0.0.0:7946, secret_key_file: " + key + ", insecure_gossip: true }", "cluster.insecure_gossip", "remove one"},
		{"allowed network", "cluster: { bind: 127.0.0.1:7946, allowed_networks: [10.0.0.0/33] }", "cluster.allowed_networks[0]", "not a CIDR"},
		{"edge admin beyond loopback needs a token", "cluster: { bind: 127.0.0.1:7946 }\nedge: { admin: 0.0.0.0:9101 }", "edge.admin.token_file", "is required when edge.admin.listen (0.0.0.0:9101)"},
		{"edge admin in full", "cluster: { bind: 127.0.0.1:7946 }\nedge: { admin: { listen: 0.0.0.0:9101, token_file: " + token + " } }", "", ""},
		{"gslb admin beyond loopback", "cluster: { bind: 127.0.0.1:7946 }\ngslb: { admin: { listen: '[::]:9053' } }", "gslb.admin.token_file", "is required"},
		{"short token", "cluster: { bind: 127.0.0.1:7946 }\nbalancer: { admin: { listen: 0.0.0.0:9090, token_file: " + short + " } }", "balancer.admin.token_file", "need at least 16"},
		{"missing token file", "cluster: { bind: 127.0.0.1:7946 }\nbalancer: { admin: { listen: 0.0.0.0:9090, token_file: /does/not/exist } }", "balancer.admin.token_file", "cannot read /does/not/exist"},
		{"advertised name", "cluster: { bind: 127.0.0.1:7946 }\nedge: { advertise_url: 'http://edge-1.example:7101' }", "edge.advertise_url", "must be an IP address"},
		{"advertised public address", "cluster: { bind: 127.0.0.1:7946 }\nedge: { advertise_url: 'http://203.0.113.7:7101' }", "edge.advertise_url", "outside cluster.allowed_networks"},
		{"public address allowed", "cluster: { bind: 127.0.0.1:7946, allowed_networks: [203.0.113.0/24] }\nedge: { advertise_url: 'http://203.0.113.7:7101' }", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("t.yaml", []byte(tt.yaml))
			if tt.msg == "" {
				if err != nil {
					t.Fatalf("want no error, got:\n%v", err)
				}
				return
			}
			expectProblem(t, err, tt.path, tt.msg)
		})
	}
}

func TestAdminShorthand(t *testing.T) {
	cfg, err := Parse("t.yaml", []byte("cluster: { bind: 127.0.0.1:7946 }\nedge:\n  admin: 127.0.0.1:9199\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Edge.Admin.Listen != "127.0.0.1:9199" || cfg.Edge.Admin.TokenFile != "" {
		t.Errorf("edge.admin = %+v", cfg.Edge.Admin)
	}
	// A bad shorthand is located at its own line.
	_, err = Parse("t.yaml", []byte("cluster: { bind: 127.0.0.1:7946 }\nedge:\n  admin: nope\n"))
	var errs Errors
	if !errors.As(err, &errs) || errs[0].Line != 3 || errs[0].Path != "edge.admin.listen" {
		t.Errorf("bad shorthand: %v", err)
	}
}

func TestKeyringFile(t *testing.T) {
	k1, k2 := GenerateKey(), GenerateKey()
	keys, err := ReadKeyring(writeFile(t, "k", "# rotated in on 2026-12-01\n"+k2+"\n\n"+k1+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 || len(keys[0]) != 32 {
		t.Fatalf("keys = %d, first %d bytes", len(keys), len(keys[0]))
	}
	const secretLine = "bm90LWEtcmVhbC1rZXktb25seS1hLXRlc3Q=" // 26 bytes: a bad length
	for _, tt := range []struct{ content, msg string }{
		{"", "holds no key"},
		{"# nothing\n", "holds no key"},
		{"not base64!\n", ":1: not a base64 key"},
		{secretLine + "\n", ":1: key is 26 bytes, want 16, 24 or 32"},
		{k1 + "\n" + k1 + "\n", ":2: the same key is listed twice"},
		{nineKeys(), "at most 8"},
	} {
		_, err := ReadKeyring(writeFile(t, "k", tt.content))
		if err == nil || !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("keyring %q: error %v, want %q", tt.content, err, tt.msg)
		}
		// The message names the line, never its content: it is a secret.
		if err != nil && strings.Contains(err.Error(), secretLine) {
			t.Errorf("error quotes the key: %v", err)
		}
	}
}

func TestCheckAdvertisedURL(t *testing.T) {
	allowed := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	for _, tt := range []struct {
		url string
		ok  bool
	}{
		{"http://10.1.2.3:7101", true},
		{"https://[::1]:9101", true},
		{"http://[::ffff:10.0.0.1]:7101", true},
		{"http://192.168.1.1:7101", false},
		{"http://10.1.2.3", false},
		{"http://edge.local:7101", false},
		{"ftp://10.1.2.3:21", false},
		{"", false},
	} {
		if err := CheckAdvertisedURL(tt.url, allowed); (err == nil) != tt.ok {
			t.Errorf("CheckAdvertisedURL(%q) = %v, want ok %v", tt.url, err, tt.ok)
		}
	}
}

func nineKeys() string {
	var b strings.Builder
	for range 9 {
		b.WriteString(GenerateKey() + "\n")
	}
	return b.String()
}

// Every file a config names for a secret, or reads after the check, is
// refused when it is not a regular file: a FIFO would hold the reader in
// open(2) until someone writes to it, a device would never end.
func TestFilesMustBeRegular(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := mkfifo(fifo); err != nil {
		t.Skip("no FIFOs here:", err)
	}
	for _, tc := range []struct{ yaml, path string }{
		{"cluster: { bind: 127.0.0.1:7946, secret_key_file: FILE }", "cluster.secret_key_file"},
		{"edge: { admin: { token_file: FILE } }", "edge.admin.token_file"},
		{"balancer: { admin: { users_file: FILE } }", "balancer.admin.users_file"},
		{"edge: { auth: { hmac_secret_file: FILE } }", "edge.auth.hmac_secret_file"},
		{"gslb: { admin: { token_file: /dev/zero } }", "gslb.admin.token_file"},
	} {
		file := strings.Replace(tc.yaml, "FILE", fifo, 1)
		if !strings.HasPrefix(file, "cluster:") {
			file = "cluster: { bind: 127.0.0.1:7946 }\n" + file
		}
		_, err := Parse(filepath.Join(dir, "c.yaml"), []byte(file))
		if !hasProblem(err, tc.path, "not a regular file") {
			t.Errorf("%s: %v", tc.path, err)
		}
	}
}

// hasProblem reports whether err holds a problem at path saying msg.
func hasProblem(err error, path, msg string) bool {
	var errs Errors
	errors.As(err, &errs)
	for _, e := range errs {
		if e.Path == path && strings.Contains(e.Msg, msg) {
			return true
		}
	}
	return false
}

// A users file's problems never quote the file: a config can name any file
// the node reads as users_file (the config API checks what an operator
// sends), and the part of a line before its first colon held, for
// /proc/self/environ, every variable up to PATH's first colon.
func TestUsersFileProblemsQuoteNothing(t *testing.T) {
	env := writeFile(t, "environ", "HOME=/root\x00API_SECRET=s3cr3t-from-the-environment\x00PATH=/usr/bin:/bin\x00")
	_, err := Parse(filepath.Join(t.TempDir(), "c.yaml"), []byte("cluster: { bind: 127.0.0.1:7946 }\nedge: { admin: { users_file: "+env+" } }\n"))
	t.Logf("users_file of an environment: %v", err)
	if !hasProblem(err, "edge.admin.users_file", "") {
		t.Fatalf("no problem for a users file that is an environment: %v", err)
	}
	if strings.Contains(err.Error(), "s3cr3t") {
		t.Errorf("the problem quotes the file: %v", err)
	}
}
