// Package handoff replaces a running ringlb process with a new one without
// closing a connection: the new binary is started as a child that inherits
// the listening sockets, and once it says it is ready the old process hands
// it whatever its role keeps per connection (the balancer: every established
// tunnel, both sockets and the bytes in flight) over a Unix socket, then
// exits. It is the mechanism only; what is handed over is the roles' own.
//
// Listener inheritance follows cloudflare/tableflip (names in the
// environment, descriptors from 3 on via exec's ExtraFiles, unused ones
// closed at Ready), written here because tableflip allows one Upgrader per
// process (package state), hands the child the parent's stdio as is (so a
// failed child's stderr cannot be reported) and reports readiness on a
// separate pipe, where this package needs one socket for readiness, the
// state and the tunnels' descriptors. It is not a supervisor: who starts the
// first process (systemd, a shell) stays its parent in spirit.
package handoff

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ringlb/ringlb/configs"
)

// Environment of a child started by Upgrade.
const (
	envSocket = "RINGLB_HANDOFF_SOCKET" // the parent's hand-off socket
	envFiles  = "RINGLB_HANDOFF_FILES"  // names of the descriptors from 3 on, comma-separated
	envStderr = "RINGLB_HANDOFF_STDERR" // descriptor of the original stderr
)

// DefaultReadyTimeout bounds how long the old process waits for the new one
// to be ready before it kills it and keeps serving.
const DefaultReadyTimeout = 30 * time.Second

// Options configure a Process.
type Options struct {
	// Dir is the private directory of the hand-off socket (created 0700;
	// an existing one must be this user's and not reachable by others).
	Dir string
	// ReadyTimeout bounds the new process's start (DefaultReadyTimeout).
	ReadyTimeout time.Duration
	// Stderr receives the child's stderr while it starts (the parent keeps
	// its tail for a failure's report); os.Stderr when nil.
	Stderr io.Writer
	Logger *slog.Logger
}

// Process is this process's side of upgrades: the listeners it serves
// (inherited from its parent, or bound by it) that a child will inherit,
// and, in a child, the connection to its parent.
type Process struct {
	opts Options
	exe  string // the binary to start: the path this one was started from
	log  *slog.Logger

	mu sync.Mutex
	// files are this process's listening sockets by name, as files (dups)
	// to hand to a child.
	files map[string]*os.File
	order []string
	// inherited are the files from the parent not yet claimed by Listen.
	inherited map[string]*os.File
	parent    *Conn
	upgraded  bool
	// startParts give what a child reads before it serves, by name (""
	// the role's own state: SetStartState); partsFrom is the parent's
	// start state file (none: not started by an upgrade), whose parts
	// StartPart reads once each into startedParts.
	startParts   map[string]func() []byte
	partsFrom    string
	startedParts map[string][]byte
}

// namePattern is what a listener's name may be: it travels in the
// environment, comma-separated.
var namePattern = regexp.MustCompile(`^[a-z0-9.-]{1,64}$`)

