package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// proc is a ringlb process of the test, with its JSON log lines.
type proc struct {
	cmd  *exec.Cmd
	logs chan map[string]any

	mu  sync.Mutex
	out bytes.Buffer // everything it wrote to stderr, up to maxProcOutput
}

// maxProcOutput bounds what a test keeps of a process's output.
const maxProcOutput = 8 << 20

// output returns everything the process has written to stderr so far.
func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

func startProc(t *testing.T, bin string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(bin, append(args, "-log-format", "json")...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, logs: make(chan map[string]any, 1024)}
	// RINGLB_TEST_LOGS=DIR keeps every process's log as DIR/<name>-<ms>.log
	// (procLogName) for diagnosis.
	var keep io.Writer = io.Discard
	if dir := os.Getenv("RINGLB_TEST_LOGS"); dir != "" {
		f, err := os.Create(filepath.Join(dir, procLogName(args)+".log"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		keep = f
	}
	// Lines that are not log records (a panic's trace) are kept and shown
	// when the test fails.
	var other bytes.Buffer
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			keep.Write(append(sc.Bytes(), '\n'))
			p.mu.Lock()
			if p.out.Len() < maxProcOutput {
				p.out.Write(append(sc.Bytes(), '\n'))
			}
			p.mu.Unlock()
			var rec map[string]any
			if json.Unmarshal(sc.Bytes(), &rec) == nil {
				select {
				case p.logs <- rec:
				default:
				}
			} else if other.Len() < 64<<10 {
				other.Write(sc.Bytes())
				other.WriteByte('\n')
			}
		}
		close(p.logs)
	}()
	t.Cleanup(func() {
		defer func() {
			<-scanned
			// A process that crashed fails its test, whatever the
			// scenario's own checks made of it (a crashed edge read as
			// "fenced -1" once, its trace shown only because that failed).
			if crash := goCrash(other.String()); crash != "" {
				t.Errorf("%s %v crashed: %s", filepath.Base(bin), args, crash)
			}
			if t.Failed() && other.Len() > 0 {
				t.Logf("%s %v wrote:\n%s", filepath.Base(bin), args, other.String())
			}
			if t.Failed() {
				p.mu.Lock()
				warned := warnings(p.out.String(), maxWarnings)
				p.mu.Unlock()
				if warned != "" {
					t.Logf("%s %v warned (its last %d warnings and errors; RINGLB_TEST_LOGS=DIR keeps whole logs):\n%s", filepath.Base(bin), args, maxWarnings, warned)
				}
			}
		}()
		stopProcess(cmd, 20*time.Second)
	})
	return p
}

// maxWarnings bounds the warnings a failed test shows of each process.
const maxWarnings = 40

// warnings returns the last max log records of out at level WARN or ERROR,
// a line each: what a failed test shows of a process it ran, so a run in
// CI, which keeps no logs, says what its nodes saw.
func warnings(out string, max int) string {
	var lines []string
	for line := range strings.Lines(out) {
		if strings.Contains(line, `"level":"WARN"`) || strings.Contains(line, `"level":"ERROR"`) {
			lines = append(lines, line)
			if len(lines) > max {
				lines = lines[1:]
			}
		}
	}
	return strings.Join(lines, "")
}

// goCrash returns the line of out, a process's output that is not log
// records, with which the Go runtime ends a process it crashes: a panic
// nothing recovered, or a fatal error (a concurrent map write, a
// deadlock); "" when there is none.
func goCrash(out string) string {
	for line := range strings.Lines(out) {
		if strings.HasPrefix(line, "panic: ") || strings.HasPrefix(line, "fatal error: ") {
			return strings.TrimSpace(line)
		}
	}
	return ""
}

// procLogName names a process's log file: its config file's base name, else
// its subcommand, with the test's clock.
func procLogName(args []string) string {
	name := args[0]
	for i, a := range args {
		if a == "-config" && i+1 < len(args) {
			name = strings.TrimSuffix(filepath.Base(args[i+1]), filepath.Ext(args[i+1]))
		}
	}
	return fmt.Sprintf("%s-%d", name, time.Now().UnixMilli())
}

// stopProcess stops a process of the test gracefully (SIGTERM), killing it
// when it has not exited within grace.
func stopProcess(cmd *exec.Cmd, grace time.Duration) {
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
		cmd.Process.Kill()
		<-done
	}
}

// waitLog returns the first log record with message msg.
func (p *proc) waitLog(t *testing.T, msg string) map[string]any {
	t.Helper()
	return p.waitLogWith(t, msg, func(map[string]any) bool { return true })
}

// waitLogWith returns the first record with message msg for which match
// holds, within one 60 s wait.
func (p *proc) waitLogWith(t *testing.T, msg string, match func(map[string]any) bool) map[string]any {
	t.Helper()
	timeout := time.After(60 * time.Second)
	for {
		select {
		case rec, ok := <-p.logs:
			if !ok {
				t.Fatalf("process exited before logging %q", msg)
			}
			if rec["msg"] == msg && match(rec) {
				return rec
			}
		case <-timeout:
			t.Fatalf("no matching %q log line within 60s", msg)
		}
	}
}

