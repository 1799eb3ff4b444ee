package sessions

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/ringlb/ringlb/configs"
)

// closeWith reads c until its close frame and returns the close's code and
// reason and how many frames came before it; code 0 when the read ended
// without a close frame (its error in reason).
func closeWith(c *websocket.Conn) (code int, reason string, frames int) {
	for {
		_, _, err := c.ReadMessage()
		if err == nil {
			frames++
			continue
		}
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			return ce.Code, ce.Text, frames
		}
		return 0, err.Error(), frames
	}
}

// TestExpiredTokenIsClosed is the attack of a token holder who stays: a
// join token is checked when its holder joins, so a participant that
// joined a minute before its token expired kept its seat — an editor's
// included — for as long as it kept the connection, and a token handed out
// for an hour granted a day. Now the holder is closed with 1008 when its
// token expires (a ringlb.v1 client joins again with a fresh token and
// resumes); a participant whose token is still good stays.
func TestExpiredTokenIsClosed(t *testing.T) {
	parallel(t)
	path, secret := writeSecret(t)
	e := startEdge(t, configs.Edge{Auth: configs.EdgeAuth{HMACSecretFile: path, Anonymous: configs.AnonymousDeny}}, nil)
	now := time.Now()
	short := func(user string) string {
		return mintClaims(t, secret, TokenClaims{Session: "doc", User: user, Role: RoleEditor, IssuedAt: now, Expires: now.Add(4 * time.Second)})
	}
	stays := e.joinV1(t, "doc", "token="+mint(t, secret, "doc", "ann", RoleEditor, time.Hour), nil)
	v1 := e.joinV1(t, "doc", "token="+short("eve"), nil)
	stays.readType(t, "join")
	h := http.Header{}
	h.Set("ctstickiness", "raw-doc")
	h.Set("Authorization", "Bearer "+mintClaims(t, secret, TokenClaims{Session: "raw-doc", User: "eve", Role: RoleEditor, IssuedAt: now, Expires: now.Add(4 * time.Second)}))
	raw, _ := e.dialHeader(t, h, nil)
	e.waitJoined(t)

	// The tokens carry whole seconds: both have expired by then.
	expired := now.Add(5 * time.Second)
	time.Sleep(time.Until(expired))
	// Liveness bound only: a holder still here 30 s after its token
	// expired is one the edge kept.
	for _, c := range []*websocket.Conn{v1.Conn, raw} {
		_ = c.SetReadDeadline(time.Now().Add(testDeadline))
	}
	for name, c := range map[string]*websocket.Conn{"ringlb.v1": v1.Conn, "raw": raw} {
		code, reason, frames := closeWith(c)
		t.Logf("%s holder of an expired token: close %d %q after %d frames", name, code, reason, frames)
		if code != websocket.ClosePolicyViolation || reason != "token expired" {
			t.Errorf("%s holder of an expired token: close %d %q, want 1008 \"token expired\"", name, code, reason)
		}
	}
	if l := stays.readType(t, "leave"); l.User != "eve" {
		t.Fatalf("the holder of a good token saw %+v, want eve's leave", l)
	}
	stays.msg(t, "still here")
	stays.readType(t, "ack")
	if v := labelledValue(t, e.s, "ringlb_edge_lapsed_tokens_closed_total", "expired"); v != 2 {
		t.Errorf("ringlb_edge_lapsed_tokens_closed_total{reason=\"expired\"} = %v, want 2", v)
	}
}

