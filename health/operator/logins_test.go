package operator

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/crypto/bcrypt"
	"golang.org/x/time/rate"

	"github.com/ringlb/ringlb/configs"
)

const testPassword = "correct horse battery staple"

// usersFile writes a users file with alice (testPassword) and returns it.
func usersFile(t *testing.T) string {
	t.Helper()
	// The cheapest bcrypt cost: these tests count checks, and the race
	// detector makes each one of the default cost take a second.
	hash, err := bcrypt.GenerateFromPassword([]byte(testPassword), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	line := "alice:" + string(hash)
	path := filepath.Join(t.TempDir(), "users")
	if err := os.WriteFile(path, []byte("# operators\n"+line+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// loginServer serves a node's admin plane (login, logout, audit, history)
// and a read and a write endpoint behind Access, on a real loopback
// listener; it returns the base URL.
func loginServer(t *testing.T, n *Node, token string) string {
	t.Helper()
	ln := serveMux(t, loginMux(n, token))
	return "http://" + ln.Addr().String()
}

// loginMux is loginServer's handler: the node's login, a read and a change.
func loginMux(n *Node, token string) http.Handler {
	access := Access{Token: func() []byte { return []byte(token) }, Node: n}
	mux := http.NewServeMux()
	n.Mount(mux, access, true)
	mux.Handle("GET /api/sessions", access.Read(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, Caller(r.Context()))
	})))
	mux.Handle("POST /api/drain", access.Write(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		Describe(r.Context(), "drain", "edge-1")
		w.WriteHeader(http.StatusAccepted)
		io.WriteString(w, Caller(r.Context()))
	})))
	return mux
}

func newTestNode(t *testing.T, admin configs.Admin) *Node {
	t.Helper()
	if admin.Listen == "" {
		admin.Listen = "127.0.0.1:9101"
	}
	n := New(Config{Node: "edge-1", Role: "edge", Admin: admin, Registry: prometheus.NewRegistry(), Logger: slog.New(slog.DiscardHandler)})
	t.Cleanup(n.Close)
	return n
}

func noRedirects() *http.Client {
	jar, _ := cookiejar.New(nil)
	return &http.Client{Jar: jar, Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// tlsProxyTo puts a TLS reverse proxy (nginx, HAProxy) in front of the
// admin port at base until the test ends.
func tlsProxyTo(t *testing.T, base string) *httptest.Server {
	target, _ := url.Parse(base)
	proxy := httptest.NewTLSServer(httputil.NewSingleHostReverseProxy(target))
	t.Cleanup(proxy.Close)
	return proxy
}

// browserOf is a client of the TLS server s that keeps its cookies and
// follows no redirects, as a browser's fetches from the dashboard.
func browserOf(s *httptest.Server) *http.Client {
	c := s.Client()
	c.Jar, _ = cookiejar.New(nil)
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return c
}

// loginThroughTLSProxy logs alice in through a TLS proxy in front of the
// admin port at base, from a page of the proxy's https origin; it returns
// the proxy, the browser and the login's answer.
func loginThroughTLSProxy(t *testing.T, base string) (*httptest.Server, *http.Client, *http.Response) {
	t.Helper()
	proxy := tlsProxyTo(t, base)
	c := browserOf(proxy)
	resp := postLogin(t, c, proxy.URL, "alice", testPassword, map[string]string{"Origin": proxy.URL, "Sec-Fetch-Site": "same-origin"})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("login through the TLS proxy: %s", resp.Status)
	}
	return proxy, c, resp
}

// logoutThroughTLSProxy logs c out through the TLS proxy at proxyURL, from
// a page of its origin, and returns the answer.
func logoutThroughTLSProxy(t *testing.T, c *http.Client, proxyURL string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, proxyURL+PathLogout, nil)
	req.Header.Set(configs.HeaderAdmin, "1")
	req.Header.Set("Origin", proxyURL)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("logout through the TLS proxy: %s", resp.Status)
	}
	return resp
}

func postLogin(t *testing.T, c *http.Client, base, user, password string, header map[string]string) *http.Response {
	t.Helper()
	form := url.Values{"user": {user}, "password": {password}, "next": {"/"}}
	req, _ := http.NewRequest(http.MethodPost, base+PathLogin, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

// A user logs in with the page's form: a session cookie (HttpOnly,
// SameSite=Strict, an expiry), reads and changes with it (a change still
// needs X-Ringlb-Admin), is recorded in the audit log, logs out.
// Configuring a user ends the loopback rule: a request addressed to
// 127.0.0.1 without a session is refused and pointed at the login page.
func TestLoginSession(t *testing.T) {
	n := newTestNode(t, configs.Admin{UsersFile: usersFile(t)})
	base := loginServer(t, n, "")
	c := noRedirects()

	resp, err := c.Get(base + "/api/sessions")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(string(body), `"login": "/login"`) {
		t.Fatalf("loopback read without a session: %d %s, want 401 naming the login page", resp.StatusCode, body)
	}

	resp = postLogin(t, c, base, "alice", testPassword, map[string]string{"Origin": base, "Sec-Fetch-Site": "same-origin"})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/" {
		t.Fatalf("login: %s Location %q", resp.Status, resp.Header.Get("Location"))
	}
	var cookie *http.Cookie
	for _, ck := range resp.Cookies() {
		if ck.Name == SessionCookie {
			cookie = ck
		}
	}
	if cookie == nil || !cookie.HttpOnly || cookie.SameSite != http.SameSiteStrictMode || cookie.MaxAge != int(SessionTTL.Seconds()) || cookie.Secure {
		t.Fatalf("session cookie %+v: want HttpOnly, SameSite=Strict, Max-Age 12h, not Secure without TLS", cookie)
	}

	get := func(path string) (int, string) {
		resp, err := c.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	post := func(path string, header map[string]string) (int, string) {
		req, _ := http.NewRequest(http.MethodPost, base+path, nil)
		for k, v := range header {
			req.Header.Set(k, v)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, who := get("/api/sessions"); code != 200 || who != "user:alice" {
		t.Fatalf("read with the session: %d %q", code, who)
	}
	if code, _ := post("/api/drain", nil); code != http.StatusForbidden {
		t.Fatalf("a change with the cookie alone (a form from any page could send it): %d, want 403", code)
	}
	if code, who := post("/api/drain", map[string]string{configs.HeaderAdmin: "1", "Origin": base}); code != http.StatusAccepted || who != "user:alice" {
		t.Fatalf("a change with the session and the admin header: %d %q", code, who)
	}
	recs := n.Audit.List(10)
	if len(recs) != 2 || recs[0].Action != "drain" || recs[0].Who != "user:alice" || recs[0].Target != "edge-1" || recs[0].Result != http.StatusAccepted ||
		recs[1].Action != "login" || recs[1].Who != "user:alice" || recs[1].Result != 200 {
		t.Fatalf("audit records: %+v", recs)
	}
	if code, _ := post(PathLogout, map[string]string{configs.HeaderAdmin: "1"}); code != 200 {
		t.Fatalf("logout: %d", code)
	}
	if code, _ := get("/api/sessions"); code != http.StatusUnauthorized {
		t.Fatalf("after logout: %d, want 401", code)
	}
	// The old cookie, replayed by hand, is dead too.
	req, _ := http.NewRequest(http.MethodGet, base+"/api/sessions", nil)
	req.AddCookie(cookie)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("the logged-out cookie replayed: %v %v", resp.Status, err)
	}
	if recs := n.Audit.List(1); recs[0].Action != "logout" || recs[0].Who != "user:alice" {
		t.Fatalf("logout record: %+v", recs[0])
	}
}

// The attacks on the login: another site logging a browser in (login CSRF),
// an open redirect through next, password guessing from one network and
// against one user from many, and flooding the audit log with failures.
func TestLoginAttacks(t *testing.T) {
	n := newTestNode(t, configs.Admin{UsersFile: usersFile(t)})
	// The overall check rate has a test of its own (TestLoginSprayBounded):
	// here the per-network and per-user rules are counted alone.
	n.Logins.rate = rate.NewLimiter(rate.Inf, 0)
	base := loginServer(t, n, "")

	for name, header := range map[string]map[string]string{
		"cross-site fetch metadata": {"Sec-Fetch-Site": "cross-site"},
		"a foreign Origin":          {"Origin": "https://evil.example"},
	} {
		if resp := postLogin(t, noRedirects(), base, "alice", testPassword, header); resp.StatusCode != http.StatusForbidden || len(resp.Cookies()) != 0 {
			t.Errorf("login CSRF (%s): %s with %d cookies, want 403 and none", name, resp.Status, len(resp.Cookies()))
		}
	}

	// next=//evil.example would send the browser off-site after a login.
	form := url.Values{"user": {"alice"}, "password": {testPassword}, "next": {"//evil.example/x"}}
	resp, err := noRedirects().PostForm(base+PathLogin, form)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); loc != "/api/whoami" {
		t.Errorf("open redirect: Location %q after next=//evil.example/x, want this port's home /api/whoami", loc)
	}

	// Guessing from one address: failuresAllowed wrong passwords are
	// checked, then every attempt is refused unchecked, the right password
	// included, until the window ends.
	checked, locked := 0, 0
	for range 20 {
		switch resp := postLogin(t, noRedirects(), base, "alice", "wrong password!", nil); resp.StatusCode {
		case http.StatusUnauthorized:
			checked++
		case http.StatusTooManyRequests:
			locked++
		default:
			t.Fatalf("guess: %s", resp.Status)
		}
	}
	t.Logf("20 guesses from one address: %d checked, %d refused unchecked", checked, locked)
	if checked != failuresAllowed || locked != 20-failuresAllowed {
		t.Errorf("20 guesses from one address: %d checked, %d refused; want %d and %d", checked, locked, failuresAllowed, 20-failuresAllowed)
	}
	if resp := postLogin(t, noRedirects(), base, "alice", testPassword, nil); resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("the right password while locked out: %s, want 429", resp.Status)
	}
	// Later (the clock moves past the window), the operator gets in.
	n.Logins.now = func() time.Time { return time.Now().Add(failureWindow + time.Second) }
	if resp := postLogin(t, noRedirects(), base, "alice", testPassword, nil); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("the right password after the window: %s", resp.Status)
	}

	// Guessing bob's password from many addresses: per user too.
	n.Logins.now = time.Now
	n.Logins.mu.Lock()
	n.Logins.byAddr = map[string]*failures{}
	n.Logins.mu.Unlock()
	tried := 0
	for i := range 10 {
		if n.Logins.attempt(t.Context(), "bob", "guess", "198.51.100."+string(rune('1'+i))+":4000") == loginWrong {
			tried++
		}
	}
	if tried != failuresAllowed {
		t.Errorf("guesses for one user from 10 addresses: %d checked, want %d", tried, failuresAllowed)
	}

	// The audit log keeps the operators' records: refused logins are
	// rate-limited (the burst), the rest only counted.
	refused := 0
	for _, r := range n.Audit.List(auditMemoryRecords) {
		if r.Action == "login" && r.Result != 200 {
			refused++
		}
	}
	if refused > refusedRecordsBurst {
		t.Errorf("%d refused-login records, want at most %d", refused, refusedRecordsBurst)
	}
}

