package gslb

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ringlb/ringlb/configs"
)

// Every problem Check finds of a config read from a file is named where
// the file has it (FILE:LINE: field.path: …), as configs.Load names its
// own and Check names a zone's: a TSIG key two zones give different
// secrets, the admin tokens, a pool's member, geo prefix or monitor's TLS
// files.
// Before, those said "zone ringlb.test. tsig key …", "gslb.admin.token_file:
// …" or "gslb name … region … member …" with no file or line.
func TestCheckNamesEveryProblemWhereTheConfigHasIt(t *testing.T) {
	dir := t.TempDir()
	for name, secret := range map[string]string{"a.key": "c2VjcmV0LXNlY3JldC1zZWNyZXQtMQ==", "b.key": "c2VjcmV0LXNlY3JldC1zZWNyZXQtMg==", "admin.token": strings.Repeat("t", 32)} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(secret+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	copyFile(t, newMemberCA(t, "members CA").file, filepath.Join(dir, "ca.pem"))
	path := filepath.Join(dir, "g.yaml")
	if err := os.WriteFile(path, []byte(`cluster: { bind: 127.0.0.1:0 }
gslb:
  listen: 127.0.0.1:0
  admin: { listen: 127.0.0.1:0, token_file: admin.token }
  zones:
    - origin: a.test
      records: [ "@ 3600 IN SOA ns1 hostmaster 1 7200 3600 1209600 60" ]
      transfer: { allow: [ 127.0.0.1/32 ], tsig: { name: xfr, secret_file: a.key } }
    - origin: b.test
      records: [ "@ 3600 IN SOA ns1 hostmaster 1 7200 3600 1209600 60" ]
      transfer:
        allow: [ 127.0.0.1/32 ]
        tsig: { name: xfr, secret_file: b.key }
  names:
    - name: ide.a.test
      geo: { east: [ 192.0.2.0/24 ] }
      regions:
        east: { serve_mode: always, members: [ { name: bal-1, address: 192.0.2.1 } ] }
  monitors:
    m: { type: https, tls: { server_name: bal.a.test, ca_file: ca.pem } }
`), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := configs.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	// The one problem a file that checks has: one key name, two secrets.
	_, err = Check(cfg.GSLB)
	t.Logf("%v", err)
	if want := path + ":13: gslb.zones[1].transfer.tsig.name: "; err == nil || !strings.HasPrefix(err.Error(), want) || !strings.Contains(err.Error(), "another zone has a different secret") {
		t.Errorf("want %q saying another zone has a different secret", want)
	}

	// What Check reads again, changed since the file was checked (as a
	// config built or edited in Go is): named by the field that says it.
	g := cfg.GSLB
	g.Zones = append([]configs.Zone(nil), g.Zones[0])
	g.Admin.TokenFile = filepath.Join(dir, "gone.token")
	mon := g.Monitors["m"]
	mon.TLS = &configs.EdgeTLS{ServerName: mon.TLS.ServerName, CAFile: filepath.Join(dir, "gone.pem")}
	g.Monitors = map[string]configs.Monitor{"m": mon}
	n := g.Names[0]
	n.Geo = map[string][]string{"east": {"192.0.2.0/33"}}
	g.Names = []configs.ManagedName{n}
	_, err = Check(g)
	t.Logf("%v", err)
	for _, want := range []string{
		path + ":4: gslb.admin.token_file: ",
		path + ":16: gslb.names[0].geo.east[0]: ",
		path + ":20: gslb.monitors.m.tls.ca_file: cannot read " + filepath.Join(dir, "gone.pem"),
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("want %q", want)
		}
	}
	r := n.Regions["east"]
	r.Members = []configs.Member{{Name: "bal-1", Address: "192.0.2.300"}}
	n.Regions = map[string]configs.Region{"east": r}
	n.Geo = nil
	g.Names = []configs.ManagedName{n}
	_, err = Check(g)
	t.Logf("%v", err)
	if want := path + ":18: gslb.names[0].regions.east.members[0].address: "; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("want %q", want)
	}
}