// TestRotatedOutSecretClosesItsHolders is the attack of a leaked
// join-token secret: the operator rotates it with rotation_overlap 0s, so
// that its tokens are refused at once, and every participant that had
// already joined with one stayed — the leak's holders among them. Now they
// are closed with 1008 when the secret stops being accepted (at the
// reload, or once its overlap has run); the new secret's holders and
// token-less participants stay.
func TestRotatedOutSecretClosesItsHolders(t *testing.T) {
	parallel(t)
	path, oldSecret := writeSecret(t)
	cfg := provisioned(configs.Edge{Auth: configs.EdgeAuth{HMACSecretFile: path, Anonymous: configs.AnonymousViewer}})
	e := startEdge(t, cfg, nil)
	leaked := e.joinV1(t, "doc", "token="+mint(t, oldSecret, "doc", "mallory", RoleEditor, time.Hour), nil)
	viewer := e.joinV1(t, "doc", "", nil)
	leaked.readType(t, "join")

	newSecret := []byte("fedcba9876543210fedcba9876543210")
	newPath := filepath.Join(t.TempDir(), "hmac-2.key")
	if err := os.WriteFile(newPath, newSecret, 0o600); err != nil {
		t.Fatal(err)
	}
	// First with an overlap: the old secret's holders stay while it runs
	// (an hour: nothing here races it), then go when it ends (a reload
	// with the same secret and a shorter overlap cuts it to 2 s).
	overlap := configs.Duration(time.Hour)
	next := cfg
	next.Auth.HMACSecretFile, next.Auth.RotationOverlap = newPath, &overlap
	if err := e.s.Reload(next); err != nil {
		t.Fatal(err)
	}
	during := e.joinV1(t, "doc", "token="+mint(t, oldSecret, "doc", "bob", RoleEditor, time.Hour), nil)
	fresh := e.joinV1(t, "doc", "token="+mint(t, newSecret, "doc", "ann", RoleEditor, time.Hour), nil)
	leaked.msg(t, "during the overlap")
	leaked.readType(t, "ack")
	short := configs.Duration(2 * time.Second)
	next.Auth.RotationOverlap = &short
	if err := e.s.Reload(next); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]*v1Client{"joined before the rotation": leaked, "joined during the overlap": during} {
		code, reason, _ := closeWith(c.Conn)
		t.Logf("old secret's holder %s: close %d %q once the overlap ran", name, code, reason)
		if code != websocket.ClosePolicyViolation || reason != "token's secret rotated out" {
			t.Errorf("old secret's holder %s: close %d %q, want 1008 \"token's secret rotated out\"", name, code, reason)
		}
	}

	// Then at once: rotated again with 0s, ann's secret is the leaked one.
	zero := configs.Duration(0)
	third := next
	third.Auth.HMACSecretFile, third.Auth.RotationOverlap = path, &zero
	if err := e.s.Reload(third); err != nil {
		t.Fatal(err)
	}
	code, reason, _ := closeWith(fresh.Conn)
	t.Logf("holder of a secret rotated out with 0s: close %d %q", code, reason)
	if code != websocket.ClosePolicyViolation || reason != "token's secret rotated out" {
		t.Errorf("holder of a secret rotated out with 0s: close %d %q, want 1008", code, reason)
	}
	// The token-less viewer stays, and a token of the current secret joins.
	again := e.joinV1(t, "doc", "token="+mint(t, oldSecret, "doc", "carol", RoleEditor, time.Hour), nil)
	again.msg(t, "back on the first secret")
	again.readType(t, "ack")
	for {
		m := viewer.readType(t, "msg")
		if string(m.Data) == `"back on the first secret"` {
			break
		}
	}
	if v := labelledValue(t, e.s, "ringlb_edge_lapsed_tokens_closed_total", "secret_rotated"); v != 3 {
		t.Errorf("ringlb_edge_lapsed_tokens_closed_total{reason=\"secret_rotated\"} = %v, want 3", v)
	}
}

