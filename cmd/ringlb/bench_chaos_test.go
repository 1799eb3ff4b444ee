package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/ringlb/ringlb/bench"
)

// keyedChaosCluster is a small real cluster as an operator runs one: a
// balancer and edge-1..3 as processes, gossip keyed (ringlb keygen), every
// admin port behind one token.
type keyedChaosCluster struct {
	dir, bin         string
	target, admin    string
	tokenFile, edge4 string // edge-4's config, for the -add command
	edges            map[string]*proc
}

func startKeyedChaosCluster(t *testing.T, bin string) *keyedChaosCluster {
	dir := t.TempDir()
	c := &keyedChaosCluster{dir: dir, bin: bin, tokenFile: filepath.Join(dir, "admin.token"), edges: map[string]*proc{}}
	gossipKey := filepath.Join(dir, "gossip.key")
	for _, f := range []string{gossipKey, c.tokenFile} {
		var out strings.Builder
		if code := run(t.Context(), []string{"keygen", "-o", f}, &out, &out); code != 0 {
			t.Fatalf("keygen: %s", out.String())
		}
	}
	cluster := func(name, join string) string {
		return fmt.Sprintf("cluster: { name: %s, bind: 127.0.0.1:0, %s, secret_key_file: %q%s }\n", name, chaosGossip, gossipKey, join)
	}
	balCfg := filepath.Join(dir, "bal-1.yaml")
	writeFile(t, balCfg, cluster("bal-1", "")+fmt.Sprintf("balancer: { listen: 127.0.0.1:0, admin: { listen: 127.0.0.1:0, token_file: %q } }\n", c.tokenFile))
	stop := &stopTogether{}
	bal := startProc(t, bin, "balancer", "-config", balCfg)
	stop.add(t, bal)
	rec := bal.waitLog(t, "balancer started")
	c.target, c.admin = "ws://"+rec["listen"].(string)+"/ws", "http://"+rec["admin"].(string)
	join := fmt.Sprintf(", join: [%q]", rec["gossip"].(string))
	edgeCfg := func(name string) string {
		cfg := filepath.Join(dir, name+".yaml")
		writeFile(t, cfg, cluster(name, join)+fmt.Sprintf("edge: { listen: 127.0.0.1:0, admin: { listen: 127.0.0.1:0, token_file: %q }, drain_timeout: 10s }\n", c.tokenFile))
		return cfg
	}
	// The edges start at once, as a cluster's machines boot.
	for i := 1; i <= 3; i++ {
		name := fmt.Sprintf("edge-%d", i)
		c.edges[name] = startProc(t, bin, "edge", "-config", edgeCfg(name))
		stop.add(t, c.edges[name])
	}
	for _, p := range c.edges {
		p.waitLog(t, "edge started")
	}
	c.edge4 = edgeCfg("edge-4")
	admin, err := bench.NewChaosAdmin([]string{c.admin}, readToken(t, c.tokenFile))
	if err != nil {
		t.Fatal(err)
	}
	waitChaosRing(t, admin, 3)
	return c
}

