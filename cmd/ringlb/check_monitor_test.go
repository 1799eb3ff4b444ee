package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// `ringlb check` says, as a warning that passes, that a gslb https monitor
// without tls.server_name verifies nothing; with one it says nothing.
func TestCheckWarnsOfHTTPSMonitorThatVerifiesNothing(t *testing.T) {
	dir := t.TempDir()
	conf := func(monitor string) string {
		f := filepath.Join(dir, "g.yaml")
		os.WriteFile(f, []byte(`cluster: { bind: 127.0.0.1:7946 }
gslb:
  listen: 127.0.0.1:5353
  zones: [ { origin: ringlb.test, records: [ "@ 3600 IN SOA ns1 hostmaster 1 7200 3600 1209600 60" ] } ]
  monitors:
    bal: `+monitor+`
  names:
    - name: ide.ringlb.test
      regions:
        east: { monitor: bal, members: [ { name: bal-1, address: 192.0.2.1 } ] }
`), 0o644)
		return f
	}
	for _, tc := range []struct{ monitor, warning string }{
		{"{ type: https }", ":6: gslb.monitors.bal.type: https verifies nothing without tls.server_name"},
		{"{ type: https, tls: { server_name: bal.ringlb.test } }", ""},
	} {
		var out, errOut strings.Builder
		code := run(context.Background(), []string{"check", "-config", conf(tc.monitor)}, &out, &errOut)
		t.Logf("%s: exit %d; stderr: %s", tc.monitor, code, errOut.String())
		if code != 0 || !strings.Contains(out.String(), ": ok: ") {
			t.Errorf("%s: exit %d\n%s%s", tc.monitor, code, out.String(), errOut.String())
		}
		if got := strings.Contains(errOut.String(), "warning: "); got != (tc.warning != "") || !strings.Contains(errOut.String(), tc.warning) {
			t.Errorf("%s: stderr %q, want the warning %q", tc.monitor, errOut.String(), tc.warning)
		}
	}
}

// A file with problems is refused with its warnings said too, after the
// problems: fixing them, the operator learns of the warnings in the same
// pass.
func TestCheckSaysWarningsWithProblems(t *testing.T) {
	f := filepath.Join(t.TempDir(), "g.yaml")
	writeFile(t, f, `cluster: { bind: 127.0.0.1:7946 }
gslb:
  listen: 127.0.0.1:5353
  nope: 1
  zones: [ { origin: ringlb.test, records: [ "@ 3600 IN SOA ns1 hostmaster 1 7200 3600 1209600 60" ] } ]
  monitors:
    bal: { type: https }
  names:
    - name: ide.ringlb.test
      regions:
        east: { monitor: bal, members: [ { name: bal-1, address: 192.0.2.1 } ] }
`)
	var out, errOut strings.Builder
	code := run(context.Background(), []string{"check", "-config", f}, &out, &errOut)
	stderr := errOut.String()
	t.Logf("exit %d; stderr:\n%s", code, stderr)
	problem := strings.Index(stderr, f+":4: gslb.nope: unknown field")
	warning := strings.Index(stderr, "warning: "+f+":7: gslb.monitors.bal.type: https verifies nothing without tls.server_name")
	if code != 1 || problem < 0 || warning < problem || !strings.Contains(stderr, "1 problem(s)") {
		t.Errorf("check of a file with a problem and a warning: exit %d, want 1, the problem, then the warning", code)
	}
}
