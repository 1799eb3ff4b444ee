package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/ringlb/ringlb/balancer/handoff"
)

// `ringlb upgrade` reads how the upgrade ended from the hand-off directory:
// one that other users can write (made before the node's, in a shared
// /tmp) is theirs to answer from, so the command refuses it, as the node
// does, before it signals anything.
func TestUpgradeCommandRefusesAnOpenDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ringlb-upgrade")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	proc := exec.Command("sleep", "60")
	if err := proc.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proc.Process.Kill(); proc.Wait() })
	pid := proc.Process.Pid
	// What another user answers with.
	if err := os.WriteFile(filepath.Join(dir, "upgrade-"+strconv.Itoa(pid)+".status"), []byte("ok 1\n"), 0o666); err != nil {
		t.Fatal(err)
	}
	var out, errOut strings.Builder
	code := run(context.Background(), []string{"upgrade", "-pid", strconv.Itoa(pid), "-upgrade-dir", dir, "-timeout", "5s"}, &out, &errOut)
	t.Logf("exit %d: %s%s", code, out.String(), errOut.String())
	if code == 0 || !strings.Contains(errOut.String(), "lets others in") {
		t.Errorf("ringlb upgrade with a directory of mode 0777: exit %d %s", code, errOut.String())
	}
	if exited(pid) {
		t.Error("the process was signalled (SIGUSR2 ended it) before the directory was checked")
	}

	// Private, but another user's: as root only (a test cannot give a
	// directory away otherwise).
	if os.Geteuid() != 0 {
		return
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	errOut.Reset()
	code = run(context.Background(), []string{"upgrade", "-pid", strconv.Itoa(pid), "-upgrade-dir", dir, "-timeout", "5s"}, &out, &errOut)
	t.Logf("exit %d: %s%s", code, out.String(), errOut.String())
	if code == 0 || !strings.Contains(errOut.String(), "owned by uid 65534") || exited(pid) {
		t.Errorf("ringlb upgrade with another user's directory: exit %d %s", code, errOut.String())
	}
}

// `ringlb upgrade -pid PID` signals only a ringlb balancer or gslb: SIGUSR2
// ends a process that does not catch it, and an edge is not upgraded in
// place. Before, a wrong pid (a typo, a pgrep that matched another
// process) was killed and the command said it "exited without recording
// an upgrade"; an edge, which logged at once that it is not upgraded in
// place, was waited on for the whole -timeout, and the command then said
// the upgrade "is still under way or failed". Now each is refused before
// anything is signalled, exit 1, saying what the process is and what to
// do, and it runs on.
func TestUpgradeCommandRefusesAProcessThatIsNoBalancerOrGSLB(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the real binary; skipped with -short")
	}
	bin := buildBinary(t)

	t.Run("another program", func(t *testing.T) {
		sleep := exec.Command("sleep", "60")
		if err := sleep.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { sleep.Process.Kill(); sleep.Wait() })
		pid := strconv.Itoa(sleep.Process.Pid)
		// Before, the command returned once the process it killed had
		// exited: it is dead (a zombie) by now if it was signalled.
		code, out := runRinglb(t, bin, nil, "upgrade", "-pid", pid, "-timeout", "10s")
		t.Logf("ringlb upgrade -pid <sleep>: exit %d\n%s", code, out)
		if !alive(sleep.Process.Pid) {
			t.Errorf("ringlb upgrade killed pid %s, a sleep(1)", pid)
		}
		if want := "pid " + pid + " is not a ringlb balancer or gslb (it runs "; code != 1 || !strings.Contains(out, want) {
			t.Errorf("ringlb upgrade -pid <sleep>: exit %d, want 1 with %q", code, want)
		}
	})

	t.Run("an edge", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "edge.yaml")
		writeFile(t, path, "cluster: { name: edge-1, bind: 127.0.0.1:0, profile: local }\nedge: { listen: 127.0.0.1:0, admin: 127.0.0.1:0 }\n")
		p := startProc(t, bin, "edge", "-config", path)
		p.waitLog(t, "edge started")
		pid := strconv.Itoa(p.cmd.Process.Pid)
		code, out := runRinglb(t, bin, nil, "upgrade", "-pid", pid, "-timeout", "10s")
		t.Logf("ringlb upgrade -pid <edge>: exit %d\n%s", code, out)
		if want := "pid " + pid + " is an edge: edges are not upgraded in place; they drain and restart"; code != 1 || !strings.Contains(out, want) {
			t.Errorf("ringlb upgrade -pid <edge>: exit %d, want 1 with %q", code, want)
		}
		if !alive(p.cmd.Process.Pid) || strings.Contains(p.output(), "SIGUSR2") {
			t.Errorf("the edge was signalled:\n%s", lastLines(p.output(), 3))
		}
	})
}

