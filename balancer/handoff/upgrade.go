package handoff

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Child is a new process started by Upgrade that said it is ready.
type Child struct {
	PID  int
	Conn *Conn
	// exited is the child's end (its Wait's error), put back by whoever
	// takes it.
	exited chan error
}

// Exited waits up to d for the child to exit and says whether it has, and
// how it ended. A child that dies after Ready (killed, crashed) has its
// socket closed before its end is known here: a read that finds the
// socket closed asks this before taking the child for gone.
func (c *Child) Exited(d time.Duration) (bool, error) {
	select {
	case err := <-c.exited:
		c.exited <- err
		if err == nil {
			err = errors.New("exit status 0")
		}
		return true, err
	case <-time.After(d):
		return false, nil
	}
}

// UpgradeError is a failed upgrade: the new process was not started (its
// binary is one other users could change), did not start, failed its
// checks, died, or was not ready in time. The old process keeps serving.
type UpgradeError struct {
	Reason string
	// StderrTail is the end of what the new process wrote to stderr.
	StderrTail string
}

func (e *UpgradeError) Error() string { return e.Reason }

// Upgrade starts the binary at this process's path as a child inheriting
// every listener, checks that the process connecting to the hand-off socket
// is that child (same user, same pid), sends it state (the role's, may be
// nil) and waits for it to be ready. On success the caller hands over what
// it keeps and exits; on error (an *UpgradeError when the child failed) the
// child is gone and the caller keeps serving. One upgrade at a time; none
// after a successful one.
func (p *Process) Upgrade(ctx context.Context, state func(*Conn) error) (*Child, error) {
	p.mu.Lock()
	if p.upgraded {
		p.mu.Unlock()
		return nil, ErrUpgraded
	}
	p.upgraded = true // until it fails: no second upgrade meanwhile
	p.mu.Unlock()
	child, err := p.upgrade(ctx, state)
	if err != nil {
		p.mu.Lock()
		p.upgraded = false
		p.mu.Unlock()
	}
	return child, err
}

// CheckBinary says whether the binary at this process's path would be
// started by an upgrade now (checkBinary's rule), so that a node can say so
// at its start rather than when an upgrade is refused.
func (p *Process) CheckBinary() error { return checkBinary(p.exe, os.Geteuid()) }

// CheckExecutable asks CheckBinary's question without a Process: would an
// upgrade of a node started as this process was (the same path, the same
// user) start the binary there now. `ringlb check` asks it, as the unit's
// ExecStartPre, before the node runs.
func CheckExecutable() error {
	exe, err := executable()
	if err != nil {
		return err
	}
	return checkBinary(exe, os.Geteuid())
}

