package gslb

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

// A start and a reload log what `ringlb check` warns of a signed zone
// whose SOA expire outlasts the signatures its secondaries hold (a
// secondary cut off from this server serves it bogus until it expires),
// as they log a config's warnings: its file, line and field. Before,
// nothing was said.
func TestSignedZoneOutlivingItsSignaturesIsWarnedOfAtStartAndReload(t *testing.T) {
	ksk, _ := testKeys(t)
	config := func(expire int) string {
		return fmt.Sprintf(`gslb:
  listen: 127.0.0.1:0
  zones:
    - origin: ringlb.test
      records: [ "@ 3600 IN SOA ns1 hostmaster 1 7200 3600 %d 60", "@ 3600 IN NS ns1", "ns1 3600 IN A 127.0.0.1" ]
      transfer: { allow: [127.0.0.1/32] }
      dnssec: { keys: [ { file: %s } ] }
`, expire, ksk)
	}
	const warning = `level=WARN msg="config: the SOA expire (336h0m0s) is longer than`
	const field = "config=gslb.yaml line=8 field=gslb.zones[0].dnssec"
	warned := func(log string) int { return strings.Count(log, warning) }

	long := parseGSLBYAML(t, config(1209600))
	ws, err := Check(long)
	if err != nil || len(ws) != 1 {
		t.Fatalf("Check of a 14 d expire: %v, %v; want one warning", ws, err)
	}
	var logged syncBuffer
	s := startGSLBLogging(t, long, slog.New(slog.NewTextHandler(&logged, nil)), nil)
	t.Logf("started:\n%s", logged.String())
	if warned(logged.String()) != 1 || !strings.Contains(logged.String(), field) {
		t.Errorf("the start logged %d warnings of the expire, want 1 at %s", warned(logged.String()), field)
	}

	short := parseGSLBYAML(t, config(129600))
	if ws, err := Check(short); err != nil || len(ws) != 0 {
		t.Errorf("Check of a 36 h expire: %v, %v; want no warning", ws, err)
	}
	reloadReturns(t, s, short)
	if n := warned(logged.String()); n != 1 {
		t.Errorf("a reload to a 36 h expire: %d warnings logged in all, want the start's alone", n)
	}
	reloadReturns(t, s, parseGSLBYAML(t, config(1209600)))
	if n := warned(logged.String()); n != 2 {
		t.Errorf("a reload back to 14 d: %d warnings logged in all, want 2", n)
	}
}