// A restart keeps logins (the state directory holds hashes of the cookies,
// never a cookie); a user removed from the file is logged out.
func TestSessionsSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	users := usersFile(t)
	n := newTestNode(t, configs.Admin{UsersFile: users, StateDir: dir})
	base := loginServer(t, n, "")
	c := noRedirects()
	resp := postLogin(t, c, base, "alice", testPassword, nil)
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("login: %s", resp.Status)
	}
	cookie := resp.Cookies()[0]
	raw, err := os.ReadFile(filepath.Join(dir, sessionsConcern+".json"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(raw), cookie.Value) {
		t.Fatal("the state file holds the cookie itself")
	}
	if st, _ := os.Stat(filepath.Join(dir, sessionsConcern+".json")); st.Mode().Perm() != fileMode {
		t.Errorf("sessions file mode %v, want %v", st.Mode().Perm(), os.FileMode(fileMode))
	}

	n2 := newTestNode(t, configs.Admin{UsersFile: users, StateDir: dir})
	base2 := loginServer(t, n2, "")
	req, _ := http.NewRequest(http.MethodGet, base2+"/api/sessions", nil)
	req.AddCookie(cookie)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("the session after a restart: %s", resp.Status)
	}
	n2.Logins.SetUsers(map[string][]byte{})
	resp, _ = http.DefaultClient.Do(req)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("the session of a removed user: %s", resp.Status)
	}
}

// An admin port beyond loopback with no user generates a password for
// "admin", logs it once, keeps its hash (not the password) in the state
// directory and never logs it again.
func TestGeneratedPasswordLoggedOnce(t *testing.T) {
	dir := t.TempDir()
	var logs strings.Builder
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	admin := configs.Admin{Listen: "0.0.0.0:9101", StateDir: dir}
	n := New(Config{Node: "bal-1", Role: "balancer", Admin: admin, Logger: logger})
	defer n.Close()
	first := logs.String()
	i := strings.Index(first, "password=")
	if i < 0 || !strings.Contains(first, "user=admin") {
		t.Fatalf("no generated password logged: %s", first)
	}
	password := strings.Fields(first[i+len("password="):])[0]
	raw, _ := os.ReadFile(filepath.Join(dir, generatedConcern+".json"))
	if strings.Contains(string(raw), password) {
		t.Fatal("the state file holds the password itself")
	}
	hash := (*n.Logins.users.Load())[GeneratedUser]
	if bcrypt.CompareHashAndPassword(hash, []byte(password)) != nil {
		t.Fatal("the logged password does not match the kept hash")
	}
	logs.Reset()
	n2 := New(Config{Node: "bal-1", Role: "balancer", Admin: admin, Logger: logger})
	defer n2.Close()
	if strings.Contains(logs.String(), password) || strings.Contains(logs.String(), "password=") {
		t.Fatalf("the second start logged a password: %s", logs.String())
	}
	if bcrypt.CompareHashAndPassword((*n2.Logins.users.Load())[GeneratedUser], []byte(password)) != nil {
		t.Fatal("the second start does not accept the first start's password")
	}
	// On loopback nothing is generated: the loopback rule holds.
	for _, listen := range []string{"127.0.0.1:9090", "[::1]:9090", "localhost:9090"} {
		logs.Reset()
		n3 := New(Config{Node: "bal-2", Role: "balancer", Admin: configs.Admin{Listen: listen}, Logger: logger})
		if n3.Logins != nil || strings.Contains(logs.String(), "password") {
			t.Errorf("a loopback admin port (%s) generated a password: %s", listen, logs.String())
		}
		n3.Close()
	}
}

