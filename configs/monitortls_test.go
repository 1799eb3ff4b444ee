package configs

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A gslb https monitor's tls section: the names a static edge's tls uses
// (server_name, ca_file, cert_file, key_file), its files relative to the
// config's directory and named to the config API as files of the host;
// its rules; and the warning of an https monitor that verifies nothing.
func TestGSLBMonitorTLS(t *testing.T) {
	dir := t.TempDir()
	certPEM, keyPEM := selfSignedPEM(t)
	for f, content := range map[string]string{"ca.pem": certPEM, "gslb.pem": certPEM, "gslb-key.pem": keyPEM} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	parse := func(monitor string) (*Config, error) {
		t.Helper()
		src := strings.Replace(goodGSLB, "bal: { type: http, port: 8080, interval: 500ms, timeout: 250ms }", "bal: "+monitor, 1)
		if src == goodGSLB {
			t.Fatal("no monitor to replace")
		}
		return Parse(filepath.Join(dir, "g.yaml"), []byte(src))
	}

	cfg, err := parse("{ type: https, tls: { server_name: bal.ringlb.test, ca_file: ca.pem, cert_file: gslb.pem, key_file: gslb-key.pem } }")
	if err != nil {
		t.Fatal(err)
	}
	if tls := cfg.GSLB.Monitors["bal"].TLS; tls.CAFile != filepath.Join(dir, "ca.pem") || tls.KeyFile != filepath.Join(dir, "gslb-key.pem") {
		t.Errorf("files not relative to the config's directory: %+v", tls)
	}
	if w := cfg.Warnings(); len(w) != 0 {
		t.Errorf("a verifying monitor warned: %v", w)
	}
	plain, err := parse("{ type: https }")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(plain.FileChanges(cfg), ","); got != "gslb.monitors.bal.tls.ca_file,gslb.monitors.bal.tls.cert_file,gslb.monitors.bal.tls.key_file" {
		t.Errorf("FileChanges = %q: a PUT of the config API must not point a monitor at files of the host", got)
	}

	for _, tc := range []struct{ monitor, warn string }{
		{"{ type: https }", "https verifies nothing without tls.server_name"},
		{"{ type: http }", ""},
		{"{ type: tcp, port: 80 }", ""},
	} {
		cfg, err := parse(tc.monitor)
		if err != nil {
			t.Fatal(err)
		}
		w := cfg.Warnings()
		switch {
		case tc.warn == "" && len(w) > 0:
			t.Errorf("%s: warned %v", tc.monitor, w)
		case tc.warn != "" && (len(w) != 1 || w[0].Path != "gslb.monitors.bal.type" || w[0].Line == 0 || !strings.Contains(w[0].Msg, tc.warn)):
			t.Errorf("%s: warnings %v, want one at gslb.monitors.bal.type (with its line) saying %q", tc.monitor, w, tc.warn)
		default:
			t.Logf("%s: %v", tc.monitor, w)
		}
	}

	for _, tc := range []struct{ monitor, path, msg string }{
		{"{ type: http, tls: { server_name: bal.ringlb.test } }", "gslb.monitors.bal.tls", "is for type https"},
		{"{ type: https, tls: { ca_file: ca.pem } }", "gslb.monitors.bal.tls.server_name", "is required with tls"},
		{"{ type: https, tls: { server_name: bal.ringlb.test, cert_file: gslb.pem } }", "gslb.monitors.bal.tls", "cert_file and key_file must be set together"},
		{"{ type: https, tls: { server_name: bal.ringlb.test, ca_file: nope.pem } }", "gslb.monitors.bal.tls.ca_file", "cannot read"},
		{"{ type: https, tls: { server_name: 'bal ringlb' } }", "gslb.monitors.bal.tls.server_name", "not a host name"},
	} {
		_, err := parse(tc.monitor)
		expectProblem(t, err, tc.path, tc.msg)
	}

	// A static edge's checks verify by the edge's own tls.
	_, err = Parse(filepath.Join(dir, "b.yaml"), []byte(`cluster: { bind: 127.0.0.1:7946 }
balancer:
  edges:
    - { name: e1, url: "https://10.0.0.1:8443", monitor: { type: https, tls: { server_name: e1.test } } }
`))
	expectProblem(t, err, "balancer.edges[0].monitor.tls", "set balancer.edges[0].tls instead")
}
