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

// serveAdmin serves n's admin plane with a read and a write endpoint as a
// role does: NewServer on Listener, on a real loopback listener. It returns
// the port's address.
func serveAdmin(t *testing.T, n *Node, admin configs.Admin) string {
	t.Helper()
	access := Access{Node: n}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
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
// guess was checked — a password oracle inside the network. A port that
// answers only the names it is addressed by (an IP address, localhost,
// admin.hosts) gives the page nothing.
func TestRebindingPageCannotUseTheLogin(t *testing.T) {
	admin := configs.Admin{UsersFile: usersFile(t), Hosts: []string{"admin.example.com"}}
	n := newTestNode(t, admin)
	addr := serveAdmin(t, n, admin)
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
	for _, path := range []string{"/healthz"} {
		resp, _ := operatortest.Send(t, addr, operatortest.Request{Name: "probe", Method: http.MethodGet, Path: path, Host: rebound}, nil)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s by any name: %d, want 200 (liveness probes)", path, resp.StatusCode)
		}
	}
	for _, path := range []string{PathLogin, "/login.css", "/api/whoami"} {
		resp, body := operatortest.Send(t, addr, operatortest.Request{Name: "rebinding", Method: http.MethodGet, Path: path, Host: rebound}, nil)
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("GET %s by the rebinding page: %d %s, want 403", path, resp.StatusCode, body)
		}
	}
}
