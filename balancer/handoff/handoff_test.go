package handoff

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// childMode makes the test binary, started again by Upgrade, play a new
// process: "serve" takes over properly; the others fail in one way each.
const childMode = "RINGLB_HANDOFF_TEST_CHILD"

func TestMain(m *testing.M) {
	if mode := os.Getenv(childMode); mode != "" && os.Getenv(envSocket) != "" {
		os.Exit(runChild(mode))
	}
	os.Exit(m.Run())
}

// runChild is the new process of the tests.
func runChild(mode string) int {
	switch mode {
	case "exit1":
		fmt.Fprintln(os.Stderr, "boom: this binary cannot start")
		return 1
	case "hang":
		fmt.Fprintln(os.Stderr, "starting, slowly")
		time.Sleep(time.Minute)
		return 1
	}
	p, err := Start(Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "start:", err)
		return 1
	}
	c := p.Parent()
	if _, _, _, err := c.Recv(); err != nil { // the state
		fmt.Fprintln(os.Stderr, "state:", err)
		return 1
	}
	if mode == "fail" {
		c.Fail(errors.New("config check: balancer.listen: bad address"))
		return 1
	}
	ln, err := p.Listen("data", "tcp", "127.0.0.1:0")
	if err != nil {
		c.Fail(err)
		return 1
	}
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(conn, "child %d\n", os.Getpid())
			conn.Close()
		}
	}()
	if err := c.Ready(); err != nil {
		return 1
	}
	state, err := c.WaitEnd(10 * time.Second)
	if err != nil {
		return 1
	}
	// The end's state says what it carried: its length, as the count.
	c.Done(len(state))
	return 0
}

func upgradeProcess(t *testing.T, mode string, timeout time.Duration) (*Process, net.Listener) {
	t.Helper()
	t.Setenv(childMode, mode)
	p, err := Start(Options{Dir: filepath.Join(t.TempDir(), "run"), ReadyTimeout: timeout, Stderr: os.Stderr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	// The new process is this test binary, installed as an operator
	// would: go's build directory follows the umask, and an upgrade
	// refuses a binary that group or others can write.
	bin := filepath.Join(t.TempDir(), "ringlb")
	if err := os.Chmod(filepath.Dir(bin), 0o700); err != nil {
		t.Fatal(err)
	}
	installBinary(t, bin, 0o755)
	p.exe = bin
	ln, err := p.Listen("data", "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return p, ln
}

func answer(t *testing.T, addr string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	line, _ := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line)
}

// The new process inherits the listener (same socket: connections queued
// while the old one stops accepting are the new one's) and answers on it.
func TestUpgradeHandsTheListenerToTheNewProcess(t *testing.T) {
	p, ln := upgradeProcess(t, "serve", 20*time.Second)
	child, err := p.Upgrade(context.Background(), func(c *Conn) error { return c.Send(TypeState, []byte("{}")) })
	if err != nil {
		t.Fatal(err)
	}
	defer child.Conn.Close()
	if _, err := p.Upgrade(context.Background(), nil); !errors.Is(err, ErrUpgraded) {
		t.Errorf("second upgrade: %v, want ErrUpgraded", err)
	}
	addr := ln.Addr().String()
	ln.Close() // the old process stops accepting; the socket lives on in the child
	if got, want := answer(t, addr), fmt.Sprintf("child %d", child.PID); got != want {
		t.Errorf("answer %q, want %q", got, want)
	}
	// The end carries the role's state as the old process stopped (the
	// gslb's operator state): the child has all of it.
	state := []byte(`{"overrides":[{"name":"www.example.","region":"eu","member":"a","mode":"remove"}]}`)
	if err := child.Conn.End(state); err != nil {
		t.Fatal(err)
	}
	if n, err := child.Conn.WaitDone(10 * time.Second); err != nil || n != len(state) {
		t.Fatalf("the child took an end of %d bytes (%v), want the %d sent", n, err, len(state))
	}
}

// A new process that exits, refuses (config check) or is not ready in time
// fails the upgrade with its reason and stderr; the old listener serves on,
// and a later upgrade may be tried.
func TestUpgradeRollback(t *testing.T) {
	for _, tc := range []struct {
		mode, reason, stderr string
		// ready bounds the new process's start: generous but for the
		// one that never gets ready, lest a slow start on a busy machine
		// be reported instead of the exit or refusal under test.
		ready time.Duration
	}{
		{"exit1", "exited before", "boom: this binary cannot start", time.Minute},
		{"fail", "refused to take over: config check: balancer.listen: bad address", "", time.Minute},
		// 5 s: its line on stderr must have come by then.
		{"hang", "not ready within 5s", "starting, slowly", 5 * time.Second},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			p, ln := upgradeProcess(t, tc.mode, tc.ready)
			_, err := p.Upgrade(context.Background(), func(c *Conn) error { return c.Send(TypeState, nil) })
			var ue *UpgradeError
			if !errors.As(err, &ue) {
				t.Fatalf("upgrade: %v, want an UpgradeError", err)
			}
			if !strings.Contains(ue.Reason, tc.reason) || !strings.Contains(ue.StderrTail, tc.stderr) {
				t.Errorf("reason %q (want %q), stderr %q (want %q)", ue.Reason, tc.reason, ue.StderrTail, tc.stderr)
			}
			oldProcessServes(t, p, ln, "failed")
		})
	}
}

