package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
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
