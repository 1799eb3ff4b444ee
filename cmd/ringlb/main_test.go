package main

import (
	"flag"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// endToEndTimeout replaces go test's default ten-minute alarm for this
// package: its tests start real clusters of processes and run scenarios of
// minutes (about seven in all on a quiet two-core machine), so on a busy
// one the default fired while every test was still making progress. Each
// test bounds its own waits; this alarm is only the hang detector behind
// them. The go command itself still ends the package eleven minutes after
// it started (its own -timeout plus a minute, whatever TestMain sets): the
// scenarios size themselves to the machine (scenarioSize) and the short
// tests that mostly wait run side by side (endToEndParallel), so that a
// busy machine stays inside that.
const endToEndTimeout = 30 * time.Minute

// goTestDefaultTimeout is what go test passes as -test.timeout when given
// none (it always passes one, so a default cannot be told from the same
// value given): any other -timeout is kept.
const goTestDefaultTimeout = 10 * time.Minute

// endToEndParallel is how many of the tests that call t.Parallel run at
// once when -parallel is not given (its default is GOMAXPROCS). They are
// the short ones that spend their time waiting on processes, gossip rounds
// and timers rather than on the CPU; the scenarios under load, and the
// tests that measure memory, descriptors, cgroups or set the environment,
// run alone, before them.
const endToEndParallel = 4

func TestMain(m *testing.M) {
	flag.Parse()
	if f := flag.Lookup("test.timeout"); f != nil && f.Value.String() == goTestDefaultTimeout.String() {
		if err := flag.Set("test.timeout", endToEndTimeout.String()); err != nil {
			panic(err)
		}
	}
	if f := flag.Lookup("test.parallel"); f != nil && f.Value.String() == strconv.Itoa(runtime.GOMAXPROCS(0)) {
		if err := flag.Set("test.parallel", strconv.Itoa(max(endToEndParallel, runtime.GOMAXPROCS(0)))); err != nil {
			panic(err)
		}
	}
	code := m.Run()
	if sharedBinary.dir != "" {
		os.RemoveAll(sharedBinary.dir)
	}
	os.Exit(code)
}

// scenarioSize is the size (sessions, tunnels) a scenario under load runs
// at: full on a machine whose load average is at most twice its cores,
// scaled down as the load rises past that (to a quarter at the least), so
// that a scenario run beside other work does the same steps with fewer
// participants rather than running past the go command's limit. Its
// assertions are the same at any size; the size is logged.
func scenarioSize(t *testing.T, full int) int {
	t.Helper()
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return full
	}
	f := strings.Fields(string(data))
	if len(f) == 0 {
		return full
	}
	load, err := strconv.ParseFloat(f[0], 64)
	cores := float64(runtime.NumCPU())
	if err != nil || load <= 2*cores {
		return full
	}
	n := max(int(float64(full)*2*cores/load), full/4)
	t.Logf("a busy machine (load average %.1f on %.0f cores): %d instead of %d", load, cores, n, full)
	return n
}

// A command called without what it needs is a usage error: exit 2, as
// documented, with what is missing and the command's usage on stderr. They
// exited 1, as a failure of the node or the upgrade would.
func TestMissingArgumentsAreUsageErrors(t *testing.T) {
	for _, tt := range []struct {
		args []string
		says string
	}{
		{[]string{"edge"}, "ringlb edge: -config is required (start from configs/examples/edge.yaml)"},
		{[]string{"balancer"}, "ringlb balancer: -config is required (start from configs/examples/balancer.yaml)"},
		{[]string{"gslb"}, "ringlb gslb: -config is required (start from configs/examples/gslb.yaml)"},
		{[]string{"upgrade"}, "ringlb upgrade: -pid is required"},
		{[]string{"token"}, "ringlb token: -secret-file (or -config), -session and -user are required"},
		{[]string{"token", "-session", "s", "-user", "u"}, "ringlb token: -secret-file (or -config), -session and -user are required"},
		{[]string{"bench", "foo"}, `ringlb bench: unknown kind "foo"`},
		{[]string{"keygen", "-password", "alice", "-o", "users"}, "ringlb keygen: -o does not apply to -password"},
		{[]string{"keygen", "-type", "ksk"}, "ringlb keygen: -type does not apply without -dnssec"},
		{[]string{"keygen", "-dnssec", "ringlb.test", "-o", "k"}, "ringlb keygen: -o is for a random key; DNSSEC keys go to -dir"},
	} {
		var out, errOut strings.Builder
		code := run(t.Context(), tt.args, &out, &errOut)
		if code != 2 || !strings.Contains(errOut.String(), tt.says) || !strings.Contains(errOut.String(), "Usage: ringlb "+tt.args[0]) {
			t.Errorf("ringlb %s: exit %d, stderr:\n%s\nwant exit 2 saying %q and the usage", strings.Join(tt.args, " "), code, errOut.String(), tt.says)
		}
	}
}

// Each command's -h says what applies to it: the upgrade flags only where
// a node is upgraded in place (an edge drains and restarts), each role's
// own default stop bound, and everything the demo runs.
func TestHelpSaysWhatApplies(t *testing.T) {
	help := func(cmd string) string {
		var out strings.Builder
		if code := run(t.Context(), []string{cmd, "-h"}, &out, &out); code != 0 {
			t.Fatalf("ringlb %s -h: exit %d\n%s", cmd, code, out.String())
		}
		return out.String()
	}
	for _, tt := range []struct {
		cmd       string
		want, not []string
	}{
		{"edge", []string{"edge.drain_timeout + 5s"}, []string{"-upgrade-dir", "-upgrade-timeout", "10s"}},
		{"balancer", []string{"-upgrade-dir", "-upgrade-timeout", "(default 10s)"}, []string{"drain_timeout"}},
		{"gslb", []string{"-upgrade-dir", "-upgrade-timeout", "(default 10s)"}, []string{"drain_timeout", "balancers"}},
		{"demo", []string{"three edges", "two balancers", "a gslb", "Ctrl-C, or closing its"}, nil},
	} {
		h := help(tt.cmd)
		for _, w := range tt.want {
			if !strings.Contains(h, w) {
				t.Errorf("ringlb %s -h lacks %q:\n%s", tt.cmd, w, h)
			}
		}
		for _, n := range tt.not {
			if strings.Contains(h, n) {
				t.Errorf("ringlb %s -h says %q:\n%s", tt.cmd, n, h)
			}
		}
	}
}