// Spraying logins for random names from many networks escapes both
// failure tables (each name and network is new); each attempt would cost a
// bcrypt check (~50 ms of CPU). The checks are rate-limited overall: the
// rest are answered 503 without one.
func TestLoginSprayBounded(t *testing.T) {
	n := newTestNode(t, configs.Admin{UsersFile: usersFile(t)})
	checked, busy := 0, 0
	start := time.Now()
	for i := range 60 {
		switch n.Logins.attempt(t.Context(), fmt.Sprintf("user%d", i), "guess", fmt.Sprintf("[2001:db8:%x::1]:4000", i)) {
		case loginWrong:
			checked++
		case loginBusy:
			busy++
		}
	}
	elapsed := time.Since(start)
	t.Logf("60 sprayed logins in %s: %d checked, %d refused unchecked", elapsed.Round(time.Millisecond), checked, busy)
	if limit := checkBurst + int(elapsed.Seconds()*checksPerSecond) + 1; checked > limit {
		t.Errorf("%d bcrypt checks for 60 sprayed logins, want at most %d", checked, limit)
	}
}

// fromAddress is a client whose connections leave from source (a loopback
// address such as 127.0.0.2): a client network of its own to the port.
func fromAddress(source string) *http.Client {
	c := noRedirects()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(source)}, Timeout: 10 * time.Second}
	c.Transport = &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}
	return c
}

// Anyone who reaches an admin port can send 5 wrong passwords for the
// operator's user name every 5 minutes, from anywhere: the per-name count
// then refused every login for that name, the operator's own from the
// network they always log in from included — the lockout was itself a
// denial of service. A network that has logged in as a user before is
// not refused by that user's name count (only by its own network's and by
// the overall check rate); an unknown network still is, so guessing one
// name from many networks stays slowed. The known network is kept across a
// restart (state_dir).
func TestLoginLockoutSparesTheOperatorsNetwork(t *testing.T) {
	dir := t.TempDir()
	users := usersFile(t)
	admin := configs.Admin{UsersFile: users, StateDir: dir}
	n := newTestNode(t, admin)
	// The overall check rate has a test of its own (TestLoginSprayBounded).
	n.Logins.rate = rate.NewLimiter(rate.Inf, 0)
	base := loginServer(t, n, "")

	const operator = "127.0.0.1"
	if resp := postLogin(t, fromAddress(operator), base, "alice", testPassword, nil); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("the operator's first login: %s", resp.Status)
	}
	// The attacker: one wrong password from each of 5 other networks.
	attack := func(base string) {
		for i := 2; i <= 1+failuresAllowed; i++ {
			resp := postLogin(t, fromAddress(fmt.Sprintf("127.0.0.%d", i)), base, "alice", "a guess", nil)
			if resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("guess %d: %s, want 401", i, resp.Status)
			}
		}
	}
	attack(base)
	resp := postLogin(t, fromAddress(operator), base, "alice", testPassword, nil)
	t.Logf("after %d guesses from other networks, the operator's login from its usual network: %s", failuresAllowed, resp.Status)
	if resp.StatusCode != http.StatusSeeOther {
		t.Errorf("the operator's login from the network it logged in from before: %s, want 303", resp.Status)
	}
	resp = postLogin(t, fromAddress("127.0.0.20"), base, "alice", testPassword, nil)
	t.Logf("a login for the name from an unknown network: %s", resp.Status)
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("a login for the locked name from an unknown network: %s, want 429", resp.Status)
	}
	// Guesses from the known network are still counted by its own table.
	checked := 0
	for range failuresAllowed + 3 {
		if resp := postLogin(t, fromAddress(operator), base, "alice", "a guess", nil); resp.StatusCode == http.StatusUnauthorized {
			checked++
		}
	}
	if checked != failuresAllowed {
		t.Errorf("guesses from the known network: %d checked, want %d", checked, failuresAllowed)
	}

	// A restart remembers the network.
	n2 := newTestNode(t, admin)
	n2.Logins.rate = rate.NewLimiter(rate.Inf, 0)
	base2 := loginServer(t, n2, "")
	attack(base2)
	if resp := postLogin(t, fromAddress(operator), base2, "alice", testPassword, nil); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("after a restart, the operator's login from its usual network while the name is locked: %s, want 303", resp.Status)
	}
	if resp := postLogin(t, fromAddress("127.0.0.20"), base2, "alice", testPassword, nil); resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("after a restart, a login for the locked name from an unknown network: %s, want 429", resp.Status)
	}
}

// The known-network table is bounded: one user's networks, then the whole
// table, forget the oldest login first; a network unseen for
// knownNetworkTTL is no longer known.
func TestKnownNetworksBounded(t *testing.T) {
	n := newTestNode(t, configs.Admin{UsersFile: usersFile(t)})
	l := n.Logins
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := range maxKnownPerUser + 10 {
		l.remember("alice", fmt.Sprintf("198.51.100.%d", i), now.Add(time.Duration(i)*time.Second))
	}
	if len(l.known) != maxKnownPerUser || l.knownFrom("alice", "198.51.100.0", now) || !l.knownFrom("alice", fmt.Sprintf("198.51.100.%d", maxKnownPerUser+9), now) {
		t.Fatalf("one user's %d networks: %d kept, oldest kept %v", maxKnownPerUser+10, len(l.known), l.knownFrom("alice", "198.51.100.0", now))
	}
	later := now.Add(time.Hour)
	for i := range maxKnownNetworks + 10 {
		l.remember(fmt.Sprintf("user%d", i), "203.0.113.1", later.Add(time.Duration(i)*time.Second))
	}
	if len(l.known) != maxKnownNetworks || l.knownFrom("user0", "203.0.113.1", later) {
		t.Fatalf("%d users' networks: %d kept, want %d, the oldest forgotten", maxKnownNetworks+10, len(l.known), maxKnownNetworks)
	}
	last := fmt.Sprintf("user%d", maxKnownNetworks+9)
	if !l.knownFrom(last, "203.0.113.1", later) || l.knownFrom(last, "203.0.113.1", later.Add(knownNetworkTTL+time.Hour)) {
		t.Fatal("the newest network: want known now and forgotten after knownNetworkTTL")
	}
}

// Sessions restored at start are held to the cap a live node keeps
// (maxSessions), the newest kept: a sessions file of many (a runaway
// writer, an old bug, a planted file of the node's own user) was
// restored whole, and a login beyond the cap then ended only the oldest
// one, so the table never came back under it.
func TestRestoredSessionsCapped(t *testing.T) {
	dir := t.TempDir()
	store, err := OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	users := usersFile(t)
	password := passwordOf(t, users, "alice")
	const planted = 20 * maxSessions
	now := time.Now()
	cookies := make([]string, planted)
	out := make([]savedSession, planted)
	for i := range out {
		var raw [32]byte
		copy(raw[:], fmt.Sprintf("cookie-%d", i))
		cookies[i] = base64.RawURLEncoding.EncodeToString(raw[:])
		id := sha256.Sum256(raw[:])
		created := now.Add(-time.Hour + time.Duration(i)*time.Millisecond) // the last written is the newest
		out[i] = savedSession{ID: hex.EncodeToString(id[:]), session: session{User: "alice", Created: created, Expires: created.Add(SessionTTL), PasswordID: password}}
	}
	// Not in order of age: the newest are kept whatever the file's order.
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	if err := store.Save(sessionsConcern, out); err != nil {
		t.Fatal(err)
	}

	n := newTestNode(t, configs.Admin{UsersFile: users, StateDir: dir})
	n.Logins.mu.Lock()
	restored := len(n.Logins.sessions)
	n.Logins.mu.Unlock()
	t.Logf("%d sessions in the state file, %d restored (cap %d)", planted, restored, maxSessions)
	if restored > maxSessions {
		t.Fatalf("%d sessions restored, more than the %d a node keeps", restored, maxSessions)
	}
	base := loginServer(t, n, "")
	status := func(cookie string) int { t.Helper(); return cookieStatus(t, base, cookie) }
	if got := status(cookies[planted-1]); got != http.StatusOK {
		t.Errorf("the newest session after the restart: %d, want 200", got)
	}
	if got := status(cookies[planted-maxSessions]); got != http.StatusOK {
		t.Errorf("the %dth newest session after the restart: %d, want 200", maxSessions, got)
	}
	if got := status(cookies[planted-maxSessions-1]); got != http.StatusUnauthorized {
		t.Errorf("a session beyond the newest %d after the restart: %d, want 401", maxSessions, got)
	}
	if got := status(cookies[0]); got != http.StatusUnauthorized {
		t.Errorf("the oldest session after the restart: %d, want 401", got)
	}
	// A login now keeps the table at the cap.
	if resp := postLogin(t, noRedirects(), base, "alice", testPassword, nil); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("login: %s", resp.Status)
	}
	n.Logins.mu.Lock()
	after := len(n.Logins.sessions)
	n.Logins.mu.Unlock()
	if after > maxSessions {
		t.Errorf("after a login %d sessions, more than %d", after, maxSessions)
	}
}