// Start returns this process's Process. In a child started by Upgrade it
// takes the inherited descriptors and connects to the parent (the hello is
// sent; the parent checks who we are); otherwise it has nothing inherited.
func Start(opts Options) (*Process, error) {
	if opts.ReadyTimeout <= 0 {
		opts.ReadyTimeout = DefaultReadyTimeout
	}
	if opts.Stderr == nil {
		opts.Stderr = os.Stderr
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	p := &Process{opts: opts, log: opts.Logger, files: map[string]*os.File{}, inherited: map[string]*os.File{}}
	exe, err := executable()
	if err != nil {
		return nil, err
	}
	p.exe = exe
	socket, names, stderrEnv := os.Getenv(envSocket), os.Getenv(envFiles), os.Getenv(envStderr)
	if socket == "" {
		return p, nil
	}
	// Not passed on to whatever this process starts (a later child gets
	// its own).
	for _, k := range []string{envSocket, envFiles, envStderr} {
		os.Unsetenv(k)
	}
	if err := p.inherit(names); err != nil {
		return nil, err
	}
	p.partsFrom = startStatePath(socket)
	p.StartState() // read now: the parent removes it as the upgrade ends
	stderrFD := -1
	if s := stderrEnv; s != "" {
		fd, err := strconv.Atoi(s)
		if err != nil || fd < 3 {
			return nil, fmt.Errorf("%s=%q: not a descriptor", envStderr, s)
		}
		unix.CloseOnExec(fd)
		stderrFD = fd
	}
	c, err := net.DialTimeout("unix", socket, 5*time.Second)
	if err != nil {
		return nil, fmt.Errorf("connect to the old process's hand-off socket: %w", err)
	}
	p.parent = &Conn{c: c.(*net.UnixConn), stderrFD: stderrFD, onReady: p.closeUnclaimed}
	if err := p.parent.Send(TypeHello, helloPayload(os.Getpid())); err != nil {
		c.Close()
		return nil, err
	}
	return p, nil
}

// executable is the path this process was started from, made absolute: an
// upgrade starts whatever binary is there now (a package upgrade or a
// symlink switch replaced it), not the inode this process runs.
func executable() (string, error) {
	exe := os.Args[0]
	if !strings.Contains(exe, "/") {
		p, err := exec.LookPath(exe)
		if err != nil {
			return "", fmt.Errorf("find own binary %q: %w", exe, err)
		}
		exe = p
	}
	return filepath.Abs(exe)
}

// inherit takes the descriptors named in names, from 3 on.
func (p *Process) inherit(names string) error {
	if names == "" {
		return nil
	}
	for i, name := range strings.Split(names, ",") {
		if !namePattern.MatchString(name) {
			return fmt.Errorf("%s: bad name %q", envFiles, name)
		}
		fd := 3 + i
		unix.CloseOnExec(fd)
		f := os.NewFile(uintptr(fd), name)
		if f == nil {
			return fmt.Errorf("%s: descriptor %d for %s is not open", envFiles, fd, name)
		}
		p.inherited[name] = f
	}
	return nil
}

// Parent is the connection to the old process in a child started by
// Upgrade, nil otherwise.
func (p *Process) Parent() *Conn {
	if p == nil {
		return nil
	}
	return p.parent
}

// Listen returns the listener named name: inherited from the parent when it
// passed one (its address must match addr), else bound now. Either way a
// child will inherit it. A nil Process only binds (nothing is passed on).
func (p *Process) Listen(name, network, addr string) (net.Listener, error) {
	if p == nil {
		return net.Listen(network, addr)
	}
	if f := p.claim(name); f != nil {
		ln, err := net.FileListener(f)
		if err != nil {
			return nil, fmt.Errorf("inherited listener %s: %w", name, err)
		}
		if err := sameAddress(addr, ln.Addr()); err != nil {
			ln.Close()
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		p.keep(name, f)
		return ln, nil
	}
	ln, err := net.Listen(network, addr)
	if err != nil {
		return nil, err
	}
	sc, ok := ln.(syscall.Conn)
	if !ok {
		ln.Close()
		return nil, fmt.Errorf("listener %s (%T) has no descriptor to pass on", name, ln)
	}
	if err := p.Add(name, sc); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

// Inherited returns the sockets the parent passed as name.0, name.1, ...
// (packet sockets sharing a port), nil when it passed none. A child will
// inherit them again under the same names.
func (p *Process) Inherited(name string) []*os.File {
	if p == nil {
		return nil
	}
	var out []*os.File
	for i := 0; ; i++ {
		n := name + "." + strconv.Itoa(i)
		f := p.claim(n)
		if f == nil {
			return out
		}
		p.keep(n, f)
		out = append(out, f)
	}
}

// Add records a socket bound elsewhere (a listener, a packet socket), to be
// inherited under name by a child.
func (p *Process) Add(name string, s syscall.Conn) error {
	if p == nil {
		return nil
	}
	if !namePattern.MatchString(name) {
		return fmt.Errorf("hand-off: bad listener name %q", name)
	}
	f, err := dupFile(s, name)
	if err != nil {
		return err
	}
	p.keep(name, f)
	return nil
}

// AddAll records several sockets under name.0, name.1, ...
func (p *Process) AddAll(name string, socks []syscall.Conn) error {
	if p == nil {
		return nil
	}
	for i, s := range socks {
		if err := p.Add(name+"."+strconv.Itoa(i), s); err != nil {
			return err
		}
	}
	return nil
}

func (p *Process) keep(name string, f *os.File) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if old, ok := p.files[name]; ok {
		old.Close()
	} else {
		p.order = append(p.order, name)
	}
	p.files[name] = f
}

func (p *Process) claim(name string) *os.File {
	p.mu.Lock()
	defer p.mu.Unlock()
	f := p.inherited[name]
	delete(p.inherited, name)
	return f
}

// closeUnclaimed closes inherited sockets this process did not take (a
// listener its new config no longer has).
func (p *Process) closeUnclaimed() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for name, f := range p.inherited {
		p.log.Info("closing an inherited listener the new configuration does not use", "listener", name)
		f.Close()
	}
	clear(p.inherited)
}

// Close releases the kept listener copies (the servers hold their own).
func (p *Process) Close() {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, f := range p.files {
		f.Close()
	}
	clear(p.files)
	p.order = nil
}

// dupFile returns a duplicate of the socket's descriptor as a file.
func dupFile(s syscall.Conn, name string) (*os.File, error) {
	raw, err := s.SyscallConn()
	if err != nil {
		return nil, err
	}
	var dup int
	var derr error
	if err := raw.Control(func(fd uintptr) { dup, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, fmt.Errorf("dup %s: %w", name, derr)
	}
	return os.NewFile(uintptr(dup), name), nil
}

// sameAddress checks that an inherited listener is where the configuration
// wants it: a changed listen address needs a restart, not an upgrade.
func sameAddress(want string, got net.Addr) error {
	host, port, err := net.SplitHostPort(want)
	if err != nil {
		return err
	}
	gotHost, gotPort, err := net.SplitHostPort(got.String())
	if err != nil {
		return err
	}
	if port != "0" && port != gotPort {
		return fmt.Errorf("configured at %s but the inherited socket is at %s: a changed address needs a restart", want, got)
	}
	if ip := net.ParseIP(host); ip != nil && !ip.IsUnspecified() && !ip.Equal(net.ParseIP(gotHost)) {
		return fmt.Errorf("configured at %s but the inherited socket is at %s: a changed address needs a restart", want, got)
	}
	return nil
}

// SetStartState names what a child started by a later upgrade reads before
// it serves (StartState), taken as the upgrade starts: the role's state then.
// A child serves at once — the gslb answers on the same DNS sockets as this
// process — while the frames of the socket reach it only once it serves,
// and the hand-off's end, with the state as this process stopped, later
// still.
func (p *Process) SetStartState(f func() []byte) { p.setStartPart("", f) }

// StartState is what the parent's SetStartState gave as it started this
// process; nil when it gave none (or is of an earlier release, or this
// process was not started by an upgrade).
func (p *Process) StartState() []byte { return p.startPart("") }

// SetStartPart is SetStartState for a part of the state every role has
// (the admin plane's), apart from the role's own, in a file of its own
// beside it (startPartPath): a child of an earlier release reads the role's
// state as before and ignores the part. name is a listener's kind of name
// (namePattern).
func (p *Process) SetStartPart(name string, f func() []byte) {
	if namePattern.MatchString(name) {
		p.setStartPart(name, f)
	}
}

// setStartPart is SetStartPart of any name, "" the role's own state.
func (p *Process) setStartPart(name string, f func() []byte) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.startParts == nil {
		p.startParts = map[string]func() []byte{}
	}
	p.startParts[name] = f
}

// StartPart is the part name that the parent's SetStartPart gave as it
// started this process; nil when it gave none (or is of an earlier
// release, or this process was not started by an upgrade). Read before
// this process is ready: the parent removes the file as the upgrade ends.
func (p *Process) StartPart(name string) []byte {
	if !namePattern.MatchString(name) {
		return nil
	}
	return p.startPart(name)
}

// startPart is StartPart of any name, "" the role's own state.
func (p *Process) startPart(name string) []byte {
	if p == nil || p.partsFrom == "" {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if data, ok := p.startedParts[name]; ok {
		return data
	}
	data, err := readStartState(startPartPath(p.partsFrom, name))
	if err != nil {
		p.log.Warn("the old process's start state not read; what it carries comes with the hand-off's end, if at all", "part", name, "err", err)
	}
	if p.startedParts == nil {
		p.startedParts = map[string][]byte{}
	}
	p.startedParts[name] = data
	return data
}

// startPartPath is the file of the start state's part name, beside the
// role's (state; name "" is the role's).
func startPartPath(state, name string) string {
	if name == "" {
		return state
	}
	return state + "." + name
}

// startStatePath is the file of the start state of an upgrade whose
// hand-off socket is socket: beside it, in the private directory. A file,
// not a frame: a child of an earlier release ignores it, where it would
// have read a frame it did not expect for the hand-off's end.
func startStatePath(socket string) string { return socket + ".state" }

// writeStartState writes the start state (if any) to path, and each of
// its parts beside it, new files.
func (p *Process) writeStartState(path string) error {
	p.mu.Lock()
	parts := maps.Clone(p.startParts)
	p.mu.Unlock()
	for name, part := range parts {
		if err := writeStartFile(startPartPath(path, name), part); err != nil {
			return err
		}
	}
	return nil
}

// removeStartState removes the start state at path and its parts.
func (p *Process) removeStartState(path string) {
	p.mu.Lock()
	names := slices.Collect(maps.Keys(p.startParts))
	p.mu.Unlock()
	_ = os.Remove(path) // the role's, set or not: a previous attempt's is no child's to read
	for _, name := range names {
		_ = os.Remove(startPartPath(path, name))
	}
}

// writeStartFile writes what f gives (if anything) to path, a new file.
func writeStartFile(path string, f func() []byte) error {
	if f == nil {
		return nil
	}
	data := f()
	if data == nil {
		return nil
	}
	if len(data) > MaxFrame {
		return fmt.Errorf("%w: a start state of %d bytes", errFrameTooLarge, len(data))
	}
	out, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	_, err = out.Write(data)
	return errors.Join(err, out.Close())
}

// readStartState reads the start state at path: none when there is no
// file; refused unless it is a regular file of this user within MaxFrame
// (the private directory keeps others out; the bounds hold all the same).
func readStartState(path string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if owner, _, ok := configs.FileOwner(fi); !fi.Mode().IsRegular() || (ok && int(owner) != os.Geteuid()) || fi.Size() > MaxFrame {
		return nil, fmt.Errorf("%s: not a regular file of this user within %d bytes", path, MaxFrame)
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxFrame+1))
	if err == nil && len(data) > MaxFrame {
		err = fmt.Errorf("%s: more than %d bytes", path, MaxFrame)
	}
	if err != nil {
		return nil, err
	}
	return data, nil
}

// ErrUpgraded: this process has handed over already.
var ErrUpgraded = errors.New("hand-off: this process has already been replaced")

// Executable is the binary an upgrade starts: the path this process was
// started from.
func (p *Process) Executable() string { return p.exe }
