// Package operatortest holds the requests a web page can make an operator's
// browser send to an admin port — cross-site "simple" requests (no CORS
// preflight) and a DNS-rebinding page's same-origin ones — for the tests
// of every role's admin port (balancer, sessions, gslb) to send to their
// real endpoints. Each role's test then checks its state did not change.
//
// It is for tests only: nothing in a binary imports it.
package operatortest

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/ringlb/ringlb/configs"
)

// Attacker is the web site of the attacks: its page runs in the operator's
// browser, and for rebinding its name resolves to the admin port's address.
const Attacker = "attacker.example"

// Setup is one way an admin port is configured, and what the operator's
// browser holds for it.
type Setup struct {
	Name string
	// Admin is the role's admin section for a test's temporary files.
	Admin func(t testing.TB) configs.Admin
	// Login: the operator logs in (LoginCookie) and the browser then holds
	// the session cookie.
	Login bool
}

// The operator's credentials in Setups.
const (
	Token    = "operator-token-0123456789"
	User     = "alice"
	Password = "a long enough password"
)

// Setups are the admin ports a browser attack must fail against: loopback
// with neither a token nor a user (the loopback rule), a token, and a user
// logged in.
func Setups() []Setup {
	return []Setup{
		{"loopback, no token", func(testing.TB) configs.Admin { return configs.Admin{} }, false},
		{"token", func(t testing.TB) configs.Admin {
			return configs.Admin{TokenFile: writeFile(t, "token", Token+"\n")}
		}, false},
		{"logged-in user", func(t testing.TB) configs.Admin {
			hash, err := bcrypt.GenerateFromPassword([]byte(Password), bcrypt.MinCost)
			if err != nil {
				t.Fatal(err)
			}
			return configs.Admin{UsersFile: writeFile(t, "users", User+":"+string(hash)+"\n")}
		}, true},
	}
}

