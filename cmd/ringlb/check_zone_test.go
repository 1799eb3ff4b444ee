package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
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

// `ringlb check` reports every problem at once: a zone's (as the
// nameserver loads it) with the rest of the file's. Before, the zones were
// loaded only once the rest had no problem, so a file with a problem
// elsewhere hid its zone's until that one was fixed: two runs for two
// problems. A gslb section with a problem of its own is not loaded.
func TestCheckReportsZoneProblemsWithTheOthers(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the real binary; skipped with -short")
	}
	bin := buildBinary(t)
	dir := t.TempDir()
	const zone = `gslb:
  listen: 127.0.0.1:0
  admin: 127.0.0.1:0
  zones:
    - origin: ringlb.test
      records:
        - "@ 3600 IN SOA ns1 hostmaster 1 7200 3600 1209600 60"
        - "ns1 3600 IN A 127.0.0.1"
        - "www 3600 IN CNAME ns1"
        - "www 3600 IN A 127.0.0.1"
`
	both := filepath.Join(dir, "both.yaml")
	writeFile(t, both, "cluster: { name: g-1, bind: 127.0.0.1:0, probe_interval: 5ms }\n"+zone)
	code, out := runRinglb(t, bin, nil, "check", "-config", both)
	t.Logf("ringlb check, two problems: exit %d\n%s", code, out)
	if code != 1 || !strings.Contains(out, both+":1: cluster.probe_interval") || !strings.Contains(out, both+":11: gslb.zones[0].records[3]: www.ringlb.test. has a CNAME and A") ||
		!strings.Contains(out, "1 problem(s), and its gslb section does not start") {
		t.Errorf("two problems, one run: exit %d, want 1 with both cluster.probe_interval and the CNAME beside an A (at its line and path)", code)
	}

	// The gslb section's own problem: its zones are not loaded.
	section := filepath.Join(dir, "section.yaml")
	writeFile(t, section, "cluster: { name: g-1, bind: 127.0.0.1:0 }\n"+strings.Replace(zone, "  listen: 127.0.0.1:0\n", "  listen: 127.0.0.1:0\n  nope: 1\n", 1))
	code, out = runRinglb(t, bin, nil, "check", "-config", section)
	t.Logf("ringlb check, a problem in the gslb section: exit %d\n%s", code, out)
	if code != 1 || !strings.Contains(out, section+":4: gslb.nope: unknown field") || strings.Contains(out, "has a CNAME and A") {
		t.Errorf("a problem in the gslb section: exit %d, want 1 with it alone", code)
	}
}

// The config API checks a gslb's zones as `ringlb check` does, before it
// writes the file: a PUT of a zone a start refuses is answered 400 and the
// file stays as it was. Before, it was written and answered 202, "not
// applied": the node ran on, but the file on disk no longer started it.
func TestConfigAPIRefusesAZoneAStartRefuses(t *testing.T) {
	t.Parallel()
	u := startUpgradeGSLB(t, "127.0.0.1:0", false)
	admin := "http://" + u.rec["admin"].(string)
	before, err := os.ReadFile(u.path)
	if err != nil {
		t.Fatal(err)
	}
	broken := strings.Replace(string(before), `"www 60 IN A 127.0.0.9"`, `"www 60 IN A 127.0.0.9", "@ 300 IN CNAME elsewhere.example.", "chaos 60 CH TXT x"`, 1)
	// The problems as `ringlb check` says them: the file's line of the
	// record and its field path, each an entry of the problems (they were
	// one entry of two lines).
	line := strings.Count(broken[:strings.Index(broken, "CNAME elsewhere")], "\n") + 1
	want := []string{
		fmt.Sprintf("%s:%d: gslb.zones[0].records[3]: ringlb.test. has a CNAME and SOA", u.path, line),
		fmt.Sprintf("%s:%d: gslb.zones[0].records[4]: chaos.ringlb.test. TXT of class CH", u.path, line),
	}
	hasProblem := func(out map[string]any) bool {
		list, _ := out["problems"].([]any)
		return len(list) == 2 && strings.HasPrefix(fmt.Sprint(list[0]), want[0]) && strings.HasPrefix(fmt.Sprint(list[1]), want[1]) &&
			strings.Contains(fmt.Sprint(out["error"]), want[0])
	}
	code, out := adminCall(t, "POST", admin+"/api/config/check", nil, broken)
	if code != 400 || !hasProblem(out) {
		t.Errorf("check of a zone a start refuses: %d %v, want 400 saying %q", code, out, want)
	}
	_, view := adminCall(t, "GET", admin+"/api/config", nil, "")
	code, out = adminCall(t, "PUT", admin+"/api/config", map[string]string{"If-Match": `"` + view["version"].(string) + `"`}, broken)
	if code != 400 || !hasProblem(out) {
		t.Errorf("PUT of a zone a start refuses: %d %v, want 400 saying %q", code, out, want)
	}
	if after, _ := os.ReadFile(u.path); string(after) != string(before) {
		t.Errorf("the config file was replaced by one that does not start:\n%s", after)
	}
}

