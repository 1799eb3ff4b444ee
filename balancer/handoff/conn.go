package handoff

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// The hand-off protocol, between the old process (the parent) and the new one
// (the child) over one Unix stream socket:
//
//	child  → parent  hello    "ringlb-handoff" version pid
//	parent → child   peers    gossip addresses of live members, to join through
//	parent → child   state    the role's state to start with (the balancer's ring)
//	child  → parent  ready    serving on the inherited listeners   | failed  reason
//	parent → child   table×N  the balancer's live-session table, in parts (an
//	                          empty part every KeepAliveEvery before, while the
//	                          parent waits for its requests in flight)
//	parent → child   tunnel×N one established tunnel each, its two sockets attached (SCM_RIGHTS)
//	parent → child   counters the counters' values, to carry on from
//	parent → child   end      the parent stopped serving and left gossip; the
//	                          role's state as it stopped (the gslb's operator
//	                          state), which an earlier release ignores
//	child  → parent  done     how many tunnels it took over
//
// Every frame is a type byte, a big-endian uint32 length and that many bytes
// of payload. Only the same user can reach the socket (a 0600 socket in a
// private directory, the peer's credentials checked), but the parser still
// refuses a length beyond MaxFrame before reading it, and descriptors on a
// frame that should carry none.

// Version is the hand-off protocol's version; a child speaking another one
// is refused (the upgrade fails and the old process keeps serving).
const Version = 1

// helloMagic starts the hello frame.
const helloMagic = "ringlb-handoff"

// MaxFrame bounds one frame's payload. The largest is a tunnel: two ends'
// pending bytes (each at most the relay's 64 KiB buffer), the key (at most
// 4 KiB) and the edge name.
const MaxFrame = 1 << 20

// MaxFDs is the most descriptors one frame carries: a tunnel's two sockets.
const MaxFDs = 2

// Frame types. Those below 16 are the protocol's own; the roles' payloads
// (state, table, tunnel, counters) are encoded by the roles.
const (
	TypeHello    byte = 1
	TypeReady    byte = 2
	TypeFailed   byte = 3
	TypeEnd      byte = 4
	TypeDone     byte = 5
	TypeState    byte = 16
	TypeTunnel   byte = 17
	TypeCounters byte = 18
	TypePeers    byte = 19
	TypeTable    byte = 20
)

// frameTimeout bounds each frame's read or write once the hand-off runs:
// the peer is a process on the same host, so a stall means it hung.
const frameTimeout = 30 * time.Second

// KeepAliveEvery is how often a sender that is busy for longer than a
// frame's bound before its next frame (a parent waiting for its requests
// in flight, for as long as its stop bound lets them run) sends one its
// peer reads as nothing, so the peer's wait for each frame holds as a
// bound on a hung sender without cutting a busy one short: a third of the
// frame's bound.
func (c *Conn) KeepAliveEvery() time.Duration { return c.frameBound() / 3 }

// SetFrameBound bounds each frame's read or write on c to d instead of
// frameTimeout (30 s): a test of a wait longer than a frame's bound need
// not last half a minute. Both ends of a hand-off are set alike.
func (c *Conn) SetFrameBound(d time.Duration) { c.frame = d }

func (c *Conn) frameBound() time.Duration {
	if c.frame > 0 {
		return c.frame
	}
	return frameTimeout
}

var (
	errFrameTooLarge = errors.New("hand-off frame larger than allowed")
	errUnexpectedFDs = errors.New("hand-off frame carries descriptors it should not")
)

// Conn is one end of the hand-off socket.
type Conn struct {
	c *net.UnixConn
	// Child side only: the original stderr descriptor to restore at Ready
	// (-1: none), and the inherited files to close then if unused.
	stderrFD int
	onReady  func()
	// frame bounds each frame's read or write (0: frameTimeout).
	frame time.Duration
}

// Send writes one frame; fds (at most MaxFDs) travel with its first byte.
func (c *Conn) Send(typ byte, payload []byte, fds ...int) error {
	if len(payload) > MaxFrame {
		return fmt.Errorf("%w: %d bytes", errFrameTooLarge, len(payload))
	}
	if len(fds) > MaxFDs {
		return fmt.Errorf("hand-off frame with %d descriptors, at most %d", len(fds), MaxFDs)
	}
	buf := make([]byte, 5+len(payload))
	buf[0] = typ
	binary.BigEndian.PutUint32(buf[1:5], uint32(len(payload)))
	copy(buf[5:], payload)
	_ = c.c.SetWriteDeadline(time.Now().Add(c.frameBound()))
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	n, _, err := c.c.WriteMsgUnix(buf, oob, nil)
	if err != nil {
		return fmt.Errorf("hand-off send: %w", err)
	}
	// A stream socket may take part of a large frame; the descriptors went
	// with the first part.
	if n < len(buf) {
		if _, err := c.c.Write(buf[n:]); err != nil {
			return fmt.Errorf("hand-off send: %w", err)
		}
	}
	return nil
}