func writeFile(t testing.TB, name, content string) string {
	file := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(file, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return file
}

// Browser is what the operator's browser holds for the admin port addr
// under s: the session cookie after logging in, or nothing.
func (s Setup) Browser(t testing.TB, addr string) map[string]string {
	t.Helper()
	if !s.Login {
		return nil
	}
	resp, body := Send(t, addr, Request{Name: "login", Method: http.MethodPost, Path: "/login",
		Header: map[string]string{"Content-Type": "application/x-www-form-urlencoded", "Origin": "http://" + addr, "Sec-Fetch-Site": "same-origin"},
		Body:   url.Values{"user": {User}, "password": {Password}}.Encode()}, nil)
	for _, c := range resp.Cookies() {
		if c.Name == "ringlb_admin" && c.Value != "" {
			return map[string]string{"Cookie": c.Name + "=" + c.Value}
		}
	}
	t.Fatalf("login: %d %s", resp.StatusCode, body)
	return nil
}

// Operator is the operator's own change (method, path) from the port's own
// page under s, with what its browser holds: the control that shows the
// refusals were the rule's, not a broken credential.
func (s Setup) Operator(addr, method, path string) Request {
	h := map[string]string{configs.HeaderAdmin: "1", "Origin": "http://" + addr, "Sec-Fetch-Site": "same-origin"}
	if s.Name == "token" {
		h["Authorization"] = "Bearer " + Token
	}
	return Request{Name: "the operator", Method: method, Path: path, Header: h, Credentialed: true}
}

// AttackAll sends Changes for every endpoint of changes (method, path) and
// Reads for every path of reads to the admin port addr, with the browser's
// creds, and returns how many got through and how many were sent.
func AttackAll(t testing.TB, addr string, changes [][2]string, reads []string, creds map[string]string) (through, sent int) {
	t.Helper()
	_, port, _ := net.SplitHostPort(addr)
	for _, ep := range changes {
		reqs := Changes(port, ep[0], ep[1])
		through += Refused(t, addr, reqs, creds)
		sent += len(reqs)
	}
	for _, path := range reads {
		reqs := Reads(port, path)
		through += Refused(t, addr, reqs, creds)
		sent += len(reqs)
	}
	return through, sent
}

// Request is one request as a browser sends it.
type Request struct {
	Name   string
	Method string
	Path   string
	// Host is the Host header; "" is the admin port's own address (the page
	// names it by IP, as http://127.0.0.1:9090).
	Host   string
	Header map[string]string
	Body   string
	// Credentialed: the browser attaches what it holds for the admin
	// port's host (the operator's session cookie: a same-site page's
	// requests carry even a SameSite=Strict one). A rebinding page's are
	// not: its host is the attacker's name, and cookies go by host.
	Credentialed bool
	// MayAnswer: a cross-site GET or HEAD, whose answer the page cannot
	// read (no CORS header allows it); it may be answered, and whether it
	// changed anything is for the caller's checks of its state.
	MayAnswer bool
}

// Changes are the requests a web page can make a browser send to a
// state-changing endpoint (method and path of the admin API). The
// cross-site ones are "simple" requests, which a browser sends without a
// CORS preflight: GET and HEAD (an image, a link), and POST with a form's
// or text/plain body and no header of the page's choosing — with every
// Origin and Sec-Fetch-Site a browser may attach (none from an old browser
// or to a URL that is not potentially trustworthy, "null" from a sandboxed
// frame, another port of the same host as same-site). The rebinding page
// (Attacker's name resolved to the admin port's address) is same-origin to
// its own name: it may send any method, any header (X-Ringlb-Admin: 1) and
// any body, and its Host and Origin both name Attacker.
func Changes(port, method, path string) []Request {
	cross := "http://" + Attacker
	form := "application/x-www-form-urlencoded"
	reqs := []Request{
		{Name: "cross-site GET (an <img>)", Method: http.MethodGet, Path: path, MayAnswer: true,
			Header: map[string]string{"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "image"}},
		{Name: "cross-site HEAD", Method: http.MethodHead, Path: path, MayAnswer: true,
			Header: map[string]string{"Sec-Fetch-Site": "cross-site"}},
		{Name: "cross-site form POST", Method: http.MethodPost, Path: path, Body: "state=on&mode=remove&x=1",
			Header: map[string]string{"Content-Type": form, "Origin": cross, "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"}},
		{Name: "cross-site text/plain fetch (no-cors)", Method: http.MethodPost, Path: path, Body: `{"mode":"remove","state":"on"}`,
			Header: map[string]string{"Content-Type": "text/plain;charset=UTF-8", "Origin": cross, "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"}},
		{Name: "cross-site multipart form POST", Method: http.MethodPost, Path: path,
			Body:   "--b\r\nContent-Disposition: form-data; name=\"state\"\r\n\r\non\r\n--b--\r\n",
			Header: map[string]string{"Content-Type": "multipart/form-data; boundary=b", "Origin": cross, "Sec-Fetch-Site": "cross-site"}},
		{Name: "form POST from an old browser (no Origin, no fetch metadata)", Method: http.MethodPost, Path: path, Body: "state=on",
			Header: map[string]string{"Content-Type": form}},
		{Name: "form POST from a sandboxed frame (Origin: null)", Method: http.MethodPost, Path: path, Body: "state=on",
			Header: map[string]string{"Content-Type": form, "Origin": "null", "Sec-Fetch-Site": "cross-site"}},
		{Name: "form POST from another port of the host (same-site)", Method: http.MethodPost, Path: path, Body: "state=on",
			Header: map[string]string{"Content-Type": form, "Origin": "http://127.0.0.1:8080", "Sec-Fetch-Site": "same-site"}},
	}
	for i := range reqs {
		reqs[i].Credentialed = true
	}
	rebound := Attacker + ":" + port
	for _, m := range []string{method, http.MethodGet} {
		h := map[string]string{configs.HeaderAdmin: "1", "Sec-Fetch-Site": "same-origin", "Content-Type": "application/json"}
		if m != http.MethodGet {
			h["Origin"] = "http://" + rebound
		}
		reqs = append(reqs, Request{Name: "rebinding page, " + m, Method: m, Path: path, Host: rebound, Header: h, Body: `{"mode":"remove"}`})
	}
	return reqs
}

// Reads are a rebinding page's reads of a read endpoint: same-origin to
// its own name, so it would see the answer.
func Reads(port, path string) []Request {
	rebound := Attacker + ":" + port
	return []Request{
		{Name: "rebinding page, GET", Method: http.MethodGet, Path: path, Host: rebound, Header: map[string]string{"Sec-Fetch-Site": "same-origin"}},
		{Name: "rebinding page, HEAD", Method: http.MethodHead, Path: path, Host: rebound},
	}
}

// Send writes r on a new connection to addr, with creds added when r is
// Credentialed (the operator's session cookie; nil: none), and returns the
// answer, its body read (at most 1 MiB).
func Send(t testing.TB, addr string, r Request, creds map[string]string) (*http.Response, []byte) {
	t.Helper()
	host := r.Host
	if host == "" {
		host = addr
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\n", r.Method, r.Path, host)
	header := map[string]string{}
	for k, v := range r.Header {
		header[k] = v
	}
	if r.Credentialed {
		for k, v := range creds {
			header[k] = v
		}
	}
	names := make([]string, 0, len(header))
	for k := range header {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		fmt.Fprintf(&b, "%s: %s\r\n", k, header[k])
	}
	if r.Body != "" || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
		fmt.Fprintf(&b, "Content-Length: %d\r\n", len(r.Body))
	}
	b.WriteString("Connection: close\r\n\r\n")
	b.WriteString(r.Body)
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(c, b.String()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: r.Method})
	if err != nil {
		t.Fatalf("%s %s %s: %v", r.Name, r.Method, r.Path, err)
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	return resp, body
}

// Refused sends every request and fails the test for each one not refused
// with a 4xx (but a MayAnswer request answered 2xx or 3xx). It logs each
// answer, and returns how many got through.
func Refused(t testing.TB, addr string, reqs []Request, creds map[string]string) (through int) {
	t.Helper()
	for _, r := range reqs {
		resp, body := Send(t, addr, r, creds)
		t.Logf("%-60s %s %s → %d", r.Name, r.Method, r.Path, resp.StatusCode)
		if resp.StatusCode > 499 || resp.StatusCode < 400 && !r.MayAnswer {
			through++
			t.Errorf("%s: %s %s answered %d %q, want it refused (4xx)", r.Name, r.Method, r.Path, resp.StatusCode, firstLine(body))
		}
		if CORS(resp.Header) != "" {
			t.Errorf("%s: %s %s answered with %s", r.Name, r.Method, r.Path, CORS(resp.Header))
		}
	}
	return through
}

// CORS returns the CORS headers of an answer ("" when none): with any, a
// page of another origin could read what the admin port answers.
func CORS(h http.Header) string {
	var out []string
	for k, v := range h {
		if strings.HasPrefix(strings.ToLower(k), "access-control-") {
			out = append(out, k+": "+strings.Join(v, ","))
		}
	}
	sort.Strings(out)
	return strings.Join(out, "; ")
}

// Preflight is the CORS preflight a page of Attacker sends before a
// request with a header of its own (the admin header, Authorization) or a
// method beyond GET, HEAD and POST.
func Preflight(path, method string) Request {
	return Request{Name: "CORS preflight", Method: http.MethodOptions, Path: path, Header: map[string]string{
		"Origin":                         "http://" + Attacker,
		"Access-Control-Request-Method":  method,
		"Access-Control-Request-Headers": "authorization,x-ringlb-admin",
		"Sec-Fetch-Mode":                 "cors",
		"Sec-Fetch-Site":                 "cross-site",
	}}
}

func firstLine(b []byte) string {
	s, _, _ := strings.Cut(string(b), "\n")
	return s
}