// Without a state directory an upgrade's hand-off carries the sessions, held
// to the rules of the state file: at most the newest maxSessions, and only
// sessions a login could have made (a forged part of the private upgrade
// directory is believed no more than a planted state file).
func TestHandOffSessionsHeldToTheStateRules(t *testing.T) {
	users := usersFile(t)
	password := passwordOf(t, users, "alice")
	now := time.Now()
	const carried = 2 * maxSessions
	cookies := make([]string, carried+1)
	out := make([]savedSession, carried+1)
	for i := range out {
		var raw [32]byte
		copy(raw[:], fmt.Sprintf("cookie-%d", i))
		cookies[i] = base64.RawURLEncoding.EncodeToString(raw[:])
		id := sha256.Sum256(raw[:])
		created := now.Add(-time.Hour + time.Duration(i)*time.Millisecond)
		out[i] = savedSession{ID: hex.EncodeToString(id[:]), session: session{User: "alice", Created: created, Expires: created.Add(SessionTTL), PasswordID: password}}
	}
	// The last one claims to be made a day ahead: no login made it.
	out[carried].Created = now.Add(24 * time.Hour)
	out[carried].Expires = out[carried].Created.Add(SessionTTL)
	sessions, _ := json.Marshal(out)
	part, _ := json.Marshal(adminHandOff{Sessions: sessions})

	n := newTestNode(t, configs.Admin{UsersFile: users, Inherited: part})
	n.Logins.mu.Lock()
	restored := len(n.Logins.sessions)
	n.Logins.mu.Unlock()
	t.Logf("%d sessions handed off, %d restored (cap %d)", carried+1, restored, maxSessions)
	if restored > maxSessions {
		t.Fatalf("%d sessions restored, more than the %d a node keeps", restored, maxSessions)
	}
	base := loginServer(t, n, "")
	for i, want := range map[int]int{carried - 1: http.StatusOK, carried - maxSessions: http.StatusOK, carried - maxSessions - 1: http.StatusUnauthorized, carried: http.StatusUnauthorized} {
		if got := cookieStatus(t, base, cookies[i]); got != want {
			t.Errorf("handed-off session %d: %d, want %d", i, got, want)
		}
	}

	// What this node hands on is what it holds, and a node given it keeps
	// them: one upgrade after another.
	part = n.HandOff()
	t.Logf("the admin part handed on: %d bytes for %d sessions", len(part), restored)
	next := newTestNode(t, configs.Admin{UsersFile: users, Inherited: part})
	if got := cookieStatus(t, loginServer(t, next, ""), cookies[carried-1]); got != http.StatusOK {
		t.Errorf("the newest session after a second upgrade: %d, want 200", got)
	}
}

// The networks users logged in from are restored as remember keeps them:
// the newest, at most maxKnownPerUser of one user, maxKnownNetworks in all.
func TestRestoredKnownNetworksCapped(t *testing.T) {
	dir := t.TempDir()
	store, err := OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	var out []savedNetwork
	for i := range 4 * maxKnownNetworks { // oldest first, as a file would be
		user := "alice"
		if i%2 == 1 {
			user = fmt.Sprintf("user%d", i)
		}
		out = append(out, savedNetwork{knownNetwork{user, fmt.Sprintf("10.%d.%d.0/24", i/256, i%256)}, now.Add(-time.Hour + time.Duration(i)*time.Second).UTC()})
	}
	if err := store.Save(knownNetworksConcern, out); err != nil {
		t.Fatal(err)
	}
	n := newTestNode(t, configs.Admin{UsersFile: usersFile(t), StateDir: dir})
	l := n.Logins
	l.mu.Lock()
	defer l.mu.Unlock()
	alice := 0
	for k := range l.known {
		if k.User == "alice" {
			alice++
		}
	}
	t.Logf("%d networks in the state file, %d restored, %d of them alice's", len(out), len(l.known), alice)
	newest := out[len(out)-1]
	if len(l.known) > maxKnownNetworks || alice > maxKnownPerUser || !l.knownFrom(newest.User, newest.Network, now) {
		t.Fatalf("restored %d networks (cap %d), %d of one user (cap %d), the newest kept: %v",
			len(l.known), maxKnownNetworks, alice, maxKnownPerUser, l.knownFrom(newest.User, newest.Network, now))
	}
}

// A login lasts SessionTTL from its creation: a restored session that
// claims more — created in the future, or expiring further off than a
// login lasts — was not made by a login (the state file is the node's
// user's alone, but a clock set back or a file restored from elsewhere
// must not keep a cookie working for years), and is not restored.
func TestRestoredSessionsHeldToTheirLifetime(t *testing.T) {
	dir := t.TempDir()
	store, err := OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	users := usersFile(t)
	password := passwordOf(t, users, "alice")
	now := time.Now()
	plant := map[string]session{
		"normal":     {User: "alice", Created: now.Add(-time.Hour), Expires: now.Add(-time.Hour + SessionTTL), PasswordID: password},
		"for years":  {User: "alice", Created: now.Add(-time.Hour), Expires: now.Add(10 * 365 * 24 * time.Hour), PasswordID: password},
		"future one": {User: "alice", Created: now.Add(24 * time.Hour), Expires: now.Add(24*time.Hour + SessionTTL), PasswordID: password},
	}
	cookies := map[string]string{}
	var out []savedSession
	for name, s := range plant {
		var raw [32]byte
		copy(raw[:], name)
		cookies[name] = base64.RawURLEncoding.EncodeToString(raw[:])
		id := sha256.Sum256(raw[:])
		out = append(out, savedSession{ID: hex.EncodeToString(id[:]), session: s})
	}
	if err := store.Save(sessionsConcern, out); err != nil {
		t.Fatal(err)
	}
	n := newTestNode(t, configs.Admin{UsersFile: users, StateDir: dir})
	base := loginServer(t, n, "")
	for name, want := range map[string]int{"normal": http.StatusOK, "for years": http.StatusUnauthorized, "future one": http.StatusUnauthorized} {
		if got := cookieStatus(t, base, cookies[name]); got != want {
			t.Errorf("the %s session after a restart: %d, want %d", name, got, want)
		}
	}
}

// cookieStatus is the status of GET /api/sessions at base with cookie as
// the login session's.
func cookieStatus(t *testing.T, base, cookie string) int {
	t.Helper()
	return readSessions(t, base, &http.Cookie{Name: SessionCookie, Value: cookie}).StatusCode
}

// readSessions reads GET /api/sessions at base sending cookies, in that
// order, and nothing else; the answer's body is read and closed.
func readSessions(t *testing.T, base string, cookies ...*http.Cookie) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+"/api/sessions", nil)
	for _, c := range cookies {
		req.AddCookie(c)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

// serveMux serves mux on a free loopback port until the test ends; its
// listener says where.
func serveMux(t *testing.T, mux http.Handler) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln
}

