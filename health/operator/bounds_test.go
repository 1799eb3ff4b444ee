package operator

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ringlb/ringlb/configs"
)

// countingListener counts the bytes the server reads from its connections.
type countingListener struct {
	net.Listener
	read *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return countingConn{c, l.read}, nil
}

type countingConn struct {
	net.Conn
	read *atomic.Int64
}

func (c countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.read.Add(int64(n))
	return n, err
}

// sendBig writes a request head and then up to size bytes of body on a raw
// connection, stopping when the server closes or answers; it returns the
// status line the server answered with ("" if none).
func sendBig(t *testing.T, addr, head string, size int) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(60 * time.Second))
	status := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(c).ReadString('\n')
		status <- strings.TrimSpace(line)
	}()
	if _, err := io.WriteString(c, head); err != nil {
		t.Fatal(err)
	}
	chunk := []byte(strings.Repeat("A", 64<<10))
	for sent := 0; sent < size; sent += len(chunk) {
		if _, err := c.Write(chunk); err != nil {
			break // the server closed: what it read is counted
		}
	}
	_ = c.(*net.TCPConn).CloseWrite()
	select {
	case s := <-status:
		return s
	case <-time.After(30 * time.Second):
		return ""
	}
}

// The login page is open to anyone, and it reads its form to find "next".
// A multipart body sent with GET /login, or with a POST /login refused before
// the form is parsed (another site's, or on a port without users), must not
// be read: Go's FormValue parses a multipart body of any size, the first
// 32 MiB in memory and the rest to temporary files.
func TestLoginPageReadsNoLargeBody(t *testing.T) {
	const size = 16 << 20
	const boundary = "xx"
	for _, tc := range []struct {
		name  string
		users bool
		head  string
	}{
		{"GET /login", true, "GET /login HTTP/1.1\r\n"},
		{"cross-site POST /login", true, "POST /login HTTP/1.1\r\nSec-Fetch-Site: cross-site\r\n"},
		{"POST /login without users", false, "POST /login HTTP/1.1\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			admin := configs.Admin{}
			if tc.users {
				admin.UsersFile = usersFile(t)
			}
			n := newTestNode(t, admin)
			var read atomic.Int64
			addr := serveBounded(t, n, admin, &read)
			multipart := fmt.Sprintf("--%s\r\nContent-Disposition: form-data; name=\"next\"; filename=\"f\"\r\n\r\n", boundary)
			head := tc.head + "Host: " + addr + "\r\nContent-Type: multipart/form-data; boundary=" + boundary +
				fmt.Sprintf("\r\nContent-Length: %d\r\n\r\n", len(multipart)+size) + multipart
			status := sendBig(t, addr, head, size)
			t.Logf("%s: answered %q after the server read %d bytes of a %d-byte body", tc.name, status, read.Load(), size)
			if got := read.Load(); got > 2<<20 {
				t.Errorf("%s: the server read %d bytes of an unauthenticated request's body, want at most 2 MiB", tc.name, got)
			}
		})
	}
}

// serveBounded serves n's admin plane as a role's admin port does, on a
// loopback listener whose reads are counted in read.
func serveBounded(t *testing.T, n *Node, admin configs.Admin, read *atomic.Int64) string {
	t.Helper()
	mux := http.NewServeMux()
	n.Mount(mux, Access{Node: n}, true)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 30 * time.Second}
	go srv.Serve(countingListener{ln, read})
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}
