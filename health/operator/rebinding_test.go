package operator

import (
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"testing"

	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health/operator/operatortest"
)

// serveAdmin serves n's admin plane as a role does (NewServer on Listener),
// the operator's token token, on a real loopback listener, and returns the
// port's address.
func serveAdmin(t *testing.T, n *Node, admin configs.Admin, token string) string {
	t.Helper()
	access := Access{Token: func() []byte { return []byte(token) }, Node: n}
	mux := http.NewServeMux()
	n.Mount(mux, access, true)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(mux, admin, slog.New(slog.DiscardHandler))
	go srv.Serve(Listener(ln, admin, nil, nil))
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// A page the operator has open rebinds its own name to the admin port's
// address: it is then same-origin to that name, so the login form's CSRF
// rule (Origin must be the Host) lets it post, from the operator's own
// address. Five wrong passwords locked the operator's address and user
// out of the login for 5 minutes, as often as the page liked, and each
// guess was checked — a password oracle inside the network. A login must
// name the port as its operators do (an IP address, localhost,
// admin.hosts). The rest of the port needs credentials the page never
// holds, and a script or scraper with the token may name the port as it
// likes.
func TestRebindingPageCannotUseTheLogin(t *testing.T) {
	const token = "operator-token-0123456789"
	admin := configs.Admin{UsersFile: usersFile(t), Hosts: []string{"admin.example.com"}}
	n := newTestNode(t, admin)
	addr := serveAdmin(t, n, admin, token)
	_, port, _ := net.SplitHostPort(addr)
	rebound := operatortest.Attacker + ":" + port
	login := func(host, password string) int {
		r := operatortest.Request{Name: "login", Method: http.MethodPost, Path: PathLogin, Host: host,
			Header: map[string]string{"Content-Type": "application/x-www-form-urlencoded", "Origin": "http://" + host, "Sec-Fetch-Site": "same-origin", "Accept": "application/json"},
			Body:   url.Values{"user": {"alice"}, "password": {password}}.Encode()}
		resp, _ := operatortest.Send(t, addr, r, nil)
		return resp.StatusCode
	}
	checked := 0
	for range 6 {
		code := login(rebound, "a guess")
		if code == http.StatusUnauthorized {
			checked++
		}
		t.Logf("the rebinding page's login: %d", code)
	}
	if checked > 0 {
		t.Errorf("%d of the rebinding page's guesses were checked", checked)
	}
	for _, host := range []string{addr, "localhost:" + port, "[::1]:" + port, "ADMIN.example.com.:" + port} {
		if code := login(host, testPassword); code != http.StatusOK {
			t.Errorf("the operator's login by %s: %d, want 200", host, code)
		}
	}
	for _, tt := range []struct {
		path  string
		creds map[string]string
		want  int
	}{
		{"/api/whoami", nil, http.StatusUnauthorized},
		{"/api/whoami", map[string]string{"Authorization": "Bearer " + token}, http.StatusOK}, // a scraper by name
	} {
		r := operatortest.Request{Name: "by name", Method: http.MethodGet, Path: tt.path, Host: "bal-1.internal:" + port, Credentialed: true}
		if resp, body := operatortest.Send(t, addr, r, tt.creds); resp.StatusCode != tt.want {
			t.Errorf("GET %s by an unlisted name with %v: %d %s, want %d", tt.path, tt.creds, resp.StatusCode, body, tt.want)
		}
	}
}