// Recv reads one frame. Descriptors come back only for frame types in
// withFDs; any others received are closed and the frame refused. The
// caller owns the returned descriptors.
func (c *Conn) Recv(withFDs ...byte) (typ byte, payload []byte, fds []int, err error) {
	_ = c.c.SetReadDeadline(time.Now().Add(c.frameBound()))
	return c.recv(withFDs)
}

// RecvWait is Recv with no deadline until the first byte (the peer may be
// busy for long, e.g. waiting for in-flight requests to end), bounded by d.
func (c *Conn) RecvWait(d time.Duration, withFDs ...byte) (byte, []byte, []int, error) {
	_ = c.c.SetReadDeadline(time.Now().Add(d))
	return c.recv(withFDs)
}

func (c *Conn) recv(withFDs []byte) (typ byte, payload []byte, fds []int, err error) {
	var head [5]byte
	oob := make([]byte, unix.CmsgSpace(MaxFDs*4))
	n, oobn, flags, _, err := c.c.ReadMsgUnix(head[:], oob)
	var got []int // closed here unless returned
	if oobn > 0 {
		got, err = parseRights(oob[:oobn], err)
	}
	defer func() {
		if err != nil {
			closeFDs(got)
		}
	}()
	if err != nil {
		return 0, nil, nil, fmt.Errorf("hand-off receive: %w", err)
	}
	if n == 0 {
		return 0, nil, nil, io.EOF
	}
	if flags&unix.MSG_CTRUNC != 0 {
		return 0, nil, nil, fmt.Errorf("hand-off receive: more than %d descriptors on a frame", MaxFDs)
	}
	if n < len(head) {
		if _, err := io.ReadFull(c.c, head[n:]); err != nil {
			return 0, nil, nil, fmt.Errorf("hand-off receive: %w", err)
		}
	}
	typ = head[0]
	size := binary.BigEndian.Uint32(head[1:5])
	if size > MaxFrame {
		return 0, nil, nil, fmt.Errorf("%w: type %d, %d bytes", errFrameTooLarge, typ, size)
	}
	if len(got) > 0 && !contains(withFDs, typ) {
		return 0, nil, nil, fmt.Errorf("%w (type %d)", errUnexpectedFDs, typ)
	}
	payload = make([]byte, size)
	if _, err := io.ReadFull(c.c, payload); err != nil {
		return 0, nil, nil, fmt.Errorf("hand-off receive: %w", err)
	}
	return typ, payload, got, nil
}

