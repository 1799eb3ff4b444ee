package health

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// pollSlice bounds one wait of a check in poll(2), so that a prober being
// stopped is not held for a whole timeout.
const pollSlice = 100 * time.Millisecond

// kernelDial connects a non-blocking socket to target (host:port), trying
// each of its addresses until deadline, the connect waited for in poll(2)
// on a thread of its own (waitFd), not in Go's network poller: a process
// whose goroutines are all busy (a reconnect storm, a machine out of CPU)
// runs an expired timer before it reads the poller, so a dial through
// net.Dialer timed out against a target whose kernel had answered in
// microseconds — every check of every static edge failed at once and the
// balancer took its live backends for down. A target that does not answer
// (no SYN-ACK) still fails at the deadline. It returns the connected socket
// and the address it reached.
func kernelDial(ctx context.Context, target string, deadline time.Time) (int, netip.AddrPort, error) {
	host, portText, err := net.SplitHostPort(target)
	if err != nil {
		return -1, netip.AddrPort{}, err
	}
	port, err := strconv.ParseUint(portText, 10, 16)
	if err != nil {
		return -1, netip.AddrPort{}, &net.AddrError{Err: "invalid port", Addr: target}
	}
	addrs := []netip.Addr{}
	if a, perr := netip.ParseAddr(host); perr == nil {
		addrs = append(addrs, a)
	} else {
		lctx, cancel := context.WithDeadline(ctx, deadline)
		addrs, err = net.DefaultResolver.LookupNetIP(lctx, "ip", host)
		cancel()
		if err != nil {
			return -1, netip.AddrPort{}, err
		}
	}
	if len(addrs) == 0 {
		// Nothing to connect to is no success.
		return -1, netip.AddrPort{}, &net.DNSError{Err: "no address", Name: host, IsNotFound: true}
	}
	for _, a := range addrs {
		ap := netip.AddrPortFrom(a.Unmap(), uint16(port))
		var fd int
		if fd, err = connectOnce(ctx, ap, deadline); err == nil {
			return fd, ap, nil
		}
		if ctx.Err() != nil || !time.Now().Before(deadline) {
			return -1, netip.AddrPort{}, err
		}
	}
	return -1, netip.AddrPort{}, err
}

// connectOnce connects a non-blocking socket to ap and waits for the
// kernel's verdict until deadline or until ctx is done.
func connectOnce(ctx context.Context, ap netip.AddrPort, deadline time.Time) (int, error) {
	opErr := func(err error) error {
		return &net.OpError{Op: "dial", Net: "tcp", Addr: net.TCPAddrFromAddrPort(ap), Err: err}
	}
	family, sa, err := kernelAddr(ap)
	if err != nil {
		return -1, opErr(err)
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, opErr(os.NewSyscallError("socket", err))
	}
	fail := func(err error) (int, error) {
		unix.Close(fd)
		return -1, opErr(err)
	}
	switch err := unix.Connect(fd, sa); {
	case err == nil:
		return fd, nil
	case !errors.Is(err, unix.EINPROGRESS) && !errors.Is(err, unix.EINTR):
		return fail(os.NewSyscallError("connect", err))
	}
	if err := waitFd(fd, unix.POLLOUT, func() time.Time { return deadline }, ctx.Err); err != nil {
		return fail(err)
	}
	soErr, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
	if err != nil {
		return fail(os.NewSyscallError("getsockopt", err))
	}
	if soErr != 0 {
		return fail(os.NewSyscallError("connect", unix.Errno(soErr)))
	}
	return fd, nil
}

// waitFd waits in poll(2) for events on fd until deadline (read again at
// each slice), in pollSlice slices, asking stopped between them. It looks
// at least once, even past the deadline: what the kernel holds by the time
// a busy process looks counts, so a failure says the kernel held nothing
// at the deadline or after.
func waitFd(fd int, events int16, deadline func() time.Time, stopped func() error) error {
	pfd := []unix.PollFd{{Fd: int32(fd), Events: events}}
	for {
		left := time.Until(deadline())
		wait := min(max(left, 0), pollSlice)
		n, err := unix.Poll(pfd, int((wait+time.Millisecond-1)/time.Millisecond))
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return os.NewSyscallError("poll", err)
		case n > 0:
			return nil
		case left <= 0:
			// Nothing at the deadline: no answer in time.
			return os.ErrDeadlineExceeded
		}
		if err := stopped(); err != nil {
			return err
		}
	}
}

// checkDial connects to target for a check (kernelDial) and returns the
// connection, a kernelConn: its waits are
// poll(2)'s, each ending timeout after the check last gave the target
// something to answer (the connect, then each write, timed before its
// system call), so no Go timer runs first and fails an exchange the target
// had answered, and a busy checking process's lateness is not the
// target's.
func checkDial(ctx context.Context, target string, timeout time.Duration) (net.Conn, error) {
	deadline := time.Now().Add(timeout)
	fd, ap, err := kernelDial(ctx, target, deadline)
	if err != nil {
		return nil, err
	}
	c := &kernelConn{fd: fd, timeout: timeout, deadline: deadline, remote: net.TCPAddrFromAddrPort(ap), local: &net.TCPAddr{}}
	if sa, err := unix.Getsockname(fd); err == nil {
		switch sa := sa.(type) {
		case *unix.SockaddrInet4:
			c.local = &net.TCPAddr{IP: sa.Addr[:], Port: sa.Port}
		case *unix.SockaddrInet6:
			c.local = &net.TCPAddr{IP: sa.Addr[:], Port: sa.Port}
		}
	}
	return c, nil
}

