package health

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// pollSlice bounds one wait of a TCP check in poll(2), so that a prober
// being stopped is not held for a whole timeout.
const pollSlice = 100 * time.Millisecond

// tcpConnect opens a TCP connection to target (host:port) and closes it,
// by ctx's deadline, as the kernel sees it: the socket's connect is waited
// for in poll(2), on a thread of its own, not in Go's network poller. A
// process whose goroutines are all busy (a reconnect storm, a machine out
// of CPU) runs an expired timer before it reads the poller, so a dial
// through net.Dialer timed out against a target whose kernel had answered
// in microseconds: every check of every static edge failed at once and the
// balancer took its live backends for down. A target that does not answer
// (no SYN-ACK) still fails at the deadline.
func tcpConnect(ctx context.Context, target string) error {
	host, portText, err := net.SplitHostPort(target)
	if err != nil {
		return err
	}
	port, err := strconv.ParseUint(portText, 10, 16)
	if err != nil {
		return &net.AddrError{Err: "invalid port", Addr: target}
	}
	addrs := []netip.Addr{}
	if a, perr := netip.ParseAddr(host); perr == nil {
		addrs = append(addrs, a)
	} else if addrs, err = net.DefaultResolver.LookupNetIP(ctx, "ip", host); err != nil {
		return err
	}
	if len(addrs) == 0 {
		// Nothing to connect to is no success.
		return &net.DNSError{Err: "no address", Name: host, IsNotFound: true}
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		return errors.New("tcp check without a deadline")
	}
	for _, a := range addrs {
		if err = connectOnce(ctx, netip.AddrPortFrom(a.Unmap(), uint16(port)), deadline); err == nil {
			return nil
		}
		if ctx.Err() != nil || !time.Now().Before(deadline) {
			break
		}
	}
	return err
}

// connectOnce connects a non-blocking socket to ap and waits for the
// kernel's verdict until deadline or until ctx is done.
func connectOnce(ctx context.Context, ap netip.AddrPort, deadline time.Time) error {
	opErr := func(err error) error {
		return &net.OpError{Op: "dial", Net: "tcp", Addr: net.TCPAddrFromAddrPort(ap), Err: err}
	}
	family, sa, err := kernelAddr(ap)
	if err != nil {
		return opErr(err)
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return opErr(os.NewSyscallError("socket", err))
	}
	defer unix.Close(fd)
	switch err := unix.Connect(fd, sa); {
	case err == nil:
		return nil
	case !errors.Is(err, unix.EINPROGRESS) && !errors.Is(err, unix.EINTR):
		return opErr(os.NewSyscallError("connect", err))
	}
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
	for {
		left := time.Until(deadline)
		if left <= 0 {
			// The last poll returned at the deadline with nothing:
			// no answer in time.
			return opErr(os.ErrDeadlineExceeded)
		}
		if err := ctx.Err(); err != nil {
			return opErr(err)
		}
		wait := min(left, pollSlice)
		n, err := unix.Poll(pfd, int((wait+time.Millisecond-1)/time.Millisecond))
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return opErr(os.NewSyscallError("poll", err))
		}
		if n > 0 {
			break
		}
	}
	soErr, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
	if err != nil {
		return opErr(os.NewSyscallError("getsockopt", err))
	}
	if soErr != 0 {
		return opErr(os.NewSyscallError("connect", unix.Errno(soErr)))
	}
	return nil
}

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
