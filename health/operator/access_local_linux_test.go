package operator

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ringlb/ringlb/configs"
)

// A token-less, user-less admin port on loopback takes a request addressed
// to a loopback IP for the operator's. Every local user can send one: a
// process of another user drained the node. Now the loopback rule holds
// only for the node's own user and root, as the kernel's socket table says
// of the connecting socket (NETLINK_SOCK_DIAG); another user needs the
// token. As root only (a test makes a socket of another user by switching
// one thread's effective uid).
func TestLoopbackRuleIsTheNodesUserOnly(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to connect as another user")
	}
	n := newTestNode(t, configs.Admin{})
	base := loginServer(t, n, "")
	addr := strings.TrimPrefix(base, "http://")

	ask := func(uid int, method, path string) string {
		t.Helper()
		c, err := dialAs(addr, uid)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "%s %s HTTP/1.1\r\nHost: %s\r\nX-Ringlb-Admin: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", method, path, addr)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.Status
	}
	other := ask(65534, http.MethodPost, "/api/drain")
	t.Logf("a drain from uid 65534 over loopback: %s", other)
	if strings.HasPrefix(other, "202") {
		t.Error("another local user drained the node through the loopback rule")
	}
	if read := ask(65534, http.MethodGet, "/api/sessions"); strings.HasPrefix(read, "200") {
		t.Errorf("another local user read the admin API through the loopback rule: %s", read)
	}
	own := ask(os.Geteuid(), http.MethodPost, "/api/drain")
	t.Logf("a drain from the node's own user: %s", own)
	if !strings.HasPrefix(own, "202") {
		t.Errorf("the node's own user was refused: %s", own)
	}
}

// dialAs connects to addr from a socket created while this thread's
// effective uid is uid (the socket keeps it), then switches back.
func dialAs(addr string, uid int) (net.Conn, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	// The raw syscall changes this thread only (Go's Setresuid changes all).
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, ^uintptr(0), uintptr(uid), ^uintptr(0)); e != 0 {
		return nil, e
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, ^uintptr(0), 0, ^uintptr(0)); e != 0 {
		panic(e) // a thread left as another user must not run on
	}
	if err != nil {
		return nil, err
	}
	ap, err := net.ResolveTCPAddr("tcp4", addr)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	sa := &unix.SockaddrInet4{Port: ap.Port}
	copy(sa.Addr[:], ap.IP.To4())
	if err := unix.Connect(fd, sa); err != nil {
		unix.Close(fd)
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "admin-client")
	defer f.Close()
	return net.FileConn(f)
}

// A client that closes its socket the moment its request is sent leaves
// no socket of its own: the kernel keeps its end as a time-wait entry,
// which the socket table reports with uid 0 and no inode. Read as root's,
// it let any local user through the loopback rule: with the admin port's
// connection slots filled, a request waits in the accept queue until its
// sender has closed, then runs as the operator's (maintenance on, a
// drain, a serve mode). Now a socket no process holds belongs to no one.
// As root only, as the test above.
func TestClosedClientSocketIsNobodys(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to connect as another user")
	}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	// askedBy is whether ownUser takes a request over the server's end of
	// a connection from uid for the node's user; closed: the client closed
	// its end first, and the server has read its FIN.
	askedBy := func(uid int, closed bool) bool {
		t.Helper()
		c, err := dialAs(ln.Addr().String(), uid)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		sc, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer sc.Close()
		local, remote := netip.MustParseAddrPort(sc.LocalAddr().String()), netip.MustParseAddrPort(sc.RemoteAddr().String())
		if closed {
			c.Close()
			if _, err := sc.Read(make([]byte, 1)); err == nil {
				t.Fatal("read a byte from a client that sent none")
			}
			// Until our end acknowledges the FIN (delayed: it waits to
			// send one of its own), the client's end is an orphan socket
			// of its user; then a time-wait entry.
			for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
				ps, err := peerSocket(local, remote)
				if err != nil {
					t.Fatal(err)
				}
				if ps.state != tcpEstablished && ps.state != tcpFinWait1 {
					t.Logf("the closed client's socket: %+v", ps)
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the closed client's socket still %+v", ps)
				}
			}
		}
		r, err := http.NewRequestWithContext(context.WithValue(context.Background(), http.LocalAddrContextKey, sc.LocalAddr()), http.MethodPost, "/api/drain", nil)
		if err != nil {
			t.Fatal(err)
		}
		r.RemoteAddr = sc.RemoteAddr().String()
		return ownUser(r)
	}
	if askedBy(65534, false) {
		t.Error("uid 65534's open socket taken for the node's user")
	}
	if askedBy(65534, true) {
		t.Error("uid 65534's closed socket taken for the node's user (or root's)")
	}
	if !askedBy(os.Geteuid(), false) {
		t.Error("the node's own user's open socket refused")
	}
}

// TCP states (the kernel's tcp_states.h).
const (
	tcpEstablished = 1
	tcpFinWait1    = 4
)
