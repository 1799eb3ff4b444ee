package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/ringlb/ringlb/configs"
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

// The attack: a zone file, or a file it includes, sits in a directory any
// user of the host may write (not sticky): they rename it away and put
// their own zone in its place, and the next reload serves their answers —
// signed, on a DNSSEC zone. `ringlb check` (and so a start and a reload,
// which load the zones as it does) refuses it at the zone's field, as it
// refuses the config file and the secret files in such a directory.
// Before, both passed the check.
func TestCheckRefusesZoneFilesInADirectoryOthersMayWrite(t *testing.T) {
	dir := t.TempDir()
	shared := filepath.Join(dir, "shared")
	if err := os.Mkdir(shared, 0o755); err != nil {
		t.Fatal(err)
	}
	include := filepath.Join(shared, "www.inc")
	writeFile(t, include, "www 60 IN A 192.0.2.7\n")
	zones := map[string]string{
		"the zone file": filepath.Join(shared, "ringlb.test.zone"),
		"an include":    filepath.Join(dir, "ringlb.test.zone"),
	}
	cfg := filepath.Join(dir, "g.yaml")
	for name, zone := range zones {
		writeFile(t, zone, "@ 3600 IN SOA ns1 hostmaster 1 7200 3600 1209600 60\n@ 3600 IN NS ns1\nns1 3600 IN A 127.0.0.1\n$INCLUDE "+include+"\n")
		writeFile(t, cfg, `cluster: { name: g-1, bind: 127.0.0.1:0 }
gslb:
  listen: 127.0.0.1:0
  zones:
    - origin: ringlb.test
      file: `+zone+`
`)
		check := func() (int, string) {
			var out, errOut strings.Builder
			code := run(context.Background(), []string{"check", "-config", cfg}, &out, &errOut)
			return code, out.String() + errOut.String()
		}
		if err := os.Chmod(shared, 0o777); err != nil {
			t.Fatal(err)
		}
		code, out := check()
		t.Logf("%s in a directory of mode 0777: exit %d\n%s", name, code, out)
		if want := cfg + ":6: gslb.zones[0].file: "; code == 0 || !strings.Contains(out, want) || !strings.Contains(out, "directory "+shared+" ") || !strings.Contains(out, "chmod o-w "+shared) {
			t.Errorf("%s in a directory of mode 0777: exit %d, want refused at %q naming the directory and what to do", name, code, want)
		}
		for _, mode := range []os.FileMode{0o777 | os.ModeSticky, 0o775} {
			if err := os.Chmod(shared, mode); err != nil {
				t.Fatal(err)
			}
			if code, out := check(); code != 0 {
				t.Errorf("%s in a directory of mode %v: exit %d\n%s", name, mode, code, out)
			}
		}
		if err := os.Chmod(shared, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// A signed zone its secondaries transfer is served by a secondary cut off
// from this server until the zone's SOA expire, with the signatures of its
// last transfer: those have at least half of signature_refresh left when
// it last reached this server (the serial changes every half of it, so a
// secondary in touch transfers anew). With an expire longer than that —
// the usual 14 days against the default 72 h — every validating resolver
// gets bogus answers from it for the rest of the expire. Knot warns of a
// refresh too short for its caches and serves on; so does ringlb: `ringlb
// check` passes and warns, at the zone's dnssec field, saying both values
// and what to change. Before, nothing was said.
func TestCheckWarnsOfASignedZoneOutlivingItsSignaturesOnSecondaries(t *testing.T) {
	dir := t.TempDir()
	key, _, err := configs.GenerateDNSSECKey(dir, "ringlb.test", true)
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "g.yaml")
	for _, tc := range []struct {
		name, expire, transfer, timing string
		warned                         bool
	}{
		{"14 d expire, default signature_refresh", "1209600", "allow: [127.0.0.1/32]", "", true},
		{"14 d expire, secondaries told by NOTIFY only", "1209600", "notify: [\"127.0.0.1:5300\"]", "", true},
		{"37 h expire", "133200", "allow: [127.0.0.1/32]", "", true},
		{"36 h expire", "129600", "allow: [127.0.0.1/32]", "", false},
		{"14 d expire, signature_refresh 28 d", "1209600", "allow: [127.0.0.1/32]", ", signature_validity: 840h, signature_refresh: 672h", false},
		{"14 d expire, no secondaries", "1209600", "", "", false},
	} {
		transfer := ""
		if tc.transfer != "" {
			transfer = "      transfer: { " + tc.transfer + " }\n"
		}
		writeFile(t, cfg, `cluster: { name: g-1, bind: 127.0.0.1:0 }
gslb:
  listen: 127.0.0.1:0
  zones:
    - origin: ringlb.test
      records: [ "@ 3600 IN SOA ns1 hostmaster 1 7200 3600 `+tc.expire+` 60", "@ 3600 IN NS ns1", "ns1 3600 IN A 127.0.0.1" ]
`+transfer+`      dnssec: { keys: [ { file: `+key+` } ]`+tc.timing+` }
`)
		var out, errOut strings.Builder
		code := run(context.Background(), []string{"check", "-config", cfg}, &out, &errOut)
		t.Logf("%s: exit %d\n%s%s", tc.name, code, out.String(), errOut.String())
		if code != 0 {
			t.Errorf("%s: exit %d, want the check passed", tc.name, code)
			continue
		}
		warning := fmt.Sprintf("warning: %s:%d: gslb.zones[0].dnssec: ", cfg, 7+strings.Count(transfer, "\n"))
		warned := strings.Contains(errOut.String(), warning)
		switch {
		case tc.warned && (!warned || !strings.Contains(errOut.String(), "expire") || !strings.Contains(errOut.String(), "signature_refresh")):
			t.Errorf("%s: want a warning %q naming the SOA expire and signature_refresh", tc.name, warning)
		case !tc.warned && strings.Contains(errOut.String(), "warning:"):
			t.Errorf("%s: warned", tc.name)
		}
	}
}

// The config API says what `ringlb check` warns of a gslb's zones, beside
// the file's own warnings: a check and a PUT of a signed zone whose SOA
// expire outlasts the signatures its secondaries hold both name it at the
// zone's dnssec field. Before, only the file's own warnings were answered
// (the zone's went to the node's log alone, a PUT's to nobody), and a file
// whose zones were refused was answered with none of its own.
func TestConfigAPIAnswersTheZonesWarnings(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the real binary; skipped with -short")
	}
	t.Parallel()
	bin := buildBinary(t)
	dir := t.TempDir()
	key, _, err := configs.GenerateDNSSECKey(dir, "ringlb.test", true)
	if err != nil {
		t.Fatal(err)
	}
	config := func(expire string) string {
		return `cluster: { name: g-1, bind: 127.0.0.1:0, profile: local }
gslb:
  listen: 127.0.0.1:0
  admin: { listen: 127.0.0.1:0 }
  zones:
    - origin: ringlb.test
      records: [ "@ 3600 IN SOA ns1 hostmaster 1 7200 3600 ` + expire + ` 60", "@ 3600 IN NS ns1", "ns1 3600 IN A 127.0.0.1" ]
      transfer: { allow: [127.0.0.1/32] }
      dnssec: { keys: [ { file: ` + key + ` } ] }
`
	}
	path := filepath.Join(dir, "g.yaml")
	writeFile(t, path, config("129600")) // 36 h: nothing to warn of
	g := startProc(t, bin, "gslb", "-config", path)
	admin := "http://" + g.waitLog(t, "gslb started")["admin"].(string)
	warning := path + ":9: gslb.zones[0].dnssec: "
	warned := func(out map[string]any) bool {
		list, _ := out["warnings"].([]any)
		for _, w := range list {
			if s := fmt.Sprint(w); strings.HasPrefix(s, warning) && strings.Contains(s, "expire") {
				return true
			}
		}
		return false
	}
	long := config("1209600") // 14 d
	code, out := adminCall(t, "POST", admin+"/api/config/check", nil, long)
	t.Logf("check of a 14 d expire: %d %v", code, out)
	if code != 200 || !warned(out) {
		t.Errorf("check of a 14 d expire: %d %v, want 200 warning %q…", code, out, warning)
	}
	_, view := adminCall(t, "GET", admin+"/api/config", nil, "")
	code, out = adminCall(t, "PUT", admin+"/api/config", map[string]string{"If-Match": `"` + view["version"].(string) + `"`}, long)
	t.Logf("PUT of a 14 d expire: %d %v", code, out)
	if code != 200 || !warned(out) {
		t.Errorf("PUT of a 14 d expire: %d %v, want 200 warning %q…", code, out, warning)
	}

	// A zone refused is answered with the file's own warnings besides,
	// as `ringlb check` prints them after the zone's problems.
	refused := strings.Replace(long, `"ns1 3600 IN A 127.0.0.1" ]`, `"ns1 3600 IN A 127.0.0.1", "chaos 60 CH TXT x" ]`, 1) +
		"  monitors: { web: { type: https } }\n"
	code, out = adminCall(t, "POST", admin+"/api/config/check", nil, refused)
	t.Logf("check of a zone refused and an https monitor without server_name: %d %v", code, out)
	if list, _ := out["warnings"].([]any); code != 400 || !strings.Contains(fmt.Sprint(list), "https verifies nothing") {
		t.Errorf("check of a zone refused: %d %v, want 400 with the file's warning of the https monitor", code, out)
	}
}