// passwordOf is a session's name for user's password in the users file
// at path (passwordID).
func passwordOf(t *testing.T, path, user string) string {
	t.Helper()
	users, err := configs.Admin{UsersFile: path}.Users()
	if err != nil {
		t.Fatal(err)
	}
	return passwordID(users[user])
}

// writeUsers writes path as a users file of users (name → password), at
// bcrypt's cheapest cost; a user whose password is the same as in the file
// before keeps its line (its hash).
func writeUsers(t *testing.T, path string, users map[string]string) {
	t.Helper()
	before, _ := configs.Admin{UsersFile: path}.Users()
	var b strings.Builder
	for name, password := range users {
		hash := before[name]
		if bcrypt.CompareHashAndPassword(hash, []byte(password)) != nil {
			var err error
			if hash, err = bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost); err != nil {
				t.Fatal(err)
			}
		}
		fmt.Fprintf(&b, "%s:%s\n", name, hash)
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
}

// A reload reads the users file again: a removed user's session ends and
// it logs in no more, a changed password ends the user's sessions and the
// old one logs in no more, a new user logs in — and a password changed
// while the node was down ends the sessions a restart restores. Before, a
// reload with the same users_file succeeded and changed nothing: the
// removed user and the old password kept logging in until a restart, the
// new user could not, and a restart kept the sessions of a changed
// password.
func TestUsersFileReloaded(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(t.TempDir(), "users")
	writeUsers(t, path, map[string]string{"alice": "alice-password-1", "bob": "bob-password-1"})
	admin := configs.Admin{UsersFile: path, StateDir: dir}
	n := newTestNode(t, admin)
	n.Logins.rate = rate.NewLimiter(rate.Inf, 0) // more logins a second than a port allows
	base := loginServer(t, n, "")
	login := func(base, user, password string) (int, *http.Cookie) {
		t.Helper()
		resp := postLogin(t, noRedirects(), base, user, password, nil)
		for _, c := range resp.Cookies() {
			if c.Name == SessionCookie {
				return resp.StatusCode, c
			}
		}
		return resp.StatusCode, nil
	}
	read := func(base string, c *http.Cookie) int {
		t.Helper()
		if c == nil {
			t.Fatal("no session to read with: its login failed")
		}
		return readSessions(t, base, c).StatusCode
	}
	_, alice := login(base, "alice", "alice-password-1")
	_, bob := login(base, "bob", "bob-password-1")
	if alice == nil || bob == nil || read(base, alice) != 200 || read(base, bob) != 200 {
		t.Fatal("alice and bob did not log in")
	}

	writeUsers(t, path, map[string]string{"alice": "alice-password-2", "carol": "carol-password-1"})
	apply, err := n.ReloadUsers("edge", admin)
	if err != nil {
		t.Fatal(err)
	}
	apply()
	for _, tc := range []struct {
		what string
		got  int
		want int
	}{
		{"alice's session, her password changed", read(base, alice), http.StatusUnauthorized},
		{"bob's session, bob removed", read(base, bob), http.StatusUnauthorized},
		{"alice's old password", first(login(base, "alice", "alice-password-1")), http.StatusUnauthorized},
		{"bob's password", first(login(base, "bob", "bob-password-1")), http.StatusUnauthorized},
		{"alice's new password", first(login(base, "alice", "alice-password-2")), http.StatusSeeOther},
		{"carol, added", first(login(base, "carol", "carol-password-1")), http.StatusSeeOther},
	} {
		if tc.got != tc.want {
			t.Errorf("after the reload, %s: %d, want %d", tc.what, tc.got, tc.want)
		}
	}

	// Changed while the node is down: the restored sessions of the
	// changed password end, the others' go on.
	_, alice = login(base, "alice", "alice-password-2")
	_, carol := login(base, "carol", "carol-password-1")
	writeUsers(t, path, map[string]string{"alice": "alice-password-3", "carol": "carol-password-1"})
	n2 := newTestNode(t, admin)
	base2 := loginServer(t, n2, "")
	if got := read(base2, alice); got != http.StatusUnauthorized {
		t.Errorf("after a restart, alice's session of her previous password: %d, want 401", got)
	}
	if got := read(base2, carol); got != http.StatusOK {
		t.Errorf("after a restart, carol's session: %d, want 200", got)
	}
}

// first is the first of two results.
func first[A, B any](a A, _ B) A { return a }

// Whether a port takes logins is set at its start (with no user, the
// loopback rule, or beyond loopback a generated password): a reload that
// lists the first user, or the last one no more, is refused, naming the
// restart that applies it; a port without users reloads as before.
func TestUsersFileReloadNeedsRestartToStartOrEndLogins(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users")
	writeUsers(t, path, map[string]string{})
	admin := configs.Admin{UsersFile: path}
	n := newTestNode(t, admin)
	if _, err := n.ReloadUsers("edge", admin); err != nil {
		t.Errorf("a reload with no users still: %v", err)
	}
	writeUsers(t, path, map[string]string{"alice": "alice-password-1"})
	if _, err := n.ReloadUsers("edge", admin); err == nil || !strings.Contains(err.Error(), "edge.admin.users_file") || !strings.Contains(err.Error(), "restart") {
		t.Errorf("a reload listing the first user: %v, want a refusal naming the field and the restart", err)
	}
	n2 := newTestNode(t, admin)
	writeUsers(t, path, map[string]string{})
	if _, err := n2.ReloadUsers("edge", admin); err == nil || !strings.Contains(err.Error(), "restart") {
		t.Errorf("a reload listing no user any more: %v, want a refusal naming the restart", err)
	}
}