func (p *Process) upgrade(ctx context.Context, state func(*Conn) error) (*Child, error) {
	// Whatever is at the path runs as this user, with every listener.
	if err := p.CheckBinary(); err != nil {
		return nil, &UpgradeError{Reason: "not started: " + err.Error()}
	}
	dir, err := PrivateDir(p.opts.Dir)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, fmt.Sprintf("handoff-%d.sock", os.Getpid()))
	_ = os.Remove(path) // a previous attempt's, if this process crashed mid-way
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("hand-off socket: %w", err)
	}
	ln.SetUnlinkOnClose(true)
	defer ln.Close()
	// The directory already keeps others out; the mode says so twice.
	if err := os.Chmod(path, 0o600); err != nil {
		return nil, fmt.Errorf("hand-off socket: %w", err)
	}
	// Read by the child at its start; gone once the upgrade has ended here.
	statePath := startStatePath(path)
	p.removeStartState(statePath) // a previous attempt's
	defer p.removeStartState(statePath)
	if err := p.writeStartState(statePath); err != nil {
		return nil, fmt.Errorf("hand-off start state: %w", err)
	}

	p.mu.Lock()
	names := append([]string(nil), p.order...)
	files := make([]*os.File, 0, len(names)+1)
	for _, n := range names {
		files = append(files, p.files[n])
	}
	p.mu.Unlock()
	files = append(files, os.Stderr)
	stderrR, stderrW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd := &exec.Cmd{
		Path:       p.exe,
		Args:       append([]string{p.exe}, os.Args[1:]...),
		Env:        childEnv(path, names, 3+len(names)),
		Stdin:      os.Stdin,
		Stdout:     os.Stdout,
		Stderr:     stderrW,
		ExtraFiles: files,
	}
	if err := cmd.Start(); err != nil {
		stderrR.Close()
		stderrW.Close()
		return nil, &UpgradeError{Reason: fmt.Sprintf("start %s: %v", p.exe, err)}
	}
	stderrW.Close()
	tail := &tailWriter{max: 2048}
	teeDone := make(chan struct{})
	go func() {
		defer close(teeDone)
		teeLines(stderrR, p.opts.Stderr, tail)
		stderrR.Close()
	}()
	// exited reports the child's end. After a successful upgrade the child
	// outlives this process, and this goroutine waits with it until exit.
	// Whoever takes the result puts it back, so each wait below sees it.
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	pid := cmd.Process.Pid
	fail := func(reason string) (*Child, error) {
		_ = cmd.Process.Kill()
		err := <-exited
		exited <- err
		select {
		case <-teeDone:
		case <-time.After(time.Second): // a grandchild holding the pipe
		}
		return nil, &UpgradeError{Reason: reason, StderrTail: tail.String()}
	}
	deadline := time.Now().Add(p.opts.ReadyTimeout)
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()

	conn, err := acceptChild(ctx, ln, pid, exited, p.log)
	if err != nil {
		var ee *exitError
		switch {
		case errors.As(err, &ee):
			return fail(fmt.Sprintf("new process %d exited before connecting: %v", pid, ee.err))
		case errors.Is(err, context.DeadlineExceeded):
			return fail(fmt.Sprintf("new process %d not ready within %s; killed", pid, p.opts.ReadyTimeout))
		}
		return fail(fmt.Sprintf("new process %d: %v", pid, err))
	}
	if state != nil {
		if err := state(conn); err != nil {
			// A child that refuses (its config does not check) may have
			// said so and closed before the state went: its reason is
			// the better report.
			reason := fmt.Sprintf("send state to new process %d: %v", pid, err)
			if typ, p, _, rerr := conn.RecvWait(time.Second); rerr == nil && typ == TypeFailed {
				reason = fmt.Sprintf("new process %d refused to take over: %s", pid, p)
			}
			conn.Close()
			return fail(reason)
		}
	}
	type answer struct {
		typ     byte
		payload []byte
		err     error
	}
	answered := make(chan answer, 1)
	go func() {
		typ, payload, _, err := conn.RecvWait(time.Until(deadline) + time.Second)
		answered <- answer{typ, payload, err}
	}()
	select {
	case a := <-answered:
		switch {
		case a.err != nil:
			conn.Close()
			return fail(fmt.Sprintf("new process %d: no readiness: %v", pid, a.err))
		case a.typ == TypeFailed:
			conn.Close()
			return fail(fmt.Sprintf("new process %d refused to take over: %s", pid, a.payload))
		case a.typ != TypeReady:
			conn.Close()
			return fail(fmt.Sprintf("new process %d sent frame type %d before ready", pid, a.typ))
		}
	case err := <-exited:
		exited <- err
		reason := fmt.Sprintf("new process %d exited before it was ready: %v", pid, err)
		// A child that refused said why before it exited: the frame is in
		// the socket, or the read ends at its close.
		select {
		case a := <-answered:
			if a.err == nil && a.typ == TypeFailed {
				reason = fmt.Sprintf("new process %d refused to take over: %s", pid, a.payload)
			}
		case <-time.After(time.Second):
		}
		conn.Close()
		return fail(reason)
	case <-ctx.Done():
		conn.Close()
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return fail(fmt.Sprintf("new process %d not ready within %s; killed", pid, p.opts.ReadyTimeout))
		}
		return fail(fmt.Sprintf("upgrade interrupted: %v", ctx.Err()))
	}
	// The child now writes to the original stderr itself, and outlives
	// this process (it is reparented when this one exits).
	return &Child{PID: pid, Conn: conn, exited: exited}, nil
}

type exitError struct{ err error }

func (e *exitError) Error() string { return fmt.Sprintf("exited: %v", e.err) }

// acceptChild accepts connections on ln until the child pid connects and
// says hello. Anyone else (which the private directory should make
// impossible) is logged and dropped.
func acceptChild(ctx context.Context, ln *net.UnixListener, pid int, exited chan error, log *slog.Logger) (*Conn, error) {
	_ = ln.SetDeadline(time.Now().Add(100 * time.Millisecond))
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		select {
		case err := <-exited:
			exited <- err
			return nil, &exitError{err}
		default:
		}
		c, err := ln.AcceptUnix()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				_ = ln.SetDeadline(time.Now().Add(100 * time.Millisecond))
				continue
			}
			return nil, err
		}
		if err := checkPeer(c, pid); err != nil {
			log.Warn("hand-off socket: refused a connection", "err", err)
			c.Close()
			continue
		}
		conn := &Conn{c: c, stderrFD: -1}
		typ, payload, _, err := conn.Recv()
		if err == nil && typ != TypeHello {
			err = fmt.Errorf("first frame type %d, not hello", typ)
		}
		var helloPID int
		if err == nil {
			helloPID, err = parseHello(payload)
		}
		if err == nil && helloPID != pid {
			err = fmt.Errorf("hello from pid %d, expected %d", helloPID, pid)
		}
		if err != nil {
			c.Close()
			return nil, err
		}
		return conn, nil
	}
}

// childEnv is this process's environment for the child, with the hand-off
// variables set to this upgrade's socket and files.
func childEnv(socket string, names []string, stderrFD int) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, envSocket+"=") || strings.HasPrefix(kv, envFiles+"=") || strings.HasPrefix(kv, envStderr+"=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env,
		envSocket+"="+socket,
		envFiles+"="+strings.Join(names, ","),
		envStderr+"="+strconv.Itoa(stderrFD),
	)
}

// teeLines copies r to w a whole line per write (so the child's lines do
// not interleave with this process's own in a shared log) and keeps the
// tail.
func teeLines(r io.Reader, w io.Writer, tail *tailWriter) {
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			_, _ = w.Write(line)
			tail.Write(line)
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return
		}
	}
}

// tailWriter keeps the last max bytes written to it.
type tailWriter struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (t *tailWriter) Write(p []byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.max {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-t.max:]...)
	}
}

func (t *tailWriter) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(bytes.TrimSpace(t.buf))
}
