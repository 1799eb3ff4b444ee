package balancer

import (
	"bufio"
	"bytes"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
)

// Which Set-Cookie values set the admin ports' login cookie, as a browser
// reads them.
func TestSetsAdminCookie(t *testing.T) {
	for _, tt := range []struct {
		value string
		want  bool
	}{
		{"ringlb_admin=x", true},
		{"ringlb_admin=x; Path=/api; HttpOnly", true},
		{"  ringlb_admin\t=x", true},
		{"ringlb_admin", true},            // nameless: sent as "ringlb_admin"
		{"ringlb_admin; Path=/api", true}, // nameless, another path
		{"=ringlb_admin=x", true},         // nameless: sent as "ringlb_admin=x"
		{" = ringlb_admin ", true},
		{"ringlb_admin=", true},
		{"RINGLB_ADMIN=x", false}, // names are case-sensitive
		{"ringlb_admin2=x", false},
		{"__Host-ringlb_admin=x; Secure; Path=/", true}, // the name of a login over TLS
		{"=__Host-ringlb_admin=x", true},
		{"__host-ringlb_admin=x", false},
		{"__Secure-ringlb_admin=x", false},
		{"theme=ringlb_admin", false},
		{"theme=x; ringlb_admin=y", false}, // an attribute the browser ignores
		{"", false},
		{"=", false},
	} {
		if got := setsAdminCookie([]byte(tt.value)); got != tt.want {
			t.Errorf("setsAdminCookie(%q) = %v, want %v", tt.value, got, tt.want)
		}
	}
}

// A relayed answer loses its Set-Cookie lines for the admin cookie and
// keeps the others in their order (two lines for one cookie: the last
// wins), with no allocation when there is none to drop.
func TestDropAdminCookie(t *testing.T) {
	read := func(head string) *fasthttp.Response {
		var r fasthttp.Response
		if err := r.Header.Read(bufio.NewReader(strings.NewReader(head))); err != nil {
			t.Fatal(err)
		}
		return &r
	}
	cookies := func(h *fasthttp.ResponseHeader) (out []string) {
		for _, v := range h.Cookies() {
			out = append(out, string(v))
		}
		return out
	}
	r := read("HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nSet-Cookie: ringlb_admin=x\r\nset-cookie: a=2\r\nSet-Cookie: ringlb_admin\r\nSet-Cookie: b=3\r\nX: y\r\n\r\n")
	dropAdminCookie(&r.Header)
	if got := strings.Join(cookies(&r.Header), " | "); got != "a=1 | a=2 | b=3" || string(r.Header.Peek("X")) != "y" {
		t.Errorf("after the drop: Set-Cookie %q, X %q", got, r.Header.Peek("X"))
	}
	r = read("HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nSet-Cookie: theme=dark; Path=/\r\n\r\n")
	if allocs := testing.AllocsPerRun(100, func() { dropAdminCookie(&r.Header) }); allocs != 0 {
		t.Errorf("nothing to drop: %v allocs, want 0", allocs)
	}
	if got := strings.Join(cookies(&r.Header), " | "); got != "a=1 | theme=dark; Path=/" {
		t.Errorf("nothing to drop: Set-Cookie %q", got)
	}
}

// The 101 head the client gets: the admin cookie's lines dropped in every
// form, bare CRs and obs-folds turned into spaces, other lines byte for
// byte, an assigned key's line added, the edge's bytes after the head kept.
func TestSwitchedHead(t *testing.T) {
	const status = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
	const frames = "\x81\x02hi"
	for _, tt := range []struct {
		name, in, cookie, want string
	}{
		{"nothing to do", status + "X: 1\r\n", "", status + "X: 1\r\n"},
		{"assigned key", status, "ctstickiness=k; Path=/", status + "Set-Cookie: ctstickiness=k; Path=/\r\n"},
		{"admin cookie", status + "Set-Cookie: a=1\r\nSet-Cookie: ringlb_admin=x\r\nSet-Cookie: b=2\r\n", "", status + "Set-Cookie: a=1\r\nSet-Cookie: b=2\r\n"},
		{"admin cookie and assigned key", status + "set-cookie : ringlb_admin=x\r\nX: 1\r\n", "k=v", status + "X: 1\r\nSet-Cookie: k=v\r\n"},
		{"every line of it", status + "Set-Cookie: ringlb_admin=1\r\nSET-COOKIE:ringlb_admin=2\r\nSet-Cookie\t: ringlb_admin\r\n", "", status},
		{"folded name", status + "Set-Cookie:\r\n ringlb_admin=x\r\nX: 1\r\n", "", status + "X: 1\r\n"},
		{"folded other cookie", status + "Set-Cookie: a=1\r\n\tringlb_admin=x\r\n", "", status + "Set-Cookie: a=1  \tringlb_admin=x\r\n"},
		{"bare LF", status + "X: 1\nSet-Cookie: ringlb_admin=x\r\nY: 2\n", "", status + "X: 1\nY: 2\n"},
		{"bare CR", status + "X: 1\rSet-Cookie: ringlb_admin=x\r\n", "", status + "X: 1 Set-Cookie: ringlb_admin=x\r\n"},
		{"a line starting with a bare CR", status + "\r\r\n", "", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket   \r\n"}, // the fuzzer's
		{"a header naming it", status + "X-Set-Cookie: ringlb_admin=x\r\nRINGLB_ADMIN: x\r\n", "", status + "X-Set-Cookie: ringlb_admin=x\r\nRINGLB_ADMIN: x\r\n"},
		{"no colon", status + "Set-Cookie ringlb_admin=x\r\n", "", status + "Set-Cookie ringlb_admin=x\r\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			buf := []byte(tt.in + "\r\n" + frames)
			var cookie []byte
			if tt.cookie != "" {
				cookie = []byte(tt.cookie)
			}
			got := switchedHead(buf, len(tt.in)+2, cookie)
			if string(got) != tt.want+"\r\n"+frames {
				t.Errorf("\n got %q\nwant %q", got, tt.want+"\r\n"+frames)
			}
		})
	}
}