func readToken(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// `ringlb bench chaos` against a running cluster: an edge added by a shell
// command, one drained through the admin API (with the token from a file),
// one killed by a shell command; the table on stdout, progress on stderr,
// the result as JSON and SVG.
func TestBenchChaosCommand(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test of the real binary; skipped with -short")
	}
	bin := buildBinary(t)
	c := startKeyedChaosCluster(t, bin)
	stderrPath := filepath.Join(c.dir, "stderr.log")
	runChaos := func(args ...string) (int, string, string) {
		t.Helper()
		// stderr a file, as on a terminal: the -add command's edge writes there too.
		errFile, err := os.Create(stderrPath)
		if err != nil {
			t.Fatal(err)
		}
		defer errFile.Close()
		var out strings.Builder
		code := run(t.Context(), append([]string{"bench", "chaos", "-url", c.target, "-admin", c.admin,
			"-sessions", "30", "-hold", "1s", "-guest-stay", "1s", "-guest-away", "500ms"}, args...), &out, errFile)
		stderr, _ := os.ReadFile(stderrPath)
		return code, out.String(), string(stderr)
	}

	// A wrong token: the step fails on the first admin call, the command
	// says why and exits 1, and the token is in no output.
	wrong := filepath.Join(c.dir, "wrong.token")
	writeFile(t, wrong, "not-the-token-0123456789abcdef0123456789\n")
	code, stdout, stderr := runChaos("-admin-token-file", wrong, "-drain", "edge-1")
	if code != 1 || !strings.Contains(stderr, "401 Unauthorized") || !strings.Contains(stdout, "chaos: 30 sessions") {
		t.Errorf("wrong token: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if strings.Contains(stdout+stderr, "not-the-token") || strings.Contains(stdout+stderr, readToken(t, c.tokenFile)) {
		t.Error("a token appears in the output")
	}

	pidFile := filepath.Join(c.dir, "edge-4.pid")
	t.Cleanup(func() {
		if b, err := os.ReadFile(pidFile); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 1 {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	jsonPath := filepath.Join(c.dir, "chaos.json")
	code, stdout, stderr = runChaos("-admin-token-file", c.tokenFile, "-json", jsonPath,
		"-add", fmt.Sprintf("%s edge -config %s -log-format json >%s 2>&1 & echo $! >%s", c.bin, c.edge4, filepath.Join(c.dir, "edge-4.log"), pidFile),
		"-drain", "edge-1",
		"-kill", fmt.Sprintf("kill -9 %d", c.edges["edge-2"].cmd.Process.Pid), "-kill-edge", "edge-2")
	t.Logf("stdout:\n%s", stdout)
	if code != 0 {
		t.Fatalf("exit %d\nstderr:\n%s", code, stderr)
	}
	for _, want := range []string{"check point steady", "check point crash", "live ", "scale-out: in after", "wrote " + jsonPath} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	if !strings.Contains(stdout, "phase") || !strings.Contains(stdout, "resume p50/p90/max") {
		t.Errorf("no table on stdout:\n%s", stdout)
	}
	data, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	var res bench.ChaosResult
	if err := json.Unmarshal(data, &res); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(strings.TrimSuffix(jsonPath, ".json") + ".svg"); err != nil {
		t.Error(err)
	}
	var names []string
	for _, p := range res.Phases {
		names = append(names, p.Name)
	}
	if fmt.Sprint(names) != "[steady scale-out drain crash]" || res.Scenario == nil || len(res.Timeline) == 0 {
		t.Fatalf("phases %v, scenario %+v, %d ticks", names, res.Scenario, len(res.Timeline))
	}
	if res.SplitSessions != 0 || res.Delivered == 0 || res.GaveUp != 0 {
		t.Errorf("%s", res.Summary())
	}
	scale, _ := res.Phase("scale-out")
	drain, _ := res.Phase("drain")
	crash, _ := res.Phase("crash")
	// Each step went through: edge-4 joined the ring (the wait saw it), the
	// drain moved edge-1's sessions (only the token lets it), the kill
	// disconnected only edge-2's.
	if scale.Change <= 0 || scale.SessionsDisconnected != 0 {
		t.Errorf("scale-out: %+v", scale)
	}
	if drain.SessionsOnEdge == 0 || drain.SessionsDisconnected == 0 || drain.OwnerChecked != drain.SessionsDisconnected {
		t.Errorf("drain: on edge-1 %d, disconnected %d, looked up %d", drain.SessionsOnEdge, drain.SessionsDisconnected, drain.OwnerChecked)
	}
	if crash.SessionsOnEdge == 0 || crash.DisconnectedElsewhere != 0 || crash.OwnerChecked != crash.SessionsDisconnected || crash.OffOwner != 0 {
		t.Errorf("crash: on edge-2 %d, elsewhere %d, looked up %d of %d, off owner %d %v", crash.SessionsOnEdge,
			crash.DisconnectedElsewhere, crash.OwnerChecked, crash.SessionsDisconnected, crash.OffOwner, crash.OffOwnerDetails)
	}
}

// Flags that cannot work together are refused before anything is dialed;
// a value out of range is a usage error (exit 2), as a bad flag is.
func TestBenchChaosFlagErrors(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.token")
	writeFile(t, empty, "\n")
	for _, tc := range []struct {
		args  []string
		want  string
		usage bool // the scenario's options, refused before it starts
	}{
		{[]string{"-drain", "edge-1"}, "-drain goes through a balancer's admin API: give -admin", false},
		{[]string{"-kill-edge", "edge-2"}, "-kill-edge names the edge -kill kills: give -kill", false},
		{[]string{"-admin-token-file", empty}, "-admin-token-file is for -admin", false},
		{[]string{"-admin", "127.0.0.1:9090"}, `admin URL "127.0.0.1:9090" must be http://host:port`, false},
		{[]string{"-admin", "http://127.0.0.1:9090", "-admin-token-file", empty}, "is empty", false},
		{[]string{"-admin", "http://127.0.0.1:9090", "-admin-token-file", filepath.Join(dir, "none")}, "no such file", false},
		{[]string{"-sessions", "0"}, "sessions must be in range", true},
		{[]string{"-url", "http://127.0.0.1:8080/ws"}, "must be a ws:// or wss:// URL", true},
		{[]string{"-settle-timeout", "10ms"}, "settle timeout must be in range", true},
	} {
		var out, errOut strings.Builder
		ctx, cancel := context.WithCancel(t.Context())
		code := run(ctx, append([]string{"bench", "chaos"}, tc.args...), &out, &errOut)
		cancel()
		want := 1
		if tc.usage {
			want = 2
		}
		if code != want || !strings.Contains(errOut.String(), tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", tc.args, code, errOut.String(), want, tc.want)
		}
	}
}