func parseRights(oob []byte, err error) ([]int, error) {
	msgs, perr := unix.ParseSocketControlMessage(oob)
	if perr != nil {
		return nil, errors.Join(err, perr)
	}
	var fds []int
	for _, m := range msgs {
		got, perr := unix.ParseUnixRights(&m)
		if perr != nil {
			continue
		}
		for _, fd := range got {
			unix.CloseOnExec(fd)
		}
		fds = append(fds, got...)
	}
	if len(fds) > MaxFDs && err == nil {
		err = fmt.Errorf("hand-off receive: %d descriptors on a frame, at most %d", len(fds), MaxFDs)
	}
	return fds, err
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

func contains(types []byte, t byte) bool {
	for _, x := range types {
		if x == t {
			return true
		}
	}
	return false
}

// Close closes the socket.
func (c *Conn) Close() error { return c.c.Close() }

// CloseRead stops this end reading: what the peer sends from then on fails
// there (a broken pipe), rather than wait in a socket nobody reads while
// the peer counts it delivered. Writing goes on.
func (c *Conn) CloseRead() error { return c.c.CloseRead() }

// hello is the child's first frame.
func helloPayload(pid int) []byte {
	b := make([]byte, 0, len(helloMagic)+6)
	b = append(b, helloMagic...)
	b = binary.BigEndian.AppendUint16(b, Version)
	return binary.BigEndian.AppendUint32(b, uint32(pid))
}

func parseHello(p []byte) (pid int, err error) {
	if len(p) != len(helloMagic)+6 || string(p[:len(helloMagic)]) != helloMagic {
		return 0, errors.New("not a ringlb hand-off hello")
	}
	v := binary.BigEndian.Uint16(p[len(helloMagic):])
	if v != Version {
		return 0, fmt.Errorf("the new process speaks hand-off version %d, this one %d", v, Version)
	}
	return int(binary.BigEndian.Uint32(p[len(helloMagic)+2:])), nil
}

// Ready tells the parent that this process serves on the inherited
// listeners. From here on the parent is committed: it hands everything over
// and exits. Before the frame goes, stderr is pointed back at the original
// one (it was a pipe the parent read, for a failure's report) so it outlives
// the parent, and inherited files nobody used are closed.
func (c *Conn) Ready() error {
	if c.stderrFD >= 0 {
		if err := dupOnto(c.stderrFD, 2); err != nil {
			return fmt.Errorf("restore stderr: %w", err)
		}
		unix.Close(c.stderrFD)
		c.stderrFD = -1
	}
	if c.onReady != nil {
		c.onReady()
	}
	return c.Send(TypeReady, nil)
}

// Fail tells the parent why this process cannot take over (a config that
// does not check, a listener that changed); the parent keeps serving.
func (c *Conn) Fail(reason error) error {
	msg := reason.Error()
	if len(msg) > 4096 {
		msg = msg[:4096]
	}
	return c.Send(TypeFailed, []byte(msg))
}

// End tells the child that the parent has handed over everything and no
// longer holds anything the child needs (gossip port included), with the
// role's state as it stopped (nil: none). A child of an earlier release
// reads the frame's type alone.
func (c *Conn) End(state []byte) error { return c.Send(TypeEnd, state) }

// WaitEnd waits (bounded by d) for the parent's end frame and returns the
// state it carries (none from a parent of an earlier release).
func (c *Conn) WaitEnd(d time.Duration) ([]byte, error) {
	typ, p, _, err := c.RecvWait(d)
	if err != nil {
		return nil, err
	}
	if typ != TypeEnd {
		return nil, fmt.Errorf("hand-off: frame type %d where the end was expected", typ)
	}
	return p, nil
}

// Done tells the parent the child has taken over n tunnels.
func (c *Conn) Done(n int) error {
	return c.Send(TypeDone, binary.BigEndian.AppendUint32(nil, uint32(n)))
}

// ErrTakeOverFailed: the new process said it could not take over after the
// hand-off (Fail), or died then (Child.Exited): it exits, and nothing
// serves what it took.
var ErrTakeOverFailed = errors.New("the new process could not take over")

// WaitDone waits (bounded by d) for the child's done frame and returns its
// count of tunnels taken over.
func (c *Conn) WaitDone(d time.Duration) (int, error) {
	typ, p, _, err := c.RecvWait(d)
	if err != nil {
		return 0, err
	}
	if typ == TypeFailed {
		return 0, fmt.Errorf("%w: %s", ErrTakeOverFailed, p)
	}
	if typ != TypeDone || len(p) != 4 {
		return 0, fmt.Errorf("hand-off: frame type %d where done was expected", typ)
	}
	return int(binary.BigEndian.Uint32(p)), nil
}

// Pair returns the two ends of a connected socket pair: a hand-off between
// two parts of one process (tests), with no socket file and no peer check.
func Pair() (*Conn, *Conn, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err != nil {
		return nil, nil, err
	}
	unix.CloseOnExec(fds[0])
	unix.CloseOnExec(fds[1])
	var ends [2]*Conn
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "handoff-pair")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			if i == 1 {
				ends[0].Close()
			} else {
				unix.Close(fds[1])
			}
			return nil, nil, err
		}
		ends[i] = &Conn{c: c.(*net.UnixConn), stderrFD: -1}
	}
	return ends[0], ends[1], nil
}

// maxPeers bounds the gossip peers a peers frame may name.
const maxPeers = 64

// SendPeers sends the gossip addresses (host:port) of live members: the new
// process joins gossip through them, so it has the whole membership at
// once even when no configured seed is up (this process may be the seed).
func (c *Conn) SendPeers(addrs []string) error {
	if len(addrs) > maxPeers {
		addrs = addrs[:maxPeers]
	}
	return c.Send(TypePeers, []byte(strings.Join(addrs, "\n")))
}

// RecvPeers reads the peers frame; every entry must be a host:port.
func (c *Conn) RecvPeers() ([]string, error) {
	typ, p, _, err := c.Recv()
	if err != nil {
		return nil, err
	}
	if typ != TypePeers {
		return nil, fmt.Errorf("hand-off: frame type %d where the peers were expected", typ)
	}
	if len(p) == 0 {
		return nil, nil
	}
	addrs := strings.Split(string(p), "\n")
	if len(addrs) > maxPeers {
		return nil, fmt.Errorf("hand-off: %d peers, at most %d", len(addrs), maxPeers)
	}
	for _, a := range addrs {
		if _, _, err := net.SplitHostPort(a); err != nil || len(a) > 255 {
			return nil, fmt.Errorf("hand-off: peer %.64q is not host:port", a)
		}
	}
	return addrs, nil
}