// An upgrade runs whatever binary is at the path the process was started
// from: one the node's group or other users can write is their code run as
// the node's user. The old process refuses to start it and keeps serving;
// `ringlb upgrade` says why and what fixes it. Fixed, the upgrade goes on.
func TestUpgradeRefusesABinaryOthersCanWriteEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test of the real binary; skipped with -short")
	}
	bin := installBinary(t, 0o775) // as installed under umask 002
	dir := filepath.Dir(bin)
	gcfg := filepath.Join(dir, "gslb.yaml")
	writeFile(t, gcfg, `cluster: { name: gslb-1, bind: 127.0.0.1:0, profile: local }
gslb:
  listen: 127.0.0.1:0
  admin: { listen: 127.0.0.1:0 }
  zones: [ { origin: ringlb.test, records: [ "@ 3600 IN SOA ns1 hostmaster 1 7200 3600 1209600 60", "ns1 3600 IN A 127.0.0.1", "www 60 IN A 127.0.0.9" ] } ]
`)
	upgradeDir := filepath.Join(dir, "run")
	g := startProc(t, bin, "gslb", "-config", gcfg, "-upgrade-dir", upgradeDir)
	// Said at the start, not only when an upgrade is refused.
	if warned := g.waitLog(t, "an upgrade of this node would be refused"); !strings.Contains(fmt.Sprint(warned["err"]), "chmod go-w "+bin) {
		t.Errorf("the start's warning: %v, want the binary's mode and its fix", warned["err"])
	}
	server := g.waitLog(t, "gslb started")["dns"].(string)
	pid := g.cmd.Process.Pid
	answers := func() bool {
		m := new(dns.Msg)
		m.SetQuestion("www.ringlb.test.", dns.TypeA)
		r, _, err := (&dns.Client{Timeout: 5 * time.Second}).Exchange(m, server)
		return err == nil && r.Rcode == dns.RcodeSuccess && len(r.Answer) == 1
	}

	out, err := exec.Command(bin, "upgrade", "-pid", strconv.Itoa(pid), "-upgrade-dir", upgradeDir, "-timeout", "60s").CombinedOutput()
	t.Logf("ringlb upgrade, binary mode 0775: %v: %s", err, strings.TrimSpace(string(out)))
	if err == nil {
		// It ran: the new process is not the test's child, stop it too.
		next := int(g.waitLog(t, "upgrade done; the old process exits")["new_pid"].(float64))
		syscall.Kill(next, syscall.SIGTERM)
		t.Fatalf("ringlb upgrade ran a binary its group can write: %s", out)
	}
	if !strings.Contains(string(out), "chmod go-w "+bin) {
		t.Errorf("ringlb upgrade of a process whose binary its group can write: %v\n%s", err, out)
	}
	failed := g.waitLog(t, "upgrade failed; this process keeps serving")
	if reason, _ := failed["err"].(string); !strings.Contains(reason, "chmod go-w") {
		t.Errorf("the old process logged %q, want the mode and its fix", reason)
	}
	if !alive(pid) || !answers() {
		t.Fatal("the gslb stopped serving after a refused upgrade")
	}

	if err := os.Chmod(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	out, err = exec.Command(bin, "upgrade", "-pid", strconv.Itoa(pid), "-upgrade-dir", upgradeDir, "-timeout", "60s").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "upgraded: pid") {
		t.Fatalf("ringlb upgrade once the binary is 0755: %v\n%s", err, out)
	}
	next := int(g.waitLog(t, "upgrade done; the old process exits")["new_pid"].(float64))
	t.Cleanup(func() { syscall.Kill(next, syscall.SIGTERM) })
	if !answers() {
		t.Error("the new gslb does not answer")
	}
}

// `ringlb upgrade` waits as long as the node's upgrade may take, from the
// flags it was started with: a fixed 2 min was shorter than a node with
// -shutdown-timeout=3m may take (one hand-off and one stop, each that long,
// after the new process's start), and the command reported a failure while
// the upgrade went on fine.
func TestUpgradeWaitsAsLongAsTheNodesUpgradeMay(t *testing.T) {
	for _, tc := range []struct {
		args       []string
		ready, stp time.Duration
	}{
		{[]string{"-config", "x.yaml"}, 30 * time.Second, stopTimeout},
		{[]string{"-config", "x.yaml", "-shutdown-timeout=3m", "--upgrade-timeout", "45s"}, 45 * time.Second, 3 * time.Minute},
		{[]string{"-shutdown-timeout", "2m"}, 30 * time.Second, 2 * time.Minute},
	} {
		// A process whose command line carries the flags, as a node's
		// does (a shell that runs sleep and then exits: one that runs
		// only sleep execs it, and its command line is sleep's).
		proc := exec.Command("sh", append([]string{"-c", "sleep 60; exit 0", "ringlb", "balancer"}, tc.args...)...)
		if err := proc.Start(); err != nil {
			t.Fatal(err)
		}
		// Start returns before the kernel has set the new command line.
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(time.Millisecond) {
			if args, _ := handoff.CommandLine(proc.Process.Pid); slices.Contains(args, "balancer") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the process's command line never showed its arguments")
			}
		}
		got, err := upgradeBound(proc.Process.Pid)
		proc.Process.Kill()
		proc.Wait()
		if err != nil {
			t.Fatal(err)
		}
		// upgradeNode: the start, the hand-off, the take-over, the stop.
		least := tc.ready + tc.stp + takeOverGossipWait + tc.stp
		t.Logf("%v: waits %s, the node may take %s", tc.args, got, least)
		if got < least {
			t.Errorf("%v: ringlb upgrade waits %s, the node may take %s", tc.args, got, least)
		}
	}
}