// A zone's problems are named as the config's others are: an inline
// record's by the config file's line of that record and its field path, a
// zone file's by the zone file's line and the field that names the file.
// Every problem of a zone is said, in the same run. Before, an inline
// record was named by its place in the list ("records of ringlb.test.
// line 4", the config file's line 11) with no field path, and a zone's
// load stopped at its first problem: one run per problem.
func TestCheckNamesZoneProblemsWhereTheFileHasThem(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the real binary; skipped with -short")
	}
	bin := buildBinary(t)
	dir := t.TempDir()
	zoneFile := filepath.Join(dir, "other.test.zone")
	writeFile(t, zoneFile, `$TTL 3600
@ IN SOA ns1 hostmaster 1 7200 3600 1209600 60
@ IN NS ns1
ns1 IN A 127.0.0.1
; the problems
www IN CNAME ns1
www IN A 127.0.0.1
chaos CH TXT "x"
`)
	cfg := filepath.Join(dir, "g.yaml")
	const text = `cluster: { name: g-1, bind: 127.0.0.1:0 }
gslb:
  listen: 127.0.0.1:0
  admin: 127.0.0.1:0
  zones:
    - origin: ringlb.test
      records:
        - "@ 3600 IN SOA ns1 hostmaster 1 7200 3600 1209600 60"
        - "ns1 3600 IN A 127.0.0.1"
        - "www 3600 IN CNAME ns1"
        - "www 3600 IN A 127.0.0.1"
        - "chaos 3600 CH TXT x"
    - origin: other.test
      file: other.test.zone
`
	writeFile(t, cfg, text)
	want := []string{
		cfg + ":11: gslb.zones[0].records[3]: www.ringlb.test. has a CNAME and A",
		cfg + ":12: gslb.zones[0].records[4]: chaos.ringlb.test. TXT of class CH",
		cfg + ":14: gslb.zones[1].file: " + zoneFile + " line 7: www.other.test. has a CNAME and A",
		cfg + ":14: gslb.zones[1].file: " + zoneFile + " line 8: chaos.other.test. TXT of class CH",
	}
	code, out := runRinglb(t, bin, nil, "check", "-config", cfg)
	t.Logf("ringlb check: exit %d\n%s", code, out)
	if code != 1 {
		t.Errorf("ringlb check: exit %d, want 1", code)
	}
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("ringlb check does not say %q", w)
		}
	}
	if strings.Contains(out, "records of") {
		t.Errorf("ringlb check names a record by its place in the list")
	}

	// A start refuses the zones saying the same.
	code, out = runRinglb(t, bin, nil, "gslb", "-config", cfg)
	t.Logf("ringlb gslb: exit %d\n%s", code, out)
	if code == 0 {
		t.Errorf("ringlb gslb started")
	}
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("ringlb gslb's refusal does not say %q", w)
		}
	}

	// A reload refuses them saying the same: the node started from the
	// file without them, then given it.
	good := strings.Replace(text, "        - \"www 3600 IN A 127.0.0.1\"\n        - \"chaos 3600 CH TXT x\"\n", "", 1)
	writeFile(t, cfg, good[:strings.Index(good, "    - origin: other.test")])
	g := startProc(t, bin, "gslb", "-config", cfg)
	g.waitLog(t, "gslb started")
	writeFile(t, cfg, text)
	g.cmd.Process.Signal(syscall.SIGHUP)
	rec := g.waitLog(t, "SIGHUP: reload failed, still running the previous configuration")
	t.Logf("SIGHUP: %v", rec["err"])
	for _, w := range want {
		if !strings.Contains(fmt.Sprint(rec["err"]), w) {
			t.Errorf("the reload's refusal does not say %q", w)
		}
	}
}
