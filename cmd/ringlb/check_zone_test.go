package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// `ringlb check` refuses the gslb zones a start refuses: it loads them as
// the nameserver does (the zone file's records, the managed names against
// its delegations), not only the config's shape. Before, each file below
// passed the check and failed the start — a second SOA, a CNAME beside
// other data, a record of class CH, a managed name below a delegation.
func TestCheckRefusesTheZonesAStartRefuses(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, records, want string
	}{
		{"a CNAME beside the SOA", `"@ 300 IN CNAME elsewhere.example."`, "has a CNAME and SOA"},
		{"class CH", `"www 300 CH A 192.0.2.7"`, "a zone holds class IN only"},
		{"a managed name below a delegation", `"ide 300 IN NS ns.other.example."`, "delegation"},
	} {
		f := filepath.Join(dir, "g.yaml")
		os.WriteFile(f, []byte(`cluster: { bind: 127.0.0.1:7946 }
gslb:
  listen: 127.0.0.1:5353
  zones: [ { origin: ringlb.test, records: [ "@ 3600 IN SOA ns1 hostmaster 1 7200 3600 1209600 60", "ns1 3600 IN A 127.0.0.1", `+tc.records+` ] } ]
  names:
    - name: ide.ringlb.test
      regions:
        east: { serve_mode: always, members: [ { name: bal-1, address: 192.0.2.1 } ] }
`), 0o644)
		var out, errOut strings.Builder
		code := run(context.Background(), []string{"check", "-config", f}, &out, &errOut)
		if code == 0 || !strings.Contains(errOut.String(), tc.want) {
			t.Errorf("%s: exit %d, stdout %q, stderr %q: want a refusal saying %q", tc.name, code, out.String(), errOut.String(), tc.want)
		}
	}
}