// kernelConn is a connected non-blocking socket read and written in system
// calls on the caller's thread, waited for in poll(2) (waitFd), never in
// Go's network poller: an HTTP check's connection. Its waits end timeout
// after its last write began (the connect's deadline until the first); a
// deadline set on it (crypto/tls sets one closing) ends them too. A target
// answering each of the check's messages a moment short of timeout holds a
// check for as many timeouts as it has messages: two or three (a TLS
// handshake's flights and the request), as HAProxy's check timeout applies
// to each read.
type kernelConn struct {
	local, remote net.Addr
	timeout       time.Duration

	mu       sync.Mutex
	fd       int
	deadline time.Time // timeout after the last write began
	until    time.Time // a deadline set: zero, none
	users    int       // reads and writes under way: the last one closes fd after Close
	closed   bool
}

// waitUntil is when a wait on the target ends.
func (c *kernelConn) waitUntil() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.deadline
}

// use takes fd for a read or a write: done gives it back.
func (c *kernelConn) use() (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return -1, net.ErrClosed
	}
	c.users++
	return c.fd, nil
}

func (c *kernelConn) done() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.users--; c.users == 0 && c.closed {
		unix.Close(c.fd)
	}
}

// stopped ends a wait under way: the connection closed, or a deadline set
// on it passed.
func (c *kernelConn) stopped() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.closed:
		return net.ErrClosed
	case !c.until.IsZero() && !time.Now().Before(c.until):
		return os.ErrDeadlineExceeded
	}
	return nil
}

func (c *kernelConn) opErr(op string, err error) error {
	return &net.OpError{Op: op, Net: "tcp", Source: c.local, Addr: c.remote, Err: err}
}

func (c *kernelConn) Read(b []byte) (int, error) {
	fd, err := c.use()
	if err != nil {
		return 0, c.opErr("read", err)
	}
	defer c.done()
	for {
		n, err := unix.Read(fd, b)
		switch {
		case err == nil && n == 0 && len(b) > 0:
			if c.stopped() != nil {
				return 0, c.opErr("read", net.ErrClosed)
			}
			return 0, io.EOF
		case err == nil:
			return n, nil
		case errors.Is(err, unix.EINTR):
			continue
		case !errors.Is(err, unix.EAGAIN):
			return 0, c.opErr("read", os.NewSyscallError("read", err))
		}
		if err := waitFd(fd, unix.POLLIN, c.waitUntil, c.stopped); err != nil {
			return 0, c.opErr("read", err)
		}
	}
}

func (c *kernelConn) Write(b []byte) (int, error) {
	fd, err := c.use()
	if err != nil {
		return 0, c.opErr("write", err)
	}
	defer c.done()
	// The target's time to answer begins with the message: a target
	// reading it a byte at a time does not move the deadline on.
	began, written := time.Now(), 0
	for written < len(b) {
		n, err := unix.Write(fd, b[written:])
		switch {
		case err == nil:
			if written == 0 {
				c.mu.Lock()
				c.deadline = began.Add(c.timeout)
				c.mu.Unlock()
			}
			written += n
			continue
		case errors.Is(err, unix.EINTR):
			continue
		case !errors.Is(err, unix.EAGAIN):
			return written, c.opErr("write", os.NewSyscallError("write", err))
		}
		if err := waitFd(fd, unix.POLLOUT, c.waitUntil, c.stopped); err != nil {
			return written, c.opErr("write", err)
		}
	}
	return written, nil
}

// Close closes the socket once no read or write is under way; one under
// way is woken (shutdown) and ends with net.ErrClosed.
func (c *kernelConn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return c.opErr("close", net.ErrClosed)
	}
	c.closed = true
	if c.users > 0 {
		unix.Shutdown(c.fd, unix.SHUT_RDWR)
		return nil
	}
	return unix.Close(c.fd)
}

func (c *kernelConn) LocalAddr() net.Addr  { return c.local }
func (c *kernelConn) RemoteAddr() net.Addr { return c.remote }

// SetDeadline, SetReadDeadline and SetWriteDeadline set one deadline for
// both directions (zero: none); the check's own hold whatever is set.
func (c *kernelConn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.until = t
	return nil
}

func (c *kernelConn) SetReadDeadline(t time.Time) error  { return c.SetDeadline(t) }
func (c *kernelConn) SetWriteDeadline(t time.Time) error { return c.SetDeadline(t) }

// kernelAddr is ap as the kernel's address of its family.
func kernelAddr(ap netip.AddrPort) (int, unix.Sockaddr, error) {
	a := ap.Addr()
	if a.Is4() {
		return unix.AF_INET, &unix.SockaddrInet4{Port: int(ap.Port()), Addr: a.As4()}, nil
	}
	sa := &unix.SockaddrInet6{Port: int(ap.Port()), Addr: a.As16()}
	if z := a.Zone(); z != "" {
		if n, err := strconv.ParseUint(z, 10, 32); err == nil {
			sa.ZoneId = uint32(n)
		} else {
			ifi, err := net.InterfaceByName(z)
			if err != nil {
				return 0, nil, err
			}
			sa.ZoneId = uint32(ifi.Index)
		}
	}
	return unix.AF_INET6, sa, nil
}