// A 101 with nothing to drop and no key to add is passed as it is, with no
// allocation; with a key to add, one (as before the admin cookie was
// dropped); dropping the admin cookie's lines costs one too.
func TestSwitchedHeadAllocations(t *testing.T) {
	head := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSet-Cookie: theme=dark\r\nX-Ringlb-Edge: raw\r\n\r\n"
	planted := strings.Replace(head, "theme=dark", "ringlb_admin=x", 1)
	cookie := []byte("ctstickiness=k; Path=/; SameSite=Lax")
	buf := make([]byte, len(planted))
	for _, tt := range []struct {
		name   string
		head   string
		cookie []byte
		want   float64
	}{
		{"passed as it is", head, nil, 0},
		{"a key added", head, cookie, 1},
		{"admin cookie dropped", planted, nil, 1},
		{"dropped and added", planted, cookie, 1},
	} {
		allocs := testing.AllocsPerRun(100, func() {
			copy(buf, tt.head)
			switchedHead(buf[:len(tt.head)], len(tt.head), tt.cookie)
		})
		if allocs != tt.want {
			t.Errorf("%s: %v allocs, want %v", tt.name, allocs, tt.want)
		}
	}
}

// BenchmarkSwitchedHead: the pass every 101 goes through (a typical head,
// nothing to drop).
func BenchmarkSwitchedHead(b *testing.B) {
	head := []byte("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSet-Cookie: theme=dark\r\nX-Ringlb-Edge: edge-1\r\n\r\n")
	b.ReportAllocs()
	for range b.N {
		switchedHead(head, len(head), nil)
	}
}

// FuzzSwitchedHead: whatever an edge's 101 head holds, the head the client
// gets ends where it did, keeps the bytes after it, has no bare CR, no
// obs-fold and no line setting the admin cookie, and is never longer than
// the edge's plus the added line.
func FuzzSwitchedHead(f *testing.F) {
	for _, s := range []string{
		"X: 1\r\n",
		"Set-Cookie: ringlb_admin=x\r\nSet-Cookie: a=1\r\n",
		"Set-Cookie:\r\n ringlb_admin=x\r\n",
		"X: 1\rSet-Cookie: ringlb_admin=x\r\n",
		"X: 1\nSet-Cookie: =ringlb_admin=x\n",
	} {
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, headers string, assign bool) {
		in := "HTTP/1.1 101 Switching Protocols\r\n" + headers + "\r\n"
		if strings.Index(in, "\r\n\r\n") != len(in)-4 {
			return // handshake ends a head at its first CRLFCRLF
		}
		var cookie []byte
		if assign {
			cookie = []byte("ctstickiness=k")
		}
		got := switchedHead([]byte(in+"frames"), len(in), cookie)
		head, rest, ok := bytes.Cut(got, []byte("\r\n\r\n"))
		if !ok || string(rest) != "frames" || len(got) > len(in)+len("frames")+len("Set-Cookie: \r\n")+len(cookie) {
			t.Fatalf("%q → %q", in, got)
		}
		for line := range bytes.Lines(append(head, '\r', '\n')) {
			if i := bytes.IndexByte(line, '\r'); i >= 0 && i != len(line)-2 {
				t.Fatalf("a bare CR: %q → %q", in, got)
			}
			if line[0] == ' ' || line[0] == '\t' {
				t.Fatalf("an obs-fold: %q → %q", in, got)
			}
			if setsAdminCookieLine(line) {
				t.Fatalf("the admin cookie: %q → %q", in, got)
			}
		}
	})
}