// TestTokenRefreshKeepsTheConnection: a ringlb.v1 participant told when
// its token expires (welcome.expires) sends a fresh one before then and
// stays past the first token's expiry; a refresh that would not admit a
// join as the same user and role is refused with an error frame, and the
// connection stays.
func TestTokenRefreshKeepsTheConnection(t *testing.T) {
	parallel(t)
	path, secret := writeSecret(t)
	e := startEdge(t, configs.Edge{Auth: configs.EdgeAuth{HMACSecretFile: path, Anonymous: configs.AnonymousViewer}}, nil)
	ann := e.joinV1(t, "doc", "token="+mint(t, secret, "doc", "ann", RoleEditor, time.Hour), nil)
	anon := e.joinV1(t, "doc", "", nil)
	ann.readType(t, "join")
	if anon.welcome.Expires != 0 {
		t.Fatalf("token-less welcome.expires = %d, want none", anon.welcome.Expires)
	}

	// Refusals, each an error frame; the connection stays.
	revoked := mint(t, secret, "doc", "ann", RoleEditor, time.Hour)
	claims, err := VerifyToken(secret, revoked, time.Now(), configs.DefaultMaxTokenTTL)
	if err != nil {
		t.Fatal(err)
	}
	if status, body := e.adminPost(t, "/api/tokens/revoke", url.Values{"nonce": {claims.Nonce}}); status != http.StatusOK {
		t.Fatalf("revoke: %d %s", status, body)
	}
	for _, tc := range []struct{ name, token, code string }{
		{"another user's", mint(t, secret, "doc", "mallory", RoleEditor, time.Hour), "forbidden"},
		{"another role's", mint(t, secret, "doc", "ann", RoleViewer, time.Hour), "forbidden"},
		{"another session's", mint(t, secret, "other", "ann", RoleEditor, time.Hour), "forbidden"},
		{"expired", mint(t, secret, "doc", "ann", RoleEditor, -time.Second), "forbidden"},
		{"another secret's", mint(t, []byte("fedcba9876543210fedcba9876543210"), "doc", "ann", RoleEditor, time.Hour), "forbidden"},
		{"malformed", "not-a-token", "forbidden"},
		{"revoked", revoked, "forbidden"},
		{"missing", "", "bad_request"},
	} {
		ann.send(t, map[string]string{"type": "token", "token": tc.token})
		m := ann.readType(t, "error")
		t.Logf("refresh with %s token: %s %q", tc.name, m.Code, m.Message)
		if m.Code != tc.code {
			t.Errorf("refresh with %s token: error %q, want %q", tc.name, m.Code, tc.code)
		}
	}
	// A refresh that brings no token string is malformed, as a msg
	// without data is: bad_request, not a refusal of a token
	// (docs/CONTRACT.md).
	for _, frame := range []string{`{"type":"token"}`, `{"type":"token","token":null}`, `{"type":"token","token":5}`} {
		if err := ann.WriteMessage(websocket.TextMessage, []byte(frame)); err != nil {
			t.Fatal(err)
		}
		if m := ann.readType(t, "error"); m.Code != "bad_request" {
			t.Errorf("refresh %s: error %q %q, want bad_request", frame, m.Code, m.Message)
		}
	}
	anon.send(t, map[string]string{"type": "token", "token": mint(t, secret, "doc", "ann", RoleEditor, time.Hour)})
	if m := anon.readType(t, "error"); m.Code != "forbidden" {
		t.Errorf("a token-less participant's refresh: %+v, want error forbidden (it joins again with a token)", m)
	}
	ann.msg(t, "still here")
	ann.readType(t, "ack")

	// A participant told its token expires in 4 s refreshes it at once
	// and is still there past that.
	now := time.Now()
	first := TokenClaims{Session: "doc", User: "ann", Role: RoleEditor, IssuedAt: now, Expires: now.Add(4 * time.Second)}
	fresh := mint(t, secret, "doc", "ann", RoleEditor, time.Hour)
	tab := e.joinV1(t, "doc", "token="+mintClaims(t, secret, first), nil)
	tab.send(t, map[string]string{"type": "token", "token": fresh})
	if tab.welcome.Expires != first.Expires.Unix() {
		t.Fatalf("welcome.expires = %d, want the token's %d", tab.welcome.Expires, first.Expires.Unix())
	}
	if m := tab.readType(t, "token"); m.Expires <= first.Expires.Unix() {
		t.Fatalf("refresh answered %+v, want the fresh token's expiry", m)
	}
	// Past the first token's expiry (whole seconds), the tab is still there.
	time.Sleep(time.Until(first.Expires.Add(time.Second)))
	tab.msg(t, "after the first token expired")
	tab.readType(t, "ack")
	for {
		if m := anon.readType(t, "msg"); string(m.Data) == `"after the first token expired"` {
			break
		}
	}
	if v := labelledValue(t, e.s, "ringlb_edge_lapsed_tokens_closed_total", "expired"); v != 0 {
		t.Errorf("ringlb_edge_lapsed_tokens_closed_total{reason=\"expired\"} = %v, want 0", v)
	}
	// The refreshed token is the one revocations match.
	if status, body := e.adminPost(t, "/api/tokens/revoke", url.Values{"user": {"ann"}}); status != http.StatusOK {
		t.Fatalf("revoke: %d %s", status, body)
	}
	if code, reason, _ := closeWith(tab.Conn); code != websocket.ClosePolicyViolation || reason != "token revoked" {
		t.Fatalf("refreshed holder after its user's revocation: close %d %q, want 1008 \"token revoked\"", code, reason)
	}
}

