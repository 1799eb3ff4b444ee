package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// cgroupV1Memory is where a cgroup v1 memory controller is mounted, when
// it is (and writable: the tests make their cgroups under it).
const cgroupV1Memory = "/sys/fs/cgroup/memory"

// memoryCgroup makes a cgroup v1 memory cgroup limited to limit bytes for
// the test and returns its directory; it is removed when the test ends
// (after its processes, whose cleanups run first). It skips the test where
// there is no such controller or it cannot be written.
func memoryCgroup(t *testing.T, limit int64) string {
	t.Helper()
	if _, err := os.Stat(filepath.Join(cgroupV1Memory, "memory.limit_in_bytes")); err != nil {
		t.Skipf("no cgroup v1 memory controller at %s: %v", cgroupV1Memory, err)
	}
	dir := filepath.Join(cgroupV1Memory, fmt.Sprintf("ringlb-test-%d-%s", os.Getpid(), strings.ReplaceAll(t.Name(), "/", "-")))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Skipf("cannot make a memory cgroup under %s: %v", cgroupV1Memory, err)
	}
	t.Cleanup(func() {
		// Its processes are the test's (one an upgrade started may have
		// outlived the test's own cleanups): ended, then it can go.
		if b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs")); err == nil {
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil {
					syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			err := os.Remove(dir)
			if err == nil || errors.Is(err, os.ErrNotExist) {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("memory cgroup %s not removed: %v", dir, err)
				return
			}
		}
	})
	if err := os.WriteFile(filepath.Join(dir, "memory.limit_in_bytes"), []byte(strconv.FormatInt(limit, 10)), 0o644); err != nil {
		t.Skipf("cannot limit the memory cgroup %s: %v", dir, err)
	}
	return dir
}

// cgroupFigure reads one figure of the cgroup dir: a file holding a number
// (memory.max_usage_in_bytes), or "file key" for a line of a flat-keyed
// file (memory.oom_control oom_kill). -1 when absent.
func cgroupFigure(t *testing.T, dir, what string) int64 {
	t.Helper()
	file, key, keyed := strings.Cut(what, " ")
	b, err := os.ReadFile(filepath.Join(dir, file))
	if err != nil {
		return -1
	}
	if !keyed {
		n, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		return n
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, key+" "); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	return -1
}

// Two processes of one cgroup — a hitless upgrade's old and new process,
// for the seconds the hand-off takes — each took 90 % of the cgroup's
// limit as its own: together they could pass it, and the kernel's OOM
// killer ended one with every session on it, though neither had come near
// its own limit. Here the overlap is made to last: two edges in one
// 256 MiB cgroup (no GOMEMLIMIT: each derives 230 MiB from the cgroup),
// the first holding ~110 MiB of messages being received, the second
// taking connections that each announce a 1 MiB message. Each process now
// counts what the cgroup's other processes hold against its own limit, so
// the second degrades (1013, 503) before the cgroup is full, and both
// live.
func TestTwoProcessesShareTheirCgroup(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test of the real binary; skipped with -short")
	}
	const (
		limit    = 256 << 20
		first    = 110 // messages of 1 MiB the first edge holds
		hoarders = 200 // connections to the second
		message  = 1 << 20
	)
	cg := memoryCgroup(t, limit)
	bin := wrappedBinary(t, buildBinary(t), "ringlb-in-cgroup",
		fmt.Sprintf("unset GOMEMLIMIT AUTOMEMLIMIT\necho $$ > '%s/cgroup.procs' || exit 1", cg))
	budgets := ", max_message_bytes: 1048576, max_incoming_bytes: 1073741824"
	_, listenA, adminA, wA := startEdgeOf(t, bin, budgets)
	edgeB, listenB, _, wB := startEdgeOf(t, bin, budgets)

	// The first holds its messages (well under its own limit).
	var held []*hoarder
	for i := range first {
		h, status := openHoarder(t, listenA, fmt.Sprintf("old-%d", i))
		if h == nil {
			t.Fatalf("the first edge refused connection %d: %s", i, status)
		}
		h.announce(message)
		held = append(held, h)
	}
	for deadline := time.Now().Add(30 * time.Second); scrape(t, "http://"+adminA+"/metrics", "ringlb_edge_incoming_bytes") < first*message; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the first edge holds %.0f MiB of messages, want %d", scrape(t, "http://"+adminA+"/metrics", "ringlb_edge_incoming_bytes")/(1<<20), first)
		}
	}
	t.Logf("the first edge holds %d messages of 1 MiB; the cgroup uses %d MiB of %d", first, cgroupFigure(t, cg, "memory.usage_in_bytes")>>20, limit>>20)

	// The second takes what it is given, until it refuses.
	var hs []*hoarder
	refusedAt := 0
	for i := range hoarders {
		h, _ := openHoarder(t, listenB, fmt.Sprintf("new-%d", i))
		if h == nil {
			refusedAt = i // 503: low on memory
			break
		}
		h.announce(message)
		hs = append(hs, h)
	}
	codes := make(chan int, len(hs))
	for _, h := range hs {
		go func() { codes <- h.closeCode(5 * time.Second) }()
	}
	closed, kept := map[int]int{}, 0
	for range hs {
		if code := <-codes; code >= 0 {
			closed[code]++
		} else {
			kept++
		}
	}
	oomKills := cgroupFigure(t, cg, "memory.oom_control oom_kill")
	t.Logf("the second edge: %d connections held a message, closed %v, a new one refused at %d (0: none); the cgroup's peak %d MiB of %d, OOM kills %d",
		kept, closed, refusedAt, cgroupFigure(t, cg, "memory.max_usage_in_bytes")>>20, limit>>20, oomKills)
	wA.running(t, "beside the second edge (killed by the kernel: the cgroup's limit passed)")
	wB.running(t, "beside the first edge (killed by the kernel: the cgroup's limit passed)")
	if oomKills > 0 {
		t.Errorf("the kernel killed %d processes of the cgroup", oomKills)
	}
	// Lowered at its start already when the first held enough then: the
	// whole output, not only what came after "edge started".
	if !strings.Contains(edgeB.output(), msgLimitShared) {
		t.Errorf("the second edge did not lower its limit (no %q line), holding %d MiB beside the first's %d", msgLimitShared, kept, first)
	}
	if closed[1013] == 0 && refusedAt == 0 {
		t.Errorf("the second edge refused nothing (held %d MiB beside the first's %d)", kept, first)
	}
	// Both still serve.
	for _, addr := range []string{listenA, listenB} {
		if status := freshStatus("http://" + addr + "/whoami"); !strings.HasPrefix(status, "200") && !strings.HasPrefix(status, "503") {
			t.Errorf("GET /whoami on %s: %s", addr, status)
		}
	}
}

