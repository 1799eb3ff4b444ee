package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/ringlb/ringlb/configs"
)

// ringlb keygen -dnssec writes a key pair per key, and the lines it prints
// make a zone that `ringlb check` accepts.
func TestKeygenDNSSEC(t *testing.T) {
	dir := t.TempDir()
	var out, errOut strings.Builder
	if code := run(context.Background(), []string{"keygen", "-dnssec", "ringlb.test", "-dir", dir}, &out, &errOut); code != 0 {
		t.Fatalf("keygen -dnssec: exit %d: %s", code, errOut.String())
	}
	keys := regexp.MustCompile(`(?m)^ +- \{ file: .*\}$`).FindAllString(out.String(), -1)
	if len(keys) != 2 || !strings.Contains(out.String(), "IN\tDS\t") {
		t.Fatalf("keygen -dnssec printed:\n%s", out.String())
	}
	cfg := "cluster: { bind: 127.0.0.1:7946 }\ngslb:\n  zones:\n    - origin: ringlb.test\n      records: [ \"@ 3600 IN SOA ns1 hostmaster 1 7200 3600 1209600 60\" ]\n      dnssec:\n        keys:\n" + strings.Join(keys, "\n") + "\n"
	if _, err := configs.Parse(filepath.Join(dir, "g.yaml"), []byte(cfg)); err != nil {
		t.Fatalf("the printed keys do not check: %v\n%s", err, cfg)
	}
	for _, args := range [][]string{
		{"keygen", "-dnssec", "ringlb.test", "-type", "csk", "-dir", dir},
		{"keygen", "-dnssec", "ringlb.test", "-o", filepath.Join(dir, "x")},
		{"keygen", "-dnssec", "bad..zone", "-dir", dir},
	} {
		if code := run(context.Background(), args, &out, &errOut); code == 0 {
			t.Errorf("%v: exit 0", args)
		}
	}
}

// A flag that does not apply to what keygen makes is refused, naming it:
// `keygen -password alice -o users` printed the line, created no file and
// exited 0 (the operator took the file for written), and -type or -dir
// without -dnssec were ignored alike. It is a usage error (exit 2), as a
// missing argument is.
func TestKeygenRefusesFlagsThatDoNotApply(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{
		{"-password", "alice", "-o", filepath.Join(dir, "users")},
		{"-password", "alice", "-dir", dir},
		{"-type", "ksk"},
		{"-dir", dir},
	} {
		var out, errOut strings.Builder
		err := keygen(strings.NewReader("a long enough password\n"), args, &out, &errOut)
		if !errors.Is(err, errUsage) || !strings.Contains(errOut.String(), "does not apply") {
			t.Errorf("keygen %v: %v (printed %q, said %q), want a usage error saying what does not apply", args, err, out.String(), errOut.String())
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "users")); err == nil {
		t.Error("a users file was written")
	}
}