// A password typed into the name field (the commonest slip at a login
// form) must not reach the audit log, which GET /api/audit serves to the
// operator and to every peer, nor its file or the node's log. The record
// still says what an operator needs: a user of the port by name, any other
// name as a fingerprint that is the same for the same text, so a guess
// repeated is told from a spray.
func TestFailedLoginNameStaysOutOfTheAuditLog(t *testing.T) {
	const typed = "Tr0ub4dor-and-3" // a password, typed where the name goes
	dir := t.TempDir()
	var logged bytes.Buffer
	var logMu sync.Mutex
	n := New(Config{Node: "edge-1", Role: "edge", Admin: configs.Admin{Listen: "127.0.0.1:9101", UsersFile: usersFile(t), StateDir: dir},
		Registry: prometheus.NewRegistry(), Logger: slog.New(slog.NewTextHandler(lockedWriter{&logMu, &logged}, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	t.Cleanup(n.Close)
	n.Logins.rate = rate.NewLimiter(rate.Inf, 0)
	base := loginServer(t, n, "operator-token-0123456789")
	c := noRedirects()
	// The network's five failures, then one refused unchecked (locked).
	for i, user := range []string{"alice", typed, typed, "bob-not-a-user", typed, typed} {
		want := http.StatusUnauthorized
		if i == 5 {
			want = http.StatusTooManyRequests
		}
		if resp := postLogin(t, c, base, user, "wrong password", nil); resp.StatusCode != want {
			t.Fatalf("login %d as %q: %s, want %d", i, user, resp.Status, want)
		}
	}
	req, _ := http.NewRequest(http.MethodGet, base+"/api/audit", nil)
	req.Header.Set("Authorization", "Bearer operator-token-0123456789")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	served, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var file []byte
	for _, name := range []string{auditFile, refusedAuditFile} {
		raw, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		file = append(file, raw...)
	}
	logMu.Lock()
	logText := logged.String()
	logMu.Unlock()
	for where, text := range map[string]string{"GET /api/audit": string(served), "the audit file": string(file), "the node's log": logText} {
		if strings.Contains(strings.ToLower(text), strings.ToLower(typed)) {
			t.Errorf("%s holds the name typed at a failed login (a password):\n%s", where, text)
		}
	}
	recs := n.Audit.List(10)
	if len(recs) != 6 {
		t.Fatalf("%d login records, want 6: %+v", len(recs), recs)
	}
	who := make([]string, 6) // oldest first
	for i, r := range recs {
		who[5-i] = r.Who
	}
	t.Logf("records name the callers %q", who)
	if who[0] != CallerUserPrefix+"alice" {
		t.Errorf("a user's failed login names %q, want %q", who[0], CallerUserPrefix+"alice")
	}
	if who[1] != who[2] || who[1] != who[4] || who[1] != who[5] || who[1] == who[3] || who[1] == "" {
		t.Errorf("the same name typed again must have the same fingerprint, another name another: %q", who)
	}
}

// Refused logins cannot push the operators' records out of the audit log.
// Anyone may post a login with no name — neither checked nor locked out —
// and each is a record at the refused records' rate (1/s): before, they
// took the same memory ring and the same two files as the operators'
// changes, so a day's trickle from one address (here its hours at once,
// the rate lifted) left no record of a drain, in GET /api/audit or on disk.
func TestRefusedLoginsCannotPushOutTheOperatorsRecords(t *testing.T) {
	const token = "operator-token-0123456789"
	dir := t.TempDir()
	n := newTestNode(t, configs.Admin{UsersFile: usersFile(t), StateDir: dir})
	n.Audit.refused = rate.NewLimiter(rate.Inf, 0)
	const rotateAt = 100 // the files' bound, smaller: the same logic, fewer fsyncs
	n.Audit.rotateAt = rotateAt
	base := loginServer(t, n, token)
	c := noRedirects()
	req, _ := http.NewRequest(http.MethodPost, base+"/api/drain", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	refused := auditMemoryRecords + 2*rotateAt
	for range refused {
		if resp := postLogin(t, c, base, "", "x", nil); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("a login with no name: %s", resp.Status)
		}
	}
	drained := func(recs []Record) bool {
		for _, r := range recs {
			if r.Action == "drain" && r.Who == CallerToken {
				return true
			}
		}
		return false
	}
	shown := n.AuditView(httptest.NewRequest(http.MethodGet, fmt.Sprintf("/api/audit?limit=%d", auditMemoryRecords), nil)).Records
	t.Logf("after %d refused logins: GET /api/audit shows %d records", refused, len(shown))
	if !drained(shown) {
		t.Error("GET /api/audit no longer shows the drain")
	}
	n.Close()
	again := newTestNode(t, configs.Admin{UsersFile: usersFile(t), StateDir: dir})
	if !drained(again.Audit.List(auditMemoryRecords)) {
		t.Error("after a restart the audit log no longer holds the drain")
	}
}

// An admin port serves plain HTTP; TLS is a proxy's in front of it (nginx,
// HAProxy), so the node never saw a TLS connection and never set the
// session cookie Secure: a browser then sent it in clear to any http://
// URL of the host — the operator typing the name without https:// is
// enough for whoever is on the path to take the session. A login posted
// from an https page (its Origin says so) gets a Secure cookie, and so
// does the logout's clearing of it.
func TestLoginBehindATLSProxyIsSecure(t *testing.T) {
	n := newTestNode(t, configs.Admin{UsersFile: usersFile(t)})
	base := loginServer(t, n, "")
	proxy, c, resp := loginThroughTLSProxy(t, base)
	secure := func(resp *http.Response) (bool, bool) {
		secure, set := true, false
		for _, ck := range resp.Cookies() {
			if ck.Name == SessionCookie || ck.Name == SessionHostCookie {
				secure, set = secure && ck.Secure, true
			}
		}
		return secure, set
	}
	if s, ok := secure(resp); !ok || !s {
		t.Errorf("the session cookie of a login from an https page: set %v, Secure %v; want Secure", ok, s)
	}
	resp = logoutThroughTLSProxy(t, c, proxy.URL)
	if s, ok := secure(resp); !ok || !s {
		t.Errorf("the logout's cookie from an https page: set %v, Secure %v; want Secure", ok, s)
	}
}

// A login and a logout save the sessions at once: each took its snapshot
// under the lock and wrote it after, so the login's snapshot, older (the
// logged-out session still in it), could be written last — and after a
// restart the logged-out session was valid again, for the rest of its
// 12 h. The test takes the login's snapshot itself before the logout and
// writes it after the logout's, the order the race had.
func TestLogoutStaysAfterAConcurrentLoginsSave(t *testing.T) {
	dir := t.TempDir()
	users := usersFile(t)
	n := newTestNode(t, configs.Admin{UsersFile: users, StateDir: dir})
	base := loginServer(t, n, "")
	c := noRedirects()
	resp := postLogin(t, c, base, "alice", testPassword, nil)
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("login: %s", resp.Status)
	}
	cookie := resp.Cookies()[0]

	seq, older := n.Logins.snapshot() // a concurrent login's snapshot
	req, _ := http.NewRequest(http.MethodPost, base+PathLogout, nil)
	req.Header.Set(configs.HeaderAdmin, "1")
	if resp, err := c.Do(req); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("logout: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	n.Logins.write(seq, older) // its write, last

	n2 := newTestNode(t, configs.Admin{UsersFile: users, StateDir: dir})
	base2 := loginServer(t, n2, "")
	if resp := readSessions(t, base2, cookie); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("the logged-out session after a restart: %s, want 401", resp.Status)
	}
}

// While an upgrade hands the node over (Hold), the old process refuses
// logins and logouts with 503 and Retry-After: the new process started
// from the sessions as they were (the hand-off's, or the state file's),
// and a logout the old one answered came back to life there.
func TestHeldLoginsRefuseLoginAndLogout(t *testing.T) {
	for _, stateDir := range []bool{false, true} {
		t.Run(fmt.Sprintf("state_dir=%v", stateDir), func(t *testing.T) {
			admin := configs.Admin{UsersFile: usersFile(t)}
			if stateDir {
				admin.StateDir = t.TempDir()
			}
			old := newTestNode(t, admin)
			base := loginServer(t, old, "")
			resp := postLogin(t, noRedirects(), base, "alice", testPassword, nil)
			if resp.StatusCode != http.StatusSeeOther {
				t.Fatalf("login: %s", resp.Status)
			}
			cookie := resp.Cookies()[0].Value
			release := old.Logins.Hold("an upgrade is under way")
			next := admin
			next.Inherited = old.HandOff()
			base2 := loginServer(t, newTestNode(t, next), "")

			logout := func(base string) *http.Response {
				t.Helper()
				req, _ := http.NewRequest(http.MethodPost, base+PathLogout, nil)
				req.AddCookie(&http.Cookie{Name: SessionCookie, Value: cookie})
				req.Header.Set(configs.HeaderAdmin, "1")
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				return resp
			}
			if resp := logout(base); resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
				t.Fatalf("a logout on the held process: %s (Retry-After %q), want 503 with Retry-After", resp.Status, resp.Header.Get("Retry-After"))
			}
			if resp := postLogin(t, noRedirects(), base, "alice", testPassword, nil); resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
				t.Fatalf("a login on the held process: %s, want 503 with Retry-After", resp.Status)
			}
			if got := cookieStatus(t, base2, cookie); got != http.StatusOK {
				t.Fatalf("the session on the new process: %d, want 200", got)
			}
			if resp := logout(base2); resp.StatusCode != http.StatusOK {
				t.Fatalf("the logout again, on the new process: %s", resp.Status)
			}
			if got := cookieStatus(t, base2, cookie); got != http.StatusUnauthorized {
				t.Errorf("the ended session on the new process: %d, want 401", got)
			}
			release()
			if resp := logout(base); resp.StatusCode != http.StatusOK {
				t.Errorf("a logout once the hold is released (a failed upgrade): %s, want 200", resp.Status)
			}
		})
	}
}

// A name that is no user's costs the check a user's wrong password costs,
// so the time of a login's answer does not tell which names are users —
// after a reload too. The name was checked against a hash made at the
// start, at the cost of the users then: users given stronger hashes by a
// reload (htpasswd -B makes cost 5; an operator raises it) answered a
// wrong password in the time of their new cost and an unknown name in that
// of the old one, hundreds of times faster.
func TestUnknownUserCostsAsAUserAfterAReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users")
	writeUsers(t, path, map[string]string{"alice": "alice-password-1"}) // bcrypt.MinCost
	admin := configs.Admin{UsersFile: path}
	n := newTestNode(t, admin)
	n.Logins.rate = rate.NewLimiter(rate.Inf, 0)
	base := loginServer(t, n, "")

	const stronger = bcrypt.MinCost + 6
	hash, err := bcrypt.GenerateFromPassword([]byte("alice-password-2"), stronger)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("alice:"+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	apply, err := n.ReloadUsers("edge", admin)
	if err != nil {
		t.Fatal(err)
	}
	apply()

	// What the answers' times show (reported, not held to).
	timed := func(user string) time.Duration {
		start := time.Now()
		// Each from its own address's count: the port's own network
		// is locked after five.
		if code := postLogin(t, noRedirects(), base, user, "wrong", nil).StatusCode; code != http.StatusUnauthorized {
			t.Fatalf("login of %s with a wrong password: %d, want 401", user, code)
		}
		return time.Since(start)
	}
	t.Logf("after the reload to cost %d: alice's wrong password answered in %v, an unknown name in %v", stronger, timed("alice"), timed("mallory"))

	if cost, err := bcrypt.Cost(*n.Logins.unknownHash.Load()); err != nil || cost != stronger {
		t.Errorf("an unknown name is checked at bcrypt cost %d (%v), the users' is %d", cost, err, stronger)
	}
}

// Wrong passwords sent at once are held to the failure count as sent one
// after another: failuresAllowed are checked, the rest refused unchecked.
// The count was read before the check and raised after it, so every login
// that arrived while the first were being checked passed it: a guesser who
// sent them together had as many checked as the check rate let through
// (its burst, and what it refilled meanwhile) — here, without that rate,
// every one.
func TestConcurrentGuessesHeldToTheFailureCount(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users")
	// A cost that makes each check last a while, as a real one does.
	hash, err := bcrypt.GenerateFromPassword([]byte(testPassword), bcrypt.MinCost+4)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("alice:"+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	n := newTestNode(t, configs.Admin{UsersFile: path})
	n.Logins.rate = rate.NewLimiter(rate.Inf, 0) // the per-network and per-user counts alone
	base := loginServer(t, n, "")

	const guesses = 20
	codes := make(chan int, guesses)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for range guesses {
		wg.Go(func() {
			<-start
			codes <- postLogin(t, noRedirects(), base, "alice", "wrong password!", nil).StatusCode
		})
	}
	close(start)
	wg.Wait()
	close(codes)
	checked, locked := 0, 0
	for code := range codes {
		switch code {
		case http.StatusUnauthorized:
			checked++
		case http.StatusTooManyRequests:
			locked++
		default:
			t.Errorf("a guess answered %d", code)
		}
	}
	t.Logf("%d guesses sent at once from one address: %d checked, %d refused unchecked", guesses, checked, locked)
	if checked != failuresAllowed {
		t.Errorf("%d guesses sent at once: %d checked, want %d", guesses, checked, failuresAllowed)
	}
	// The right password is refused too, as after guesses one by one.
	if code := postLogin(t, noRedirects(), base, "alice", testPassword, nil).StatusCode; code != http.StatusTooManyRequests {
		t.Errorf("the right password after the guesses: %d, want 429", code)
	}
}

// Cookie tossing: a sibling of the admin ports' host name (or anyone who can
// set cookies for a parent domain, or a man in the middle of a plain-HTTP
// page of the host) plants its own session as ringlb_admin with a longer
// Path; browsers send the more specific path first — as Go's cookie jar does
// here — and the operator's calls ran as the planted session: reads answered
// for the attacker's user, changes audited as the attacker's. A request
// carrying more than one session cookie is ambiguous and refused, saying how
// to recover, whichever comes first; the refusal is recorded.
func TestTossedSessionCookieIsRefused(t *testing.T) {
	users := filepath.Join(t.TempDir(), "users")
	writeUsers(t, users, map[string]string{"alice": testPassword, "mallory": testPassword + " too"})
	n := newTestNode(t, configs.Admin{UsersFile: users})
	base := loginServer(t, n, "")
	same := map[string]string{"Origin": base, "Sec-Fetch-Site": "same-origin"}

	attacker := noRedirects()
	if resp := postLogin(t, attacker, base, "mallory", testPassword+" too", same); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("the attacker's own login: %s", resp.Status)
	}
	operator := noRedirects()
	if resp := postLogin(t, operator, base, "alice", testPassword, same); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("the operator's login: %s", resp.Status)
	}
	u, _ := url.Parse(base)
	tossed := attacker.Jar.Cookies(u)[0]
	tossed.Path = "/api" // more specific than the operator's Path=/: sent first
	operator.Jar.SetCookies(u, []*http.Cookie{tossed})

	do := func(c *http.Client, method, path string) (int, string) {
		return callAs(t, c, method, base+path, base)
	}
	code, body := do(operator, http.MethodGet, "/api/sessions")
	t.Logf("read with the attacker's cookie first: %d %q", code, body)
	if code != http.StatusUnauthorized || !strings.Contains(body, "clear") || strings.Contains(body, `"login"`) {
		t.Errorf("read with the attacker's session cookie before the operator's: %d %q; want 401 saying to clear the cookies, not naming the login (which leaves the planted cookie: the dashboard would loop)", code, body)
	}
	code, body = do(operator, http.MethodPost, "/api/drain")
	t.Logf("change with the attacker's cookie first: %d %q", code, body)
	if code != http.StatusUnauthorized {
		t.Errorf("change with the attacker's session cookie before the operator's: %d %q; want 401", code, body)
	}
	for _, rec := range n.Audit.List(10) {
		if rec.Action == "drain" {
			t.Errorf("a change went through with two session cookies: %+v", rec)
		}
	}
	// The other order is as ambiguous: which one the browser meant is unknown.
	if resp := readSessions(t, base, operator.Jar.Cookies(&url.URL{Scheme: "http", Host: u.Host, Path: "/"})[0], tossed); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("read with the operator's session cookie before the attacker's: %s, want 401", resp.Status)
	}
	refused := false
	for _, rec := range n.Audit.List(10) {
		refused = refused || rec.Result == http.StatusUnauthorized && strings.Contains(rec.Target, "user:mallory") && strings.Contains(rec.Target, "user:alice")
	}
	if !refused {
		t.Errorf("no audit record of the refused cookies naming both sessions' users: %+v", n.Audit.List(10))
	}
	// Each alone still works: the refusal is of the ambiguity.
	if code, who := do(attacker, http.MethodGet, "/api/sessions"); code != http.StatusOK || who != "user:mallory" {
		t.Errorf("the attacker's own session alone: %d %q", code, who)
	}
}

