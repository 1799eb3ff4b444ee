//go:build linux

package gslb

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ringlb/ringlb/configs"
)

// TestTransfersPassKzonecheck hands what a secondary receives by AXFR to
// Knot's zone checker (kzonecheck, Debian's knot-dnssecutils), the checks a
// Knot secondary runs on a zone it loads: the differential test's zone
// (every shape a zone file may hold) and the managed zone (names served
// from region pools, a wildcard, a delegation), each unsigned and signed.
// Signed, kzonecheck validates the whole zone as a secondary serving it
// would: every RRSIG against the DNSKEYs, the NSEC chain closed and covering
// every name, the bitmaps, a delegation's NS and glue unsigned and out of
// the chain — what an answer-by-answer validation (delv) never sees whole.
func TestTransfersPassKzonecheck(t *testing.T) {
	kzonecheck, err := exec.LookPath("kzonecheck")
	if err != nil {
		t.Skip("kzonecheck not installed (apt-get install knot-dnssecutils): no zone checker to hand transfers to")
	}
	dir := t.TempDir()
	zoneFile := filepath.Join(dir, "diff.test.zone")
	if err := os.WriteFile(zoneFile, []byte(diffZone), 0o600); err != nil {
		t.Fatal(err)
	}
	allow := configs.Transfer{Allow: []string{"127.0.0.0/8"}}
	diff := withTransfer(t, parseGSLBYAML(t, fmt.Sprintf(`gslb:
  listen: 127.0.0.1:0
  rate_limit: { responses_per_second: 0 }
  zones: [ { origin: diff.test, file: %q } ]
`, zoneFile)), allow)
	managed := withTransfer(t, fuzzConfig(t), allow)
	diffKSK, diffZSK := testKeysFor(t, "diff.test")
	ksk, zsk := testKeys(t)
	for _, c := range []struct {
		name, origin string
		cfg          configs.GSLB
		signed       bool
	}{
		{"the differential zone", "diff.test.", diff, false},
		{"the differential zone, signed", "diff.test.", signed(diff, diffKSK, diffZSK), true},
		{"the managed zone", "ringlb.test.", managed, false},
		{"the managed zone, signed", "ringlb.test.", signed(managed, ksk, zsk), true},
	} {
		t.Run(c.name, func(t *testing.T) {
			rrs, err := axfrOf(t, startGSLB(t, c.cfg), c.origin, "127.0.0.1", "", "")
			if err != nil {
				t.Fatal(err)
			}
			var b strings.Builder
			for _, rr := range rrs[:len(rrs)-1] { // the closing SOA repeats the first
				// The DNS library writes a record of an unknown type
				// with its class as CLASS1 (RFC 3597), which Knot's
				// zone parser does not take: IN, as a zone file says.
				b.WriteString(strings.Replace(rr.String(), "\tCLASS1\t", "\tIN\t", 1))
				b.WriteByte('\n')
			}
			file := filepath.Join(t.TempDir(), "transferred.zone")
			if err := os.WriteFile(file, []byte(b.String()), 0o600); err != nil {
				t.Fatal(err)
			}
			dnssec := "off"
			if c.signed {
				dnssec = "on"
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			out, err := exec.CommandContext(ctx, kzonecheck, "-v", "-o", c.origin, "-d", dnssec, file).CombinedOutput()
			if err != nil {
				t.Errorf("kzonecheck -d %s refused the transferred zone (%d records): %v\n%s", dnssec, len(rrs)-1, err, out)
				return
			}
			t.Logf("kzonecheck -d %s: %d records, no error", dnssec, len(rrs)-1)
		})
	}
}
