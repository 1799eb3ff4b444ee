// Package fdtest runs a test out of file descriptors: Alone runs it in a
// child process of the test binary, ExhaustDescriptors takes every
// descriptor the process may open until it is released. It imports nothing
// of ringlb, so that acceptguard's own tests use it too.
package fdtest

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// aloneEnv names the one test a child process of the test binary runs.
const aloneEnv = "FDTEST_ALONE"

// childBound bounds the child process running a test alone.
const childBound = 2 * time.Minute

// Alone reports whether the calling test is to run its body here: in the
// child process Alone starts for it, with nothing else of the test binary
// open, yes; in the test binary's own process it runs that child, reports
// its output, fails or skips as the child did, and says no. A test that
// exhausts its descriptors runs alone: in the test binary's process, a
// descriptor an earlier test still held (a connection closing in a
// goroutine) could be freed meanwhile and let through what is under test.
func Alone(t *testing.T) bool {
	t.Helper()
	if os.Getenv(aloneEnv) == t.Name() {
		return true
	}
	ctx, cancel := context.WithTimeout(context.Background(), childBound)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^"+t.Name()+"$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), aloneEnv+"="+t.Name())
	out, err := cmd.CombinedOutput()
	t.Logf("in a process of its own:\n%s", out)
	switch {
	case err != nil:
		t.Fatalf("%s in a process of its own: %v", t.Name(), err)
	case bytes.Contains(out, []byte("--- SKIP: "+t.Name())):
		t.Skip("skipped in a process of its own")
	case !bytes.Contains(out, []byte("--- PASS: "+t.Name())):
		t.Fatalf("%s did not run in a process of its own", t.Name())
	}
	return false
}

// ExhaustDescriptors leaves the process without a free descriptor — its
// soft RLIMIT_NOFILE lowered to a few above what it holds, the rest taken
// with /dev/null — until release (also run at cleanup) gives them back
// and restores the limit. Call release from the test's goroutine.
func ExhaustDescriptors(t *testing.T) (release func()) {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	held, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count descriptors: %v", err)
	}
	low := lim
	low.Cur = uint64(len(held) + 16)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	var files []*os.File
	released := false
	release = func() {
		if released {
			return
		}
		released = true
		for _, f := range files {
			f.Close()
		}
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			t.Errorf("restore RLIMIT_NOFILE: %v", err)
		}
	}
	t.Cleanup(release)
	for {
		f, err := os.Open(os.DevNull)
		if errors.Is(err, syscall.EMFILE) {
			return release
		}
		if err != nil {
			release()
			t.Fatal(err)
		}
		files = append(files, f)
	}
}
