package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ringlb/ringlb/configs"
)

// A zone is read from any file its config names, and the config API lets
// an operator name one (a PUT; SIGHUP reads the host's edits alike): the
// gossip keyring named as a zone file, or $INCLUDEd by an inline record,
// must not come back in the PUT's answer or in the log. Before, the zone
// parser's problem quoted the token it stopped at, and the keyring is one
// token: the cluster key was in the answer and in the warning logged (as
// a zone file), and in the check's answer (as an $INCLUDE, which the check
// of inline records followed).
func TestZoneProblemsQuoteNoOtherFile(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test of the real binary; skipped with -short")
	}
	bin := buildBinary(t)
	dir := t.TempDir()
	key := configs.GenerateKey()
	keyFile := filepath.Join(dir, "gossip.key")
	if err := os.WriteFile(keyFile, []byte(key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "gslb.yaml")
	file := "cluster: { name: gslb-1, bind: 127.0.0.1:0, profile: local, secret_key_file: gossip.key }\n" +
		"gslb: { listen: 127.0.0.1:0, admin: { listen: 127.0.0.1:0 }, zones: [ { origin: ringlb.test, %s } ] }\n"
	records := `records: [ "@ 3600 IN SOA ns1 hostmaster 1 7200 3600 1209600 60", "ns1 3600 IN A 127.0.0.1" ]`
	writeFile(t, path, fmt.Sprintf(file, records))
	g := startProc(t, bin, "gslb", "-config", path)
	admin := "http://" + g.waitLog(t, "gslb started")["admin"].(string)

	for _, tc := range []struct {
		zone string
		code int // 202: written, refused by the gslb; 400: refused by the check
	}{
		{"file: " + keyFile, 202},
		{`records: [ "@ 3600 IN SOA ns1 hostmaster 1 7200 3600 1209600 60", "$INCLUDE ` + keyFile + `" ]`, 400},
	} {
		_, view := adminCall(t, "GET", admin+"/api/config", nil, "")
		code, out := adminCall(t, "PUT", admin+"/api/config", map[string]string{"If-Match": `"` + view["version"].(string) + `"`}, fmt.Sprintf(file, tc.zone))
		t.Logf("%s: %d %v", tc.zone, code, out["error"])
		if strings.Contains(fmt.Sprint(out), key) {
			t.Errorf("%s: the answer quotes the cluster key: %v", tc.zone, out["error"])
		}
		if code != tc.code || out["applied"] == true {
			t.Fatalf("%s: %d %v, want %d", tc.zone, code, out, tc.code)
		}
		if code == 202 {
			if rec := g.waitLog(t, "config file replaced through the admin API, but not applied"); strings.Contains(fmt.Sprint(rec), key) {
				t.Errorf("%s: the log quotes the cluster key: %v", tc.zone, rec["err"])
			}
		}
	}
	// A last PUT that applies marks the log: every line before it is in
	// the output read below.
	_, view := adminCall(t, "GET", admin+"/api/config", nil, "")
	if code, out := adminCall(t, "PUT", admin+"/api/config", map[string]string{"If-Match": `"` + view["version"].(string) + `"`}, fmt.Sprintf(file, records)); code != 200 {
		t.Fatalf("PUT of the first file: %d %v", code, out)
	}
	g.waitLog(t, "config file replaced and applied through the admin API")
	if strings.Contains(g.output(), key) {
		t.Error("the cluster key is in the gslb's log")
	}
}