// Behind TLS the session cookie is __Host-ringlb_admin: Secure, Path=/ and
// no Domain, which a browser takes only from a secure page of this very
// host — no sibling host name, nothing setting cookies for a parent domain
// and no man in the middle of a plain-HTTP page can set one. It is taken
// before any ringlb_admin, so a planted one stands for nobody beside it;
// a logout clears both names.
func TestLoginOverTLSIsHostOnly(t *testing.T) {
	users := filepath.Join(t.TempDir(), "users")
	writeUsers(t, users, map[string]string{"alice": testPassword, "mallory": testPassword + " too"})
	n := newTestNode(t, configs.Admin{UsersFile: users})
	base := loginServer(t, n, "")
	target, _ := url.Parse(base)
	proxy, c, resp := loginThroughTLSProxy(t, base)
	set := map[string]*http.Cookie{}
	for _, ck := range resp.Cookies() {
		set[ck.Name] = ck
	}
	t.Logf("cookies set by a login over TLS: %v", slices.Collect(maps.Keys(set)))
	if ck := set[SessionHostCookie]; ck == nil || !ck.Secure || ck.Path != "/" || ck.Domain != "" || !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode {
		t.Fatalf("login over TLS: %s cookie %+v; want it Secure, HttpOnly, SameSite=Strict, Path=/, no Domain", SessionHostCookie, ck)
	}

	// The attacker's session, planted as ringlb_admin with a longer path.
	attacker := noRedirects()
	if resp := postLogin(t, attacker, base, "mallory", testPassword+" too", map[string]string{"Origin": base}); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("the attacker's own login: %s", resp.Status)
	}
	tossed := attacker.Jar.Cookies(target)[0]
	tossed.Path = "/api"
	proxyURL, _ := url.Parse(proxy.URL)
	c.Jar.SetCookies(proxyURL, []*http.Cookie{tossed})
	do := func(method, path string) (int, string) {
		return callAs(t, c, method, proxy.URL+path, proxy.URL)
	}
	if code, who := do(http.MethodGet, "/api/sessions"); code != http.StatusOK || who != "user:alice" {
		t.Errorf("read with the host-only cookie and a planted %s: %d %q, want the operator's", SessionCookie, code, who)
	}

	resp = logoutThroughTLSProxy(t, c, proxy.URL)
	cleared := map[string]bool{}
	for _, ck := range resp.Cookies() {
		cleared[ck.Name] = ck.MaxAge < 0 && ck.Path == "/"
	}
	if !cleared[SessionCookie] || !cleared[SessionHostCookie] {
		t.Errorf("logout over TLS cleared %v; want both %s and %s", cleared, SessionCookie, SessionHostCookie)
	}
	if _, who := do(http.MethodGet, "/api/sessions"); who == "user:alice" {
		t.Errorf("the logged-out session still reads")
	}
}

