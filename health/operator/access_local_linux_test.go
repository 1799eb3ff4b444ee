package operator

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"testing"

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
