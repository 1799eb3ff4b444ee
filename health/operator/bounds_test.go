package operator

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
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
	return serveCounted(t, mux, admin, ln, read)
}

// serveCounted serves h with NewServer on Listener(ln), counting what the
// server reads in read.
func serveCounted(t *testing.T, h http.Handler, admin configs.Admin, ln net.Listener, read *atomic.Int64) string {
	t.Helper()
	srv := NewServer(h, admin, nil)
	go srv.Serve(Listener(countingListener{ln, read}, admin, nil, nil))
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// A handler that forgets to bound its body (r.FormValue on a multipart
// body) still reads at most MaxRequestBody of it: the server bounds every
// admin request's body. And a head of a megabyte is refused (431).
func TestAdminServerBoundsEveryRequest(t *testing.T) {
	const size = 16 << 20
	var read atomic.Int64
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	forgetful := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.FormValue("state"))
	})
	addr := serveCounted(t, forgetful, configs.Admin{}, ln, &read)
	multipart := "--xx\r\nContent-Disposition: form-data; name=\"state\"; filename=\"f\"\r\n\r\n"
	head := "POST /api/maintenance HTTP/1.1\r\nHost: " + addr + "\r\nContent-Type: multipart/form-data; boundary=xx" +
		fmt.Sprintf("\r\nContent-Length: %d\r\n\r\n", len(multipart)+size) + multipart
	status := sendBig(t, addr, head, size)
	t.Logf("a forgetful handler answered %q after the server read %d bytes of a %d-byte body", status, read.Load(), size)
	if got := read.Load(); got > MaxRequestBody+(512<<10) {
		t.Errorf("the server read %d bytes of a body, want about MaxRequestBody (%d) at most", got, MaxRequestBody)
	}

	big := "GET /healthz HTTP/1.1\r\nHost: " + addr + "\r\nX-Big: " + strings.Repeat("a", 1<<20) + "\r\n\r\n"
	if status := sendBig(t, addr, big, 0); !strings.Contains(status, " 431 ") {
		t.Errorf("a 1 MiB head: %q, want 431", status)
	}
}

// After a login the browser goes to "next", which must stay on this port.
// Browsers drop tabs and newlines anywhere in a URL (WHATWG URL parsing), so
// "/<TAB>/evil.example" is "//evil.example": another site, reached from the
// admin port's own login (a phishing page "your session expired").
func TestLoginNextStaysOnThisPort(t *testing.T) {
	n := newTestNode(t, configs.Admin{UsersFile: usersFile(t)})
	base := loginServer(t, n, "")
	for _, next := range []string{"//evil.example/x", "/\t/evil.example/x", "/\\evil.example/x", "\t//evil.example/x", "/\t\\evil.example"} {
		loc := rawLoginLocation(t, base, url.Values{"user": {"alice"}, "password": {testPassword}, "next": {next}})
		// As a browser reads it: tabs and newlines removed, backslashes
		// are slashes in http(s) URLs.
		browser := strings.NewReplacer("\t", "", "\n", "", "\r", "", "\\", "/").Replace(loc)
		u, err := url.Parse(base)
		if err != nil {
			t.Fatal(err)
		}
		target, err := u.Parse(browser)
		if err != nil || target.Host != u.Host {
			t.Errorf("next %q: Location %q takes a browser to %v (%v), want this port", next, loc, target, err)
		}
	}
}

// rawLoginLocation posts a login form and returns the answer's Location as
// sent (Go's client refuses to parse one with a control character; a
// browser does not).
func rawLoginLocation(t *testing.T, base string, form url.Values) string {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, base+PathLogin, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	c, err := net.DialTimeout("tcp", req.URL.Host, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if err := req.Write(c); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("login: %s, want 303", resp.Status)
	}
	return resp.Header.Get("Location")
}