// Only the child started by Upgrade may take over: a peer with another pid
// (any other process of the user reaching the socket) is refused.
func TestPeerCheck(t *testing.T) {
	a, b, err := socketpairUnix()
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	defer b.Close()
	if err := checkPeer(a, os.Getpid()); err != nil {
		t.Errorf("own pid refused: %v", err)
	}
	if err := checkPeer(a, os.Getpid()+1); err == nil {
		t.Error("a peer with another pid was accepted")
	}
}

func socketpairUnix() (*net.UnixConn, *net.UnixConn, error) {
	x, y, err := Pair()
	if err != nil {
		return nil, nil, err
	}
	return x.c, y.c, nil
}

// The parser refuses what no ringlb sends: a length beyond MaxFrame (before
// reading or allocating it), descriptors on a frame that carries none, more
// descriptors than a tunnel has, another protocol version.
func TestRecvRefusesAbsurdFrames(t *testing.T) {
	t.Run("huge length", func(t *testing.T) {
		a, b, _ := Pair()
		defer a.Close()
		defer b.Close()
		var head [5]byte
		head[0] = TypeTunnel
		binary.BigEndian.PutUint32(head[1:], 0xFFFFFFF0)
		go a.c.Write(head[:])
		if _, _, _, err := b.Recv(TypeTunnel); !errors.Is(err, errFrameTooLarge) {
			t.Fatalf("got %v, want errFrameTooLarge", err)
		}
	})
	t.Run("descriptors on a state frame", func(t *testing.T) {
		a, b, _ := Pair()
		defer a.Close()
		defer b.Close()
		r, w, _ := os.Pipe()
		defer r.Close()
		defer w.Close()
		if err := a.Send(TypeState, []byte("{}"), int(r.Fd())); err != nil {
			t.Fatal(err)
		}
		if _, _, fds, err := b.Recv(TypeTunnel); !errors.Is(err, errUnexpectedFDs) || fds != nil {
			t.Fatalf("got %v %v, want errUnexpectedFDs", fds, err)
		}
	})
	t.Run("too many descriptors", func(t *testing.T) {
		a, b, _ := Pair()
		defer a.Close()
		defer b.Close()
		var files []int
		for range 4 {
			r, w, _ := os.Pipe()
			defer r.Close()
			defer w.Close()
			files = append(files, int(r.Fd()))
		}
		head := []byte{TypeTunnel, 0, 0, 0, 0}
		go a.c.WriteMsgUnix(head, unix.UnixRights(files...), nil)
		if _, _, fds, err := b.Recv(TypeTunnel); err == nil || fds != nil {
			t.Fatalf("got %v %v, want a refusal", fds, err)
		}
	})
	t.Run("other version", func(t *testing.T) {
		p := helloPayload(42)
		binary.BigEndian.PutUint16(p[len(helloMagic):], Version+1)
		if _, err := parseHello(p); err == nil || !strings.Contains(err.Error(), "version") {
			t.Fatalf("got %v, want a version error", err)
		}
		if pid, err := parseHello(helloPayload(42)); err != nil || pid != 42 {
			t.Fatalf("own hello: %d %v", pid, err)
		}
	})
}

// Frames and their descriptors arrive whole and in order, also when a
// large frame is written in parts.
func TestFramesCarryDescriptors(t *testing.T) {
	a, b, _ := Pair()
	defer a.Close()
	defer b.Close()
	r, w, _ := os.Pipe()
	defer r.Close()
	defer w.Close()
	big := make([]byte, MaxFrame)
	for i := range big {
		big[i] = byte(i)
	}
	go func() {
		for i := range 20 {
			a.Send(TypeTunnel, big[:MaxFrame-i*1000], int(r.Fd()), int(w.Fd()))
		}
		a.Send(TypeCounters, []byte("[]"))
	}()
	for i := range 20 {
		typ, p, fds, err := b.Recv(TypeTunnel)
		if err != nil || typ != TypeTunnel || len(p) != MaxFrame-i*1000 || len(fds) != 2 {
			t.Fatalf("frame %d: type %d, %d bytes, %d fds, %v", i, typ, len(p), len(fds), err)
		}
		for j, x := range p {
			if x != byte(j) {
				t.Fatalf("frame %d: byte %d differs", i, j)
			}
		}
		closeFDs(fds)
	}
	if typ, p, _, err := b.Recv(); err != nil || typ != TypeCounters || string(p) != "[]" {
		t.Fatalf("last frame: %d %q %v", typ, p, err)
	}
}

