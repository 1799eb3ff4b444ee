package health

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// pollSlice bounds one wait of a check in poll(2), so that a prober being
// stopped is not held for a whole timeout.
const pollSlice = 100 * time.Millisecond

// nextAddrDelay is how long a check's connect to one of its target's
// addresses goes unanswered before the next address is tried beside it:
// net.Dialer's FallbackDelay (RFC 8305's Connection Attempt Delay).
const nextAddrDelay = 300 * time.Millisecond

// kernelDial connects a non-blocking socket to target (host:port), trying
// its addresses until deadline, each connect waited for in poll(2) on a
// thread of its own, not in Go's network poller: a process whose
// goroutines are all busy (a reconnect storm, a machine out of CPU) runs
// an expired timer before it reads the poller, so a dial through
// net.Dialer timed out against a target whose kernel had answered in
// microseconds — every check of every static edge failed at once and the
// balancer took its live backends for down. A target that does not answer
// (no SYN-ACK) still fails at the deadline. It returns the connected socket
// and the address it reached.
//
// A name's addresses are tried as net.Dialer tries them (RFC 8305): the
// next one when the last has failed or gone unanswered nextAddrDelay,
// the earlier ones still waited for, families taken in turn. Tried one at
// a time, a dual-stack target whose IPv6 path drops SYNs failed every
// check at the first address's timeout, though its IPv4 one answered.
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
	return connectFirst(ctx, interleaveFamilies(addrs), uint16(port), deadline)
}

// interleaveFamilies orders addrs (the resolver's order) so that the two
// families alternate, the first address's first (RFC 8305, section 4).
func interleaveFamilies(addrs []netip.Addr) []netip.Addr {
	var first, other []netip.Addr
	for _, a := range addrs {
		if a.Unmap().Is4() == addrs[0].Unmap().Is4() {
			first = append(first, a)
		} else {
			other = append(other, a)
		}
	}
	if len(other) == 0 {
		return addrs
	}
	out := make([]netip.Addr, 0, len(addrs))
	for i := 0; i < len(first) || i < len(other); i++ {
		if i < len(first) {
			out = append(out, first[i])
		}
		if i < len(other) {
			out = append(out, other[i])
		}
	}
	return out
}

// connectFirst connects to addrs (at port) as kernelDial says and returns
// the first socket connected; the others are closed. Its error is the
// first refusal's, as net.Dialer's, or at the deadline that of the first
// address still unanswered; an address this process lacked the means to
// try (LocalFailure) says so only when none answered: a refusal at
// another is a check made, and the target's state follows it.
func connectFirst(ctx context.Context, addrs []netip.Addr, port uint16, deadline time.Time) (int, netip.AddrPort, error) {
	type attempt struct {
		fd int
		ap netip.AddrPort
	}
	var (
		tries    []attempt
		firstErr error
		next     int
		nextAt   time.Time
	)
	defer func() {
		for _, a := range tries {
			unix.Close(a.fd)
		}
	}()
	fail := func(err error) {
		if firstErr == nil || LocalFailure(firstErr) && !LocalFailure(err) {
			firstErr = err
		}
		nextAt = time.Time{} // a failure starts the next address at once
	}
	for {
		// The first address is tried even past the deadline (the lookup
		// may have taken it all in a busy process): as any wait, the
		// kernel's verdict is looked at once.
		now := time.Now()
		inTime := now.Before(deadline)
		if next < len(addrs) && (len(tries) == 0 || !now.Before(nextAt)) && (next == 0 || inTime) {
			ap := netip.AddrPortFrom(addrs[next].Unmap(), port)
			next++
			fd, connected, err := startConnect(ap)
			switch {
			case err != nil:
				fail(err)
			case connected:
				return fd, ap, nil
			default:
				tries = append(tries, attempt{fd, ap})
				nextAt = now.Add(nextAddrDelay)
			}
			continue
		}
		if len(tries) == 0 {
			return -1, netip.AddrPort{}, firstErr // each tried failed
		}
		until := deadline
		if next < len(addrs) && inTime && nextAt.Before(until) {
			until = nextAt
		}
		pfds := make([]unix.PollFd, len(tries))
		for i, a := range tries {
			pfds[i] = unix.PollFd{Fd: int32(a.fd), Events: unix.POLLOUT}
		}
		if err := waitFds(pfds, func() time.Time { return until }, ctx.Err); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) && until.Before(deadline) {
				continue // the next address's turn
			}
			return -1, netip.AddrPort{}, connectErr(tries[0].ap, err)
		}
		for i := len(tries) - 1; i >= 0; i-- {
			if pfds[i].Revents == 0 {
				continue
			}
			a := tries[i]
			tries = slices.Delete(tries, i, i+1)
			if err := connectResult(a.fd); err != nil {
				unix.Close(a.fd)
				fail(connectErr(a.ap, err))
				continue
			}
			return a.fd, a.ap, nil
		}
	}
}

func connectErr(ap netip.AddrPort, err error) error {
	return &net.OpError{Op: "dial", Net: "tcp", Addr: net.TCPAddrFromAddrPort(ap), Err: err}
}

// startConnect opens a non-blocking socket and begins its connect to ap:
// the socket and whether it connected already (a refusal is an error).
func startConnect(ap netip.AddrPort) (int, bool, error) {
	family, sa, err := kernelAddr(ap)
	if err != nil {
		return -1, false, connectErr(ap, err)
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, false, connectErr(ap, os.NewSyscallError("socket", err))
	}
	switch err := unix.Connect(fd, sa); {
	case err == nil:
		return fd, true, nil
	case !errors.Is(err, unix.EINPROGRESS) && !errors.Is(err, unix.EINTR):
		unix.Close(fd)
		return -1, false, connectErr(ap, os.NewSyscallError("connect", err))
	}
	return fd, false, nil
}

// connectResult is the kernel's verdict on a connect poll(2) found done.
func connectResult(fd int) error {
	soErr, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
	if err != nil {
		return os.NewSyscallError("getsockopt", err)
	}
	if soErr != 0 {
		return os.NewSyscallError("connect", unix.Errno(soErr))
	}
	return nil
}

// waitFd waits in poll(2) for events on fd until deadline (read again at
// each slice), in pollSlice slices, asking stopped between them. It looks
// at least once, even past the deadline: what the kernel holds by the time
// a busy process looks counts, so a failure says the kernel held nothing
// at the deadline or after.
func waitFd(fd int, events int16, deadline func() time.Time, stopped func() error) error {
	return waitFds([]unix.PollFd{{Fd: int32(fd), Events: events}}, deadline, stopped)
}

// waitFds is waitFd for any of pfds, whose Revents say which are ready.
func waitFds(pfds []unix.PollFd, deadline func() time.Time, stopped func() error) error {
	for {
		left := time.Until(deadline())
		wait := min(max(left, 0), pollSlice)
		n, err := unix.Poll(pfds, int((wait+time.Millisecond-1)/time.Millisecond))
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