// TestRefreshedToShorterTokenClosedAtItsExpiry: a ringlb.v1 holder that
// joined with an hour's token refreshes it with one expiring in a few
// seconds (its issuer cutting its access short). The ping timer waits for
// the expiry of the token it was armed with, and a refresh stored the new
// token without arming it again: the holder read on past the new token's
// expiry until its next ping (pingInterval, 30 s by default; an hour here,
// so that only its token's expiry closes it), and got the msgs sent
// meanwhile — within the first of them, never closed. Now the refresh arms
// the timer for the token it brings: the holder is closed 1008 "token
// expired" at that expiry, as one joined with it is, and what ann sends
// once it has been reaches it no more.
func TestRefreshedToShorterTokenClosedAtItsExpiry(t *testing.T) {
	parallel(t)
	path, secret := writeSecret(t)
	e := startEdge(t, configs.Edge{Auth: configs.EdgeAuth{HMACSecretFile: path, Anonymous: configs.AnonymousDeny}}, func(s *Server) {
		s.pingInterval = time.Hour
	})
	ann := e.joinV1(t, "doc", "token="+mint(t, secret, "doc", "ann", RoleEditor, time.Hour), nil)
	mal := e.joinV1(t, "doc", "token="+mint(t, secret, "doc", "mallory", RoleViewer, time.Hour), nil)
	ann.readType(t, "join")
	now := time.Now()
	expires := time.Unix(now.Add(3*time.Second).Unix(), 0) // a token holds whole seconds
	short := TokenClaims{Session: "doc", User: "mallory", Role: RoleViewer, IssuedAt: now, Expires: expires}
	mal.send(t, map[string]string{"type": "token", "token": mintClaims(t, secret, short)})
	if m := mal.readType(t, "token"); m.Expires != expires.Unix() {
		t.Fatalf("refresh answered %+v, want the short token's expiry %d", m, expires.Unix())
	}
	waitFor(t, "holder of the refreshed token closed for its expiry", func() bool {
		return labelledValue(t, e.s, "ringlb_edge_lapsed_tokens_closed_total", "expired") == 1
	})
	t.Logf("mallory closed %v after its refreshed token expired", time.Since(expires).Round(time.Millisecond))
	ann.msg(t, "after mallory's token expired")
	ann.readType(t, "ack")
	_ = mal.SetReadDeadline(time.Now().Add(testDeadline))
	for {
		_, data, err := mal.ReadMessage()
		if err == nil {
			if bytes.Contains(data, []byte("after mallory's token expired")) {
				t.Fatalf("mallory, closed for its refreshed token's expiry, got what ann sent after: %s", data)
			}
			continue
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != websocket.ClosePolicyViolation || ce.Text != lapseExpired {
			t.Fatalf("mallory after its refreshed token's expiry: %v, want closed 1008 %q", err, lapseExpired)
		}
		return
	}
}

// TestExpiredTokenWritesNothingThoughItsQueueNeverEmpties is the attack of
// a token holder that keeps its own send queue from emptying: it floods
// 120 ringlb.v1 pings with 60 KB stamps from a small receive buffer, then
// sends a new one for each pong it reads, so that its pongs always wait.
// Expiry was enforced by the ping timer alone, which the writer armed again
// only once it had written a ping, and the writer pings only when its queue
// is empty. Before, the timer fired once, found the token good and was
// never armed again: the holder stayed past its expiry for as long as it
// fed its queue, and ann got its msg "written after my token expired". Now
// the holder is closed 1008 "token expired", and nothing it sends after its
// expiry reaches anyone.
func TestExpiredTokenWritesNothingThoughItsQueueNeverEmpties(t *testing.T) {
	const flood, stamp = 120, 60000
	ann, m, expires := expiringHolder(t, "mallory", RoleEditor)

	ping := appendClientTextFrame(nil, []byte(`{"type":"ping","ts":"`+strings.Repeat("t", stamp)+`"}`))
	late := appendClientTextFrame(nil, []byte(`{"type":"msg","data":"written after my token expired"}`))
	type outcome struct {
		code            uint16
		reason          string
		pongs, lateOnes int
		closedAt        time.Time
		err             error
	}
	done := make(chan outcome, 1)
	go func() {
		var o outcome
		defer func() { done <- o }()
		if _, o.err = m.Write(bytes.Repeat(ping, flood)); o.err != nil {
			return
		}
		rf := newRawFrames(m)
		sentLate := false
		for {
			op, n, err := rf.head()
			if err == nil && op == websocket.CloseMessage {
				var payload []byte
				if payload, err = rf.body(n); err == nil && len(payload) >= 2 {
					o.code, o.reason, o.closedAt = binary.BigEndian.Uint16(payload), string(payload[2:]), time.Now()
				}
				_, _ = m.Write(closeFrame())
			} else if err == nil {
				err = rf.skip(n)
			}
			if err != nil || op == websocket.CloseMessage {
				o.err = err
				return
			}
			if n < stamp {
				continue // the welcome
			}
			o.pongs++
			// Read slower than the edge makes pongs (its fan-out pace,
			// 32 MiB/s, bounds that), so they wait in the queue rather
			// than in the socket's buffers.
			time.Sleep(10 * time.Millisecond)
			next := ping
			if !time.Now().Before(expires) {
				o.lateOnes++
				if !sentLate {
					next, sentLate = append(late[:len(late):len(late)], ping...), true
				}
			}
			if _, o.err = m.Write(next); o.err != nil {
				return
			}
		}
	}()
	// What mallory's reader relays comes before mallory's leave.
	for {
		got := ann.read(t)
		if got.Type == "msg" {
			t.Fatalf("ann got mallory's msg %s, sent after its token expired", got.Data)
		}
		if got.Type == "leave" && got.User == "mallory" {
			break
		}
	}
	o := <-done
	t.Logf("mallory fed its queue: %d pongs read, %d of them after its token expired (written before it: the sockets' buffers); close %d %q %v after the expiry (%v)",
		o.pongs, o.lateOnes, o.code, o.reason, o.closedAt.Sub(expires).Round(time.Millisecond), o.err)
	if o.code != websocket.ClosePolicyViolation || o.reason != "token expired" {
		t.Fatalf("mallory closed %d %q, want 1008 \"token expired\"", o.code, o.reason)
	}
}

// TestExpiredViewerClosedThoughItsQueueNeverEmpties: a viewer of a busy
// session, whose send queue never empties because msgs come faster than it
// reads them, sends nothing at all — no message of its could be the
// occasion to look at its token. Before, its ping timer fired once, with
// frames queued, and was never armed again: it went on reading the session
// past its token's expiry for as long as the session stayed busy. Now it is
// closed 1008 "token expired".
func TestExpiredViewerClosedThoughItsQueueNeverEmpties(t *testing.T) {
	const backlog, size = 100, 60000
	ann, vic, expires := expiringHolder(t, "vic", RoleViewer)
	edit := sendBacklog(t, ann, backlog, size)
	// One more edit for each vic reads: its queue holds about backlog.
	rf := newRawFrames(vic)
	read, late := 0, 0
	stillOpen := func(err error) {
		t.Helper()
		t.Fatalf("vic, whose token expired at %s, still open: %v (%d msgs read, %d after the expiry)", expires.Format(time.TimeOnly), err, read, late)
	}
	for {
		op, n, err := rf.head()
		if err != nil {
			stillOpen(err)
		}
		if op == websocket.CloseMessage {
			payload, err := rf.body(n)
			if err != nil || len(payload) < 2 {
				t.Fatalf("vic's close: %q %v", payload, err)
			}
			code, reason := binary.BigEndian.Uint16(payload), string(payload[2:])
			t.Logf("vic, reading a busy session: %d msgs read, %d after its token expired (written before it: the sockets' buffers); close %d %q %v after the expiry",
				read, late, code, reason, time.Since(expires).Round(time.Millisecond))
			if code != websocket.ClosePolicyViolation || reason != "token expired" {
				t.Fatalf("vic closed %d %q, want 1008 \"token expired\"", code, reason)
			}
			return
		}
		if err := rf.skip(n); err != nil {
			stillOpen(err)
		}
		if n < size {
			continue // the welcome
		}
		read++
		if !time.Now().Before(expires) {
			late++
		}
		// Read slower than ann's msgs come (her fan-out pace, 32 MiB/s,
		// bounds that), so they wait in the queue rather than in the
		// socket's buffers.
		time.Sleep(10 * time.Millisecond)
		if err := ann.WriteMessage(websocket.TextMessage, edit); err != nil {
			t.Fatal(err)
		}
	}
}

// expiringHolder starts an edge pinging every second with ann, an editor
// whose token holds an hour, in session "doc", and joins there user in
// role on a raw connection with a token expiring a few seconds on; it
// returns ann, that connection once ann has seen it join, and its expiry.
func expiringHolder(t *testing.T, user, role string) (*v1Client, net.Conn, time.Time) {
	t.Helper()
	path, secret := writeSecret(t)
	e := startEdge(t, configs.Edge{Auth: configs.EdgeAuth{HMACSecretFile: path}}, func(s *Server) {
		s.pingInterval = time.Second // the expiry a few pings away
		// The holder reads its close frame behind every pong already
		// queued for it: on a loaded machine that took longer than the
		// default 2 s, the edge gave up on the handshake and the reset
		// lost the close frame the test reads.
		s.closeWait = testDeadline
	})
	ann := e.joinV1(t, "doc", "token="+mint(t, secret, "doc", "ann", RoleEditor, time.Hour), nil)
	now := time.Now()
	expires := time.Unix(now.Add(3*time.Second).Unix(), 0) // a token holds whole seconds
	token := mintClaims(t, secret, TokenClaims{Session: "doc", User: user, Role: role, IssuedAt: now, Expires: expires})
	c := rawJoinV1With(t, e, "doc", "Authorization: Bearer "+token+"\r\n", 1<<16)
	ann.readType(t, "join")
	return ann, c, expires
}

// sendBacklog has ann send backlog edits of size bytes each, its acks read
// and dropped, and returns the edit: the session's other participants have
// that many queued.
func sendBacklog(t *testing.T, ann *v1Client, backlog, size int) []byte {
	t.Helper()
	go func() {
		for {
			if _, _, err := ann.ReadMessage(); err != nil {
				return
			}
		}
	}()
	edit, _ := json.Marshal(map[string]string{"type": "msg", "data": strings.Repeat("e", size)})
	for range backlog {
		if err := ann.WriteMessage(websocket.TextMessage, edit); err != nil {
			t.Fatal(err)
		}
	}
	return edit
}