// A browser with no session of its own, given a planted ringlb_admin (a
// sibling host's Domain cookie, a man in the middle of a plain-HTTP page of
// the host), was logged in as the planter over TLS too: its reads answered
// as the planter's user and its changes went through as theirs. Over TLS a
// login sets __Host-ringlb_admin, so a plain one there was planted or is
// left from before it: it stands for nobody, the caller is sent to log in,
// and once logged in the planted one is ignored beside its own — no loop.
// The planted session is recorded once. The plain-HTTP port keeps taking
// ringlb_admin.
func TestPlantedPlainCookieOverTLSLogsNobodyIn(t *testing.T) {
	users := filepath.Join(t.TempDir(), "users")
	writeUsers(t, users, map[string]string{"alice": testPassword, "mallory": testPassword + " too"})
	n := newTestNode(t, configs.Admin{UsersFile: users})
	mux := loginMux(n, "")
	plain := "http://" + serveMux(t, mux).Addr().String()
	own := httptest.NewTLSServer(mux) // the port's own TLS
	defer own.Close()
	target, _ := url.Parse(plain)
	proxy := tlsProxyTo(t, plain)

	attacker := noRedirects()
	if resp := postLogin(t, attacker, plain, "mallory", testPassword+" too", map[string]string{"Origin": plain}); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("the attacker's own login over plain HTTP: %s", resp.Status)
	}
	planted := attacker.Jar.Cookies(target)[0]
	if planted.Name != SessionCookie {
		t.Fatalf("a login over plain HTTP set %s, want %s", planted.Name, SessionCookie)
	}
	if code, who := callAs(t, attacker, http.MethodGet, plain+"/api/sessions", ""); code != http.StatusOK || who != "user:mallory" {
		t.Errorf("%s over plain HTTP: %d %q, want the session's user", SessionCookie, code, who)
	}

	for _, tc := range []struct {
		name   string
		server *httptest.Server
		origin bool // how overTLS learns of a proxy's TLS
	}{{"own TLS", own, false}, {"TLS proxy", proxy, true}} {
		t.Run(tc.name, func(t *testing.T) {
			victim := browserOf(tc.server)
			u, _ := url.Parse(tc.server.URL)
			victim.Jar.SetCookies(u, []*http.Cookie{{Name: SessionCookie, Value: planted.Value, Path: "/"}})
			origin := ""
			if tc.origin {
				origin = tc.server.URL
			}
			if !tc.origin {
				code, body := callAs(t, victim, http.MethodGet, tc.server.URL+"/api/sessions", origin)
				t.Logf("read over TLS with a planted %s alone: %d %q", SessionCookie, code, body)
				if code != http.StatusUnauthorized || !strings.Contains(body, `"login"`) {
					t.Errorf("read over TLS with a planted %s alone: %d %q; want 401 naming the login", SessionCookie, code, body)
				}
			}
			code, body := callAs(t, victim, http.MethodPost, tc.server.URL+"/api/drain", origin)
			t.Logf("change over TLS with a planted %s alone: %d %q", SessionCookie, code, body)
			if code != http.StatusUnauthorized || !strings.Contains(body, `"login"`) {
				t.Errorf("change over TLS with a planted %s alone: %d %q; want 401 naming the login", SessionCookie, code, body)
			}
			// Sent to the login, the operator logs in; the planted cookie stays
			// in the browser and stands for nobody beside theirs.
			if resp := postLogin(t, victim, tc.server.URL, "alice", testPassword, map[string]string{"Origin": tc.server.URL, "Sec-Fetch-Site": "same-origin"}); resp.StatusCode != http.StatusSeeOther {
				t.Fatalf("the operator's login over TLS: %s", resp.Status)
			}
			if code, who := callAs(t, victim, http.MethodPost, tc.server.URL+"/api/drain", origin); code != http.StatusAccepted || who != "user:alice" {
				t.Errorf("change after the operator's login over TLS: %d %q, want 202 as user:alice", code, who)
			}
		})
	}
	for _, rec := range n.Audit.List(20) {
		if rec.Action == "drain" && rec.Who != "user:alice" {
			t.Errorf("a change went through as the planted session: %+v", rec)
		}
	}
	recorded := 0
	for _, rec := range n.Audit.List(20) {
		if rec.Result == http.StatusUnauthorized && rec.Target == "user:mallory" {
			recorded++
		}
	}
	t.Logf("refused-login records naming the planted session: %d", recorded)
	if recorded != 1 {
		t.Errorf("%d records of the planted session refused over TLS, want 1: %+v", recorded, n.Audit.List(20))
	}
}

// callAs sends an admin request as the dashboard does (X-Ringlb-Admin: 1,
// Origin when given) and returns the status and body.
func callAs(t *testing.T, c *http.Client, method, u, origin string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, u, nil)
	req.Header.Set(configs.HeaderAdmin, "1")
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