// The socket's directory must be this user's alone: an existing directory
// that others can enter, or a symlink planted in a shared /tmp, is refused.
func TestPrivateDir(t *testing.T) {
	base := t.TempDir()
	if _, err := PrivateDir(filepath.Join(base, "new")); err != nil {
		t.Fatalf("new directory: %v", err)
	}
	fi, _ := os.Stat(filepath.Join(base, "new"))
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("created with %v, want 0700", fi.Mode().Perm())
	}
	open := filepath.Join(base, "open")
	os.Mkdir(open, 0o755)
	os.Chmod(open, 0o755)
	if _, err := PrivateDir(open); err == nil {
		t.Error("a 0755 directory was accepted")
	}
	link := filepath.Join(base, "link")
	os.Symlink(filepath.Join(base, "new"), link)
	if _, err := PrivateDir(link); err == nil {
		t.Error("a symlink was accepted")
	}
	// A private directory in one others can write: they could swap it.
	shared := filepath.Join(base, "shared")
	os.Mkdir(shared, 0o777)
	os.Chmod(shared, 0o777)
	if _, err := PrivateDir(filepath.Join(shared, "ringlb")); err == nil || !strings.Contains(err.Error(), "chmod go-w") {
		t.Errorf("a private directory in a 0777 one: %v, want refused with the fix", err)
	} else {
		t.Log(err)
	}
}

// oldProcessServes checks, after an upgrade of p that ended how (failed,
// refused), that ln is still the old process's and that the next upgrade
// may be tried.
func oldProcessServes(t *testing.T, p *Process, ln net.Listener, how string) {
	t.Helper()
	go func() {
		if c, err := ln.Accept(); err == nil {
			fmt.Fprintln(c, "old")
			c.Close()
		}
	}()
	if got := answer(t, ln.Addr().String()); got != "old" {
		t.Errorf("after the %s upgrade the listener answered %q, want the old process", how, got)
	}
	p.mu.Lock()
	again := !p.upgraded
	p.mu.Unlock()
	if !again {
		t.Errorf("a %s upgrade blocks the next one", how)
	}
}

// The start state is read only as the parent writes it: a regular file of
// this user within MaxFrame; a symlink, a FIFO (which would hold the
// child's start in open(2)) or an oversized file is refused, and none is
// no state.
func TestStartStateFile(t *testing.T) {
	dir := t.TempDir()
	p := &Process{}
	p.SetStartState(func() []byte { return []byte(`{"overrides":[]}`) })
	path := startStatePath(filepath.Join(dir, "handoff-1.sock"))
	if err := p.writeStartState(path); err != nil {
		t.Fatal(err)
	}
	if got, err := readStartState(path); err != nil || string(got) != `{"overrides":[]}` {
		t.Errorf("the state written: %q %v", got, err)
	}
	if err := p.writeStartState(path); err == nil {
		t.Error("an existing start state was written over")
	}
	if got, err := readStartState(filepath.Join(dir, "none")); got != nil || err != nil {
		t.Errorf("no file: %q %v, want no state", got, err)
	}
	link := filepath.Join(dir, "link")
	os.Symlink(path, link)
	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big")
	if err := os.WriteFile(big, make([]byte, MaxFrame+1), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, refused := range []string{link, fifo, big} {
		if got, err := readStartState(refused); err == nil {
			t.Errorf("%s: read %d bytes, want refused", filepath.Base(refused), len(got))
		}
	}
}

// A part of the start state (the admin plane's) goes in a file of its own:
// the role's file holds the role's state alone, as a child of an earlier
// release reads it; a child of this one reads the part, and a parent of
// an earlier release, which writes none, gives it none. Both files go as
// the upgrade ends.
func TestStartStatePart(t *testing.T) {
	dir := t.TempDir()
	path := startStatePath(filepath.Join(dir, "handoff-1.sock"))
	p := &Process{log: slog.New(slog.DiscardHandler)}
	p.SetStartState(func() []byte { return []byte(`{"overrides":[]}`) })
	p.SetStartPart("admin", func() []byte { return []byte(`{"hash":"x"}`) })
	if err := p.writeStartState(path); err != nil {
		t.Fatal(err)
	}
	if got, err := readStartState(path); err != nil || string(got) != `{"overrides":[]}` {
		t.Errorf("the role's state as an earlier release reads it: %q %v", got, err)
	}
	child := &Process{log: slog.New(slog.DiscardHandler), partsFrom: path}
	if got := child.StartPart("admin"); string(got) != `{"hash":"x"}` {
		t.Errorf("the part read: %q", got)
	}
	p.removeStartState(path)
	for _, f := range []string{path, startPartPath(path, "admin")} {
		if _, err := os.Lstat(f); err == nil {
			t.Errorf("%s left after the upgrade", filepath.Base(f))
		}
	}
	if got := child.StartPart("admin"); string(got) != `{"hash":"x"}` {
		t.Errorf("the part read again, its file gone: %q", got)
	}
	earlier := &Process{log: slog.New(slog.DiscardHandler), partsFrom: path}
	if got := earlier.StartPart("admin"); got != nil {
		t.Errorf("from a parent that wrote none: %q", got)
	}
}