// runRinglb runs the real binary with args (as attrs says, when not nil)
// for at most 20 s and returns its exit code and everything it wrote. A
// node that starts is stopped at the deadline; its exit code is then -1.
func runRinglb(t *testing.T, bin string, attrs *syscall.SysProcAttr, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.SysProcAttr = attrs
	cmd.Dir = "/"
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, string(out)
	case errors.As(err, &ee):
		return ee.ExitCode(), string(out)
	}
	t.Fatalf("%v: %v", args, err)
	return 0, ""
}

// lastLines is the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestBalancerReloadUnderTraffic runs a real balancer and two edges as
// separate processes on free ports, drives WebSocket traffic through the
// balancer and sends SIGHUP twice (new key sources and limits, then a bad
// file): no connection drops and no message is lost.
func TestBalancerReloadUnderTraffic(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test of the real binary; skipped with -short")
	}
	bin := buildBinary(t)
	dir := t.TempDir()
	balCfg := filepath.Join(dir, "balancer.yaml")
	base := "cluster: { name: bal-1, bind: 127.0.0.1:0, profile: local, probe_interval: 200ms }\n" +
		"balancer: { listen: 127.0.0.1:0, admin: { listen: 127.0.0.1:0 } }\n"
	writeFile(t, balCfg, base)
	bal := startProc(t, bin, "balancer", "-config", balCfg)
	rec := bal.waitLog(t, "balancer started")
	listen, admin, gossip := rec["listen"].(string), rec["admin"].(string), rec["gossip"].(string)

	for i := 1; i <= 2; i++ {
		cfg := filepath.Join(dir, fmt.Sprintf("edge%d.yaml", i))
		writeFile(t, cfg, fmt.Sprintf("cluster: { name: edge-%d, bind: 127.0.0.1:0, join: [%q], profile: local, probe_interval: 200ms }\n"+
			"edge: { listen: 127.0.0.1:0, admin: 127.0.0.1:0, drain_timeout: 1s }\n", i, gossip))
		startProc(t, bin, "edge", "-config", cfg).waitLog(t, "edge started")
	}
	waitRingMembers(t, "http://"+admin+"/api/ring", 2)

	result := filepath.Join(dir, "ws.json")
	bench := exec.Command(bin, "bench", "ws", "-url", "ws://"+listen+"/ws", "-sessions", "50", "-participants", "3",
		"-rate", "10", "-duration", "4s", "-drain", "1m", "-json", result)
	var benchOut strings.Builder
	bench.Stdout = &benchOut
	progress, err := bench.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := bench.Start(); err != nil {
		t.Fatal(err)
	}
	// Reload once messages are flowing: the progress line says so.
	sc := bufio.NewScanner(progress)
	for sc.Scan() && !strings.Contains(sc.Text(), "delivered") {
	}
	go io.Copy(io.Discard, progress)
	writeFile(t, balCfg, strings.Replace(base, "admin: { listen: 127.0.0.1:0 } }", "admin: { listen: 127.0.0.1:0 }, key: { sources: [header:ctstickiness, cookie:ctstickiness, query:sid] }, limits: { max_connections_per_ip: 5000 } }", 1))
	bal.cmd.Process.Signal(syscall.SIGHUP)
	bal.waitLog(t, "SIGHUP: configuration reloaded")
	writeFile(t, balCfg, "balancer: { listen: [oops }\n")
	bal.cmd.Process.Signal(syscall.SIGHUP)
	bal.waitLog(t, "SIGHUP: reload failed, still running the previous configuration")
	if err := bench.Wait(); err != nil {
		t.Fatalf("bench: %v\n%s", err, benchOut.String())
	}
	var res struct {
		ConnsOK     int    `json:"connections_ok"`
		ClosedEarly int    `json:"connections_closed_early"`
		Lost        int64  `json:"messages_lost"`
		Delivered   int64  `json:"messages_delivered"`
		DialError   string `json:"first_dial_error"`
	}
	data, err := os.ReadFile(result)
	if err != nil {
		t.Fatal(err)
	}
	json.Unmarshal(data, &res)
	t.Logf("%s", strings.TrimSpace(benchOut.String()))
	if res.ConnsOK != 150 || res.ClosedEarly != 0 || res.Lost != 0 || res.Delivered == 0 {
		// Every connection is made before the first reload (it waits for
		// a delivery): a failed one says what refused it.
		t.Fatalf("traffic across reloads: %+v", res)
	}
}

// waitRingMembers polls a balancer's /api/ring until it routes to n edges.
func waitRingMembers(t *testing.T, url string, n int) {
	t.Helper()
	const within = 60 * time.Second
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		resp, err := http.Get(url)
		if err == nil {
			var ring struct{ Members []json.RawMessage }
			json.NewDecoder(resp.Body).Decode(&ring)
			resp.Body.Close()
			if len(ring.Members) == n {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s: ring did not reach %d members within %s", url, n, within)
}
