package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// A balancer or gslb whose binary an upgrade would refuse says so at its
// start; `ringlb check` of its file — what ExecStartPre runs, with the
// same binary — says so too, before the node runs: a warning that passes,
// with the fix, said after the file's problems when it has some. An edge
// (not upgraded in place) is not warned.
func TestCheckWarnsOfABinaryAnUpgradeWouldRefuse(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the real binary; skipped with -short")
	}
	bin := installBinary(t, 0o775) // as installed under umask 002
	dir := filepath.Dir(bin)
	gslb := filepath.Join(dir, "gslb.yaml")
	writeFile(t, gslb, "cluster: { bind: 127.0.0.1:7946 }\ngslb:\n  listen: 127.0.0.1:5353\n  zones: [ { origin: ringlb.test, records: [ \"@ 3600 IN SOA ns1 hostmaster 1 7200 3600 1209600 60\" ] } ]\n")
	broken := filepath.Join(dir, "broken.yaml")
	writeFile(t, broken, "cluster: { bind: 127.0.0.1:7946 }\nbalancer:\n  nope: 1\n")
	edge := filepath.Join(dir, "edge.yaml")
	writeFile(t, edge, "cluster: { bind: 127.0.0.1:7946 }\nedge: { listen: 127.0.0.1:8080 }\n")
	check := func(args ...string) (int, string) {
		out, err := exec.Command(bin, append([]string{"check"}, args...)...).CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return code, string(out)
	}
	const warning = "warning: an upgrade of this node would be refused: binary "
	fix := "chmod go-w " + bin

	for _, tc := range []struct {
		name string
		args []string
		code int
		warn bool
	}{
		{"a gslb", []string{"-config", gslb}, 0, true},
		{"a balancer with a problem", []string{"-config", broken}, 1, true},
		{"the demo", nil, 0, true},
		{"an edge", []string{"-config", edge}, 0, false},
	} {
		code, out := check(tc.args...)
		t.Logf("%s, binary 0775: exit %d\n%s", tc.name, code, out)
		warned := strings.Contains(out, warning) && strings.Contains(out, fix)
		if code != tc.code || warned != tc.warn {
			t.Errorf("%s: exit %d, warned %v; want exit %d, warned %v", tc.name, code, warned, tc.code, tc.warn)
		}
		if tc.code != 0 && warned && strings.Index(out, warning) < strings.Index(out, "balancer.nope") {
			t.Errorf("%s: the warning comes before the problems", tc.name)
		}
	}

	chmod(t, bin, 0o755)
	if code, out := check("-config", gslb); code != 0 || strings.Contains(out, "an upgrade of this node would be refused") {
		t.Errorf("a gslb, binary 0755: exit %d\n%s", code, out)
	}
}

// installBinary copies the package's binary into a directory of the test's
// own (mode 0700, whatever the umask made it) at mode and returns its path.
func installBinary(t *testing.T, mode os.FileMode) string {
	t.Helper()
	dir := t.TempDir()
	chmod(t, dir, 0o700)
	bin := filepath.Join(dir, "ringlb")
	data, err := os.ReadFile(buildBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o700); err != nil {
		t.Fatal(err)
	}
	chmod(t, bin, mode)
	return bin
}
