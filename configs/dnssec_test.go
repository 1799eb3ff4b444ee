package configs

import (
	"crypto/ecdsa"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// dnssecConfig is goodGSLB with its zone signed by keys (base names, in
// the config's directory) and extra lines under dnssec.
func dnssecConfig(keys []string, extra string) string {
	var b strings.Builder
	b.WriteString("\n      dnssec:\n        keys:\n")
	for _, k := range keys {
		b.WriteString("          - { file: " + k + " }\n")
	}
	b.WriteString(extra)
	return strings.Replace(goodGSLB, `"ns1 3600 IN A 127.0.0.1"`, `"ns1 3600 IN A 127.0.0.1"`+strings.TrimSuffix(b.String(), "\n"), 1)
}

func newKey(t *testing.T, dir, zone string, ksk bool) string {
	t.Helper()
	base, _, err := GenerateDNSSECKey(dir, zone, ksk)
	if err != nil {
		t.Fatal(err)
	}
	return base
}

func TestDNSSECKeyFiles(t *testing.T) {
	dir := t.TempDir()
	base := newKey(t, dir, "ringlb.test", true)
	pub, priv := DNSSECKeyFiles(base)
	if !strings.HasPrefix(filepath.Base(base), "Kringlb.test.+013+") {
		t.Errorf("base name %s, want BIND's K<zone>+013+<tag>", base)
	}
	for file, want := range map[string]os.FileMode{pub: 0o644, priv: 0o600} {
		fi, err := os.Stat(file)
		if err != nil {
			t.Fatal(err)
		}
		// The umask may narrow the public file; never widen the private one.
		if got := fi.Mode().Perm(); got&^want != 0 {
			t.Errorf("%s mode %04o, want at most %04o", file, got, want)
		}
	}
	for _, name := range []string{base, pub, priv} {
		key, signer, err := ReadDNSSECKey(name, "RINGLB.test")
		if err != nil {
			t.Fatalf("ReadDNSSECKey(%s): %v", name, err)
		}
		if key.Flags != FlagsKSK || key.Algorithm != dns.ECDSAP256SHA256 || key.Hdr.Name != "ringlb.test." {
			t.Errorf("key %v", key)
		}
		if _, ok := signer.(*ecdsa.PrivateKey); !ok {
			t.Errorf("signer is %T", signer)
		}
	}
	if _, _, err := GenerateDNSSECKey(dir, "bad..name", false); err == nil {
		t.Error("a bad zone name made a key")
	}
}

func TestDNSSECKeyRules(t *testing.T) {
	dir := t.TempDir()
	ksk := newKey(t, dir, "ringlb.test", true)
	zsk := newKey(t, dir, "ringlb.test", false)
	other := newKey(t, dir, "example.com", true)

	// A private file others may read: the attack is any user of the host
	// signing for the zone. Refused at check time (secretFileMode; the
	// group may read one, as every secret: TestSecretFilesAsDeployedAreAccepted).
	open := newKey(t, dir, "ringlb.test", true)
	_, openPriv := DNSSECKeyFiles(open)
	if err := os.Chmod(openPriv, 0o644); err != nil {
		t.Fatal(err)
	}
	// A .key with another key's .private.
	mixed := filepath.Join(dir, "mixed")
	kskPub, _ := DNSSECKeyFiles(ksk)
	_, zskPriv := DNSSECKeyFiles(zsk)
	copyFile(t, kskPub, mixed+".key", 0o644)
	copyFile(t, zskPriv, mixed+".private", 0o600)
	// Another algorithm.
	rsa := filepath.Join(dir, "rsa")
	if err := os.WriteFile(rsa+".key", []byte("ringlb.test. IN DNSKEY 257 3 8 AwEAAc0=\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name  string
		keys  []string
		extra string
		path  string
		msg   string
	}{
		{"private key open to others", []string{open, zsk}, "", "gslb.zones[0].dnssec.keys[0].file", "mode 0644"},
		{"key of another zone", []string{other}, "", "gslb.zones[0].dnssec.keys[0].file", "not of zone ringlb.test."},
		{"pair that does not belong together", []string{mixed}, "", "gslb.zones[0].dnssec.keys[0].file", "is not the private key of"},
		{"algorithm", []string{rsa}, "", "gslb.zones[0].dnssec.keys[0].file", "only 13"},
		{"missing", []string{filepath.Join(dir, "nope")}, "", "gslb.zones[0].dnssec.keys[0].file", "cannot read"},
		{"no KSK", []string{zsk}, "", "gslb.zones[0].dnssec.keys", "needs an active key-signing key"},
		{"KSK only published", []string{ksk}, "", "gslb.zones[0].dnssec.keys", "needs an active key-signing key"},
		{"twice", []string{ksk, ksk}, "", "gslb.zones[0].dnssec.keys[1].file", "also keys[0]"},
		{"no keys", nil, "", "gslb.zones[0].dnssec.keys", "at least one key"},
		{"refresh not below validity", []string{ksk}, "        signature_validity: 24h\n        signature_refresh: 24h\n", "gslb.zones[0].dnssec.signature_refresh", "less than signature_validity"},
		{"refresh below dnskey ttl", []string{ksk}, "        signature_refresh: 1h\n        dnskey_ttl: 7200\n", "gslb.zones[0].dnssec.signature_refresh", "at least dnskey_ttl"},
		{"validity", []string{ksk}, "        signature_validity: 30m\n", "gslb.zones[0].dnssec.signature_validity", "[1h, 2160h]"},
		{"tcp client share", []string{ksk}, "        tcp_client_share: 1.5\n", "gslb.zones[0].dnssec.tcp_client_share", "(0, 1]"},
		{"negative tcp client share", []string{ksk}, "        tcp_client_share: -0.1\n", "gslb.zones[0].dnssec.tcp_client_share", "(0, 1]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := dnssecConfig(tt.keys, tt.extra)
			if tt.name == "KSK only published" {
				src = strings.Replace(src, ksk+" }", ksk+", state: published }", 1)
			}
			_, err := Parse(filepath.Join(dir, "g.yaml"), []byte(src))
			expectProblem(t, err, tt.path, tt.msg)
		})
	}
	// A private file that does not parse: the error names it, never quotes it.
	bad := filepath.Join(dir, "bad")
	copyFile(t, kskPub, bad+".key", 0o644)
	if err := os.WriteFile(bad+".private", []byte("Private-key-format: v1.3\nAlgorithm: 13 (ECDSAP256SHA256)\nPrivateKey: SECRET!SECRET\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Parse(filepath.Join(dir, "g.yaml"), []byte(dnssecConfig([]string{bad}, "")))
	if e := expectProblem(t, err, "gslb.zones[0].dnssec.keys[0].file", "bad.private"); e != nil && strings.Contains(e.Msg, "SECRET") {
		t.Errorf("the error quotes the private file: %v", e)
	}
}

func TestDNSSECConfig(t *testing.T) {
	dir := t.TempDir()
	ksk := newKey(t, dir, "ringlb.test", true)
	zsk := newKey(t, dir, "ringlb.test", false)
	// Relative to the config file's directory, as every other file.
	src := dnssecConfig([]string{filepath.Base(ksk), filepath.Base(zsk) + ".key"}, "")
	cfg, err := Parse(filepath.Join(dir, "g.yaml"), []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	d := cfg.GSLB.Zones[0].DNSSEC
	if d.SignatureValidity.D() != 168*time.Hour || d.SignatureRefresh.D() != 72*time.Hour || d.DNSKEYTTL != 3600 || d.TCPClientShare != 0.25 {
		t.Errorf("defaults: %+v", d)
	}
	if d.Keys[0].File != ksk || d.Keys[0].State != KeyActive || d.Keys[1].State != KeyActive {
		t.Errorf("keys: %+v", d.Keys)
	}
	if got := DefaultDNSSEC(ksk); got.SignatureValidity != d.SignatureValidity || got.Keys[0].State != KeyActive {
		t.Errorf("DefaultDNSSEC: %+v", got)
	}
}

func TestSteerConfig(t *testing.T) {
	steer := func(s string) string {
		return strings.Replace(goodGSLB, "east: { monitor: bal, failover: [west],", "east: { monitor: bal, failover: [west], steer: "+s+",", 1)
	}
	cfg, err := Parse("g.yaml", []byte(steer("{ sessions_per_edge: 500 }")))
	if err != nil {
		t.Fatal(err)
	}
	if st := cfg.GSLB.Names[0].Regions["east"].Steer; st == nil || st.Share != 0.5 || st.Hysteresis != 0.2 || st.SessionsPerEdge != 500 {
		t.Errorf("steer defaults: %+v", st)
	}
	tests := []struct{ name, src, path, msg string }{
		{"no level", steer("{ share: 0.3 }"), "gslb.names[0].regions.east.steer", "needs a level"},
		{"share", steer("{ cpu_percent: 80, share: 1.5 }"), "gslb.names[0].regions.east.steer.share", "(0, 1]"},
		{"cpu", steer("{ cpu_percent: 180 }"), "gslb.names[0].regions.east.steer.cpu_percent", "[0, 100]"},
		{"hysteresis", steer("{ cpu_percent: 80, hysteresis: 0.95 }"), "gslb.names[0].regions.east.steer.hysteresis", "(0, 0.9]"},
		{"no failover", strings.Replace(steer("{ cpu_percent: 80 }"), "failover: [west], ", "", 1), "gslb.names[0].regions.east.steer", "list one in failover"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("g.yaml", []byte(tt.src))
			expectProblem(t, err, tt.path, tt.msg)
		})
	}
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, mode); err != nil {
		t.Fatal(err)
	}
}

// Keys made by BIND's dnssec-keygen are read as they are, and BIND reads
// ours: dnssec-dsfromkey computes the DS the CDS record carries.
func TestDNSSECKeysInteroperateWithBIND(t *testing.T) {
	keygen, err1 := exec.LookPath("dnssec-keygen")
	dsfromkey, err2 := exec.LookPath("dnssec-dsfromkey")
	if err1 != nil || err2 != nil {
		t.Skip("BIND's tools not installed (apt-get install bind9-utils)")
	}
	dir := t.TempDir()
	cmd := exec.Command(keygen, "-q", "-K", dir, "-a", "ECDSAP256SHA256", "-f", "KSK", "ringlb.test")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("dnssec-keygen: %v", err)
	}
	theirs := filepath.Join(dir, strings.TrimSpace(string(out)))
	key, _, err := ReadDNSSECKey(theirs, "ringlb.test")
	if err != nil || key.Flags != FlagsKSK {
		t.Fatalf("dnssec-keygen's key: %v %v", key, err)
	}
	ours := newKey(t, dir, "ringlb.test", true)
	pub, _ := DNSSECKeyFiles(ours)
	out, err = exec.Command(dsfromkey, "-2", pub).Output()
	if err != nil {
		t.Fatalf("dnssec-dsfromkey: %v", err)
	}
	ourKey, _, err := ReadDNSSECKey(ours, "ringlb.test")
	if err != nil {
		t.Fatal(err)
	}
	want := ourKey.ToDS(dns.SHA256)
	if fields := strings.Fields(string(out)); len(fields) < 7 || !strings.EqualFold(fields[len(fields)-1], want.Digest) {
		t.Errorf("BIND's DS %q, ours %v", out, want)
	}
}
