package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/ringlb/ringlb/configs"
)

// A zone is read from any file its config names: the gossip keyring named
// as a zone file, or $INCLUDEd by an inline record, must not come back in
// the config API's answers or in the log. Before, the zone parser's problem
// quoted the token it stopped at, and the keyring is one token: the cluster
// key was in a PUT's answer and the warning logged (as a zone file; a PUT
// may no longer name one, a SIGHUP reads it), and in the check's answer
// (as an $INCLUDE, which the check of inline records followed).
func TestZoneProblemsQuoteNoOtherFile(t *testing.T) {
	t.Parallel()
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

	// The host's file names the keyring as the zone's file, and SIGHUP
	// (a PUT may not name another file of the host: it is refused).
	_, view := adminCall(t, "GET", admin+"/api/config", nil, "")
	asFile := fmt.Sprintf(file, "file: "+keyFile)
	if code, out := adminCall(t, "PUT", admin+"/api/config", map[string]string{"If-Match": `"` + view["version"].(string) + `"`}, asFile); code != 403 || strings.Contains(fmt.Sprint(out), key) {
		t.Errorf("PUT naming the keyring as a zone file: %d %v, want 403 and no key", code, out)
	}
	writeFile(t, path, asFile)
	g.cmd.Process.Signal(syscall.SIGHUP)
	rec := g.waitLog(t, "SIGHUP: reload failed, still running the previous configuration")
	t.Logf("SIGHUP with the keyring as a zone file: %v", rec["err"])
	if strings.Contains(fmt.Sprint(rec), key) {
		t.Errorf("the log quotes the cluster key: %v", rec["err"])
	}

	// An inline record that includes the keyring: the check refuses it.
	_, view = adminCall(t, "GET", admin+"/api/config", nil, "")
	included := `records: [ "@ 3600 IN SOA ns1 hostmaster 1 7200 3600 1209600 60", "$INCLUDE ` + keyFile + `" ]`
	code, out := adminCall(t, "PUT", admin+"/api/config", map[string]string{"If-Match": `"` + view["version"].(string) + `"`}, fmt.Sprintf(file, included))
	t.Logf("PUT with $INCLUDE of the keyring: %d %v", code, out["error"])
	if code != 400 || strings.Contains(fmt.Sprint(out), key) {
		t.Errorf("PUT with $INCLUDE of the keyring: %d %v, want 400 and no key", code, out)
	}
	// A last PUT that applies marks the log: every line before it is in
	// the output read below.
	_, view = adminCall(t, "GET", admin+"/api/config", nil, "")
	if code, out := adminCall(t, "PUT", admin+"/api/config", map[string]string{"If-Match": `"` + view["version"].(string) + `"`}, fmt.Sprintf(file, records)); code != 200 {
		t.Fatalf("PUT of the first file: %d %v", code, out)
	}
	g.waitLog(t, "config file replaced and applied through the admin API")
	if strings.Contains(g.output(), key) {
		t.Error("the cluster key is in the gslb's log")
	}
}
