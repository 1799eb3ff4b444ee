package health

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// pollSlice bounds one wait of a check in poll(2), so that a prober being
// stopped is not held for a whole timeout.
const pollSlice = 100 * time.Millisecond

// tcpConnect opens a TCP connection to target (host:port) and closes it,
// waiting on the target for at most timeout, as the kernel sees it
// (kernelDial). A process whose goroutines are all busy (a reconnect
// storm, a machine out of CPU) runs an expired timer before it reads Go's
// network poller, so a dial through net.Dialer timed out against a target
// whose kernel had answered in microseconds: every check of every static
// edge failed at once and the balancer took its live backends for down. A
// target that does not answer (no SYN-ACK) still fails once it has been
// waited on for timeout.
func tcpConnect(ctx context.Context, target string, timeout time.Duration) error {
	fd, _, err := kernelDial(ctx, target, newWaitBudget(timeout))
	if err == nil {
		unix.Close(fd)
	}
	return err
}

// kernelDial connects a non-blocking socket to target (host:port), trying
// each of its addresses while budget lasts, the connect waited for in
// poll(2) on a thread of its own (waitFd), not in Go's network poller. It
// returns the connected socket and the address it reached.
func kernelDial(ctx context.Context, target string, budget *waitBudget) (int, netip.AddrPort, error) {
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
		lctx, cancel := context.WithTimeout(ctx, budget.left())
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
		if fd, err = connectOnce(ctx, ap, budget); err == nil {
			return fd, ap, nil
		}
		if ctx.Err() != nil || budget.left() <= 0 {
			return -1, netip.AddrPort{}, err
		}
	}
	return -1, netip.AddrPort{}, err
}

// connectOnce connects a non-blocking socket to ap and waits for the
// kernel's verdict while budget lasts or until ctx is done.
func connectOnce(ctx context.Context, ap netip.AddrPort, budget *waitBudget) (int, error) {
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
	if err := waitFd(fd, unix.POLLOUT, budget, ctx.Err); err != nil {
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

// waitBudget is how long a check may still wait on its target: the time
// spent in poll(2) for it, the target's time. The checking process's own
// (a busy process runs the check late, between its system calls) is not
// counted against the target: a check is the kernel's verdict on how long
// the target took, as HAProxy's check timeout counts from the connection.
// Its waits together last at most the check's timeout, so a target that
// trickles its answer byte by byte is still failed on time.
type waitBudget struct{ ns atomic.Int64 }

func newWaitBudget(d time.Duration) *waitBudget {
	b := &waitBudget{}
	b.ns.Store(int64(d))
	return b
}

func (b *waitBudget) left() time.Duration { return time.Duration(b.ns.Load()) }

// waitFd waits in poll(2) for events on fd, in pollSlice slices, each
// charged to budget, asking stopped between them. It looks at least once,
// even with nothing left: what the kernel holds by the time a busy process
// looks counts (charging a slice counts the wait for the thread's return
// too: when that spends the budget, the next look finds the answer).
func waitFd(fd int, events int16, budget *waitBudget, stopped func() error) error {
	pfd := []unix.PollFd{{Fd: int32(fd), Events: events}}
	for {
		left := budget.left()
		wait := min(max(left, 0), pollSlice)
		start := time.Now()
		n, err := unix.Poll(pfd, int((wait+time.Millisecond-1)/time.Millisecond))
		if wait > 0 {
			budget.ns.Add(-int64(time.Since(start)))
		}
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return os.NewSyscallError("poll", err)
		case n > 0:
			return nil
		case left <= 0:
			// Nothing after the whole budget: no answer in time.
			return os.ErrDeadlineExceeded
		}
		if err := stopped(); err != nil {
			return err
		}
	}
}

// checkTransport makes tr's connections the kernel's verdict, as a TCP
// check's (kernelDial, kernelConn): each waits on its target, dial to
// close, for at most timeout in poll(2) (waitBudget), so no Go timer runs
// first and fails an exchange the target had answered. It returns the HTTP
// client's own timeout: none, the connection's budget bounding every wait
// of a check (keep-alives are off: a check is one connection).
func checkTransport(tr *http.Transport, timeout time.Duration) time.Duration {
	tr.DialContext = func(ctx context.Context, _, addr string) (net.Conn, error) {
		budget := newWaitBudget(timeout)
		fd, ap, err := kernelDial(ctx, addr, budget)
		if err != nil {
			return nil, err
		}
		c := &kernelConn{fd: fd, budget: budget, remote: net.TCPAddrFromAddrPort(ap)}
		c.spent, _ = ctx.Value(spentKey{}).(*atomic.Bool)
		if sa, err := unix.Getsockname(fd); err == nil {
			switch sa := sa.(type) {
			case *unix.SockaddrInet4:
				c.local = &net.TCPAddr{IP: sa.Addr[:], Port: sa.Port}
			case *unix.SockaddrInet6:
				c.local = &net.TCPAddr{IP: sa.Addr[:], Port: sa.Port}
			}
		}
		if c.local == nil {
			c.local = &net.TCPAddr{}
		}
		return c, nil
	}
	return 0
}

// kernelConn is a connected non-blocking socket read and written in system
// calls on the caller's thread, waited for in poll(2) (waitFd), never in
// Go's network poller: an HTTP check's connection. Its waits are charged
// to the check's budget; a deadline set on it (the client sets none of its
// own) ends them too.
type kernelConn struct {
	local, remote net.Addr
	budget        *waitBudget
	spent         *atomic.Bool // set when the budget ran out (may be nil)

	mu     sync.Mutex
	fd     int
	until  time.Time // a deadline set: zero, none
	users  int       // reads and writes under way: the last one closes fd after Close
	closed bool
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
	if errors.Is(err, os.ErrDeadlineExceeded) && c.spent != nil {
		c.spent.Store(true)
	}
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
		if err := waitFd(fd, unix.POLLIN, c.budget, c.stopped); err != nil {
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
	written := 0
	for written < len(b) {
		n, err := unix.Write(fd, b[written:])
		switch {
		case err == nil:
			written += n
			continue
		case errors.Is(err, unix.EINTR):
			continue
		case !errors.Is(err, unix.EAGAIN):
			return written, c.opErr("write", os.NewSyscallError("write", err))
		}
		if err := waitFd(fd, unix.POLLOUT, c.budget, c.stopped); err != nil {
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
// both directions (zero: none); the check's budget holds whatever is set.
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