// A hitless upgrade puts its two processes in one cgroup (the new one is
// started by the old): while both run, each counts what the other holds
// against its own limit, and the one left takes its whole limit back once
// the old has exited. A gslb in a 128 MiB cgroup (no GOMEMLIMIT), upgraded.
func TestUpgradeProcessesCountEachOther(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test of the real binary; skipped with -short")
	}
	cg := memoryCgroup(t, 128<<20)
	bin := wrappedBinary(t, buildBinary(t), "ringlb-in-cgroup",
		fmt.Sprintf("unset GOMEMLIMIT AUTOMEMLIMIT\necho $$ > '%s/cgroup.procs' || exit 1", cg))
	dir := t.TempDir()
	gcfg := filepath.Join(dir, "gslb.yaml")
	writeFile(t, gcfg, `cluster: { name: gslb-1, bind: 127.0.0.1:0, profile: local }
gslb:
  listen: 127.0.0.1:0
  admin: { listen: 127.0.0.1:0 }
  zones: [ { origin: ringlb.test, records: [ "@ 3600 IN SOA ns1 hostmaster 1 7200 3600 1209600 60", "ns1 3600 IN A 127.0.0.1" ] } ]
`)
	g := startProc(t, bin, "gslb", "-config", gcfg, "-upgrade-dir", filepath.Join(dir, "run"))
	g.waitLog(t, "gslb started")
	old := g.cmd.Process.Pid
	w := watchLogs(g)
	if strings.Contains(g.output(), msgLimitShared) {
		t.Fatal("alone in its cgroup, the gslb lowered its limit")
	}
	syscall.Kill(old, syscall.SIGUSR2)
	w.waitLine(t, "upgrade done; the old process exits")
	waitGone(t, old)
	for _, rec := range w.records() {
		if rec["msg"] == "upgrade done; the old process exits" {
			next := int(rec["new_pid"].(float64))
			t.Cleanup(func() { syscall.Kill(next, syscall.SIGTERM); waitGone(t, next) })
		}
	}
	w.waitLine(t, msgLimitOwn)
	var lowered map[string]any
	for _, rec := range w.records() {
		if rec["msg"] == msgLimitShared {
			lowered = rec
		}
	}
	if lowered == nil {
		t.Fatalf("neither process counted the other (no %q line)", msgLimitShared)
	}
	t.Logf("during the upgrade: limit %v MiB of its own %v MiB, the other process holding %v MiB of the cgroup's %v MiB; back to its own once the old exited",
		mibOf(lowered["limit"]), mibOf(lowered["own_limit"]), mibOf(lowered["others"]), mibOf(lowered["cgroup_limit"]))
}

// mibOf is a log record's byte count in MiB.
func mibOf(v any) int64 {
	f, _ := v.(float64)
	return int64(f) >> 20
}

// records returns the log records so far.
func (w *logWatch) records() []map[string]any {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.recs)
}
