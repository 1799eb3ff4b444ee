package sessions

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health/healthtest"
)

// TestTokenlessJoinIsAViewer is the attack on a default auth config (a
// secret, auth.required unset): a viewer's link minus its token parameter
// must not open the session as an editor.
func TestTokenlessJoinIsAViewer(t *testing.T) {
	path, secret := writeSecret(t)
	e := startEdge(t, configs.Edge{Auth: configs.EdgeAuth{HMACSecretFile: path}}, nil)
	ed := e.joinV1(t, "doc", "token="+mint(t, secret, "doc", "ed", RoleEditor, time.Hour), nil)
	dropped := e.joinV1(t, "doc", "", nil) // the viewer link with its token cut off
	ed.readType(t, "join")
	dropped.msg(t, "written without a token")
	if m := dropped.readType(t, "error"); m.Code != "forbidden" {
		t.Fatalf("token-less msg: %+v, want error forbidden", m)
	}
	// It took no sequence number and reached nobody: the editor's own msg
	// is the first the editor's peers see.
	ed.msg(t, "editor writes")
	if m := dropped.readType(t, "msg"); m.Seq != 1 || string(m.Data) != `"editor writes"` {
		t.Fatalf("first msg %+v, want the editor's as seq 1", m)
	}
}

// TestAnonymousModes: edge.auth.anonymous decides what a join without a
// token becomes; a bad token is refused whatever the mode.
func TestAnonymousModes(t *testing.T) {
	path, secret := writeSecret(t)
	for _, tc := range []struct {
		name       string
		auth       configs.EdgeAuth
		wantStatus int  // of a token-less join; 101 when admitted
		wantViewer bool // an admitted token-less join may not send
	}{
		{"no auth configured: editor", configs.EdgeAuth{}, 101, false},
		{"secret: viewer by default", configs.EdgeAuth{HMACSecretFile: path}, 101, true},
		{"explicit editor", configs.EdgeAuth{HMACSecretFile: path, Anonymous: configs.AnonymousEditor}, 101, false},
		{"explicit viewer", configs.EdgeAuth{HMACSecretFile: path, Anonymous: configs.AnonymousViewer}, 101, true},
		{"deny", configs.EdgeAuth{HMACSecretFile: path, Anonymous: configs.AnonymousDeny}, 401, false},
		{"required is deny", configs.EdgeAuth{HMACSecretFile: path, Required: true}, 401, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := startEdge(t, configs.Edge{Auth: tc.auth}, nil)
			c, resp, err := e.dialV1(t, "s", "", nil)
			if tc.wantStatus != 101 {
				if err == nil || resp == nil || resp.StatusCode != tc.wantStatus {
					t.Fatalf("token-less join: %v %v, want %d", resp, err, tc.wantStatus)
				}
				if resp.Header.Get("WWW-Authenticate") == "" {
					t.Error("401 without WWW-Authenticate")
				}
				return
			}
			if err != nil {
				t.Fatalf("token-less join: %v %v", resp, err)
			}
			e.waitJoined(t)
			v := &v1Client{Conn: c}
			v.welcome = v.readType(t, "welcome")
			v.msg(t, "hello")
			if m := v.read(t); (m.Type == "error" && m.Code == "forbidden") != tc.wantViewer {
				t.Fatalf("token-less msg answered %+v; want viewer %v", m, tc.wantViewer)
			}
			if tc.auth.HMACSecretFile == "" {
				return
			}
			// A bad token is never taken for no token.
			_, resp, err = e.dialV1(t, "s", "token="+mint(t, secret, "s", "u", RoleEditor, time.Hour)+"x", nil)
			if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("bad token: %v %v, want 401", resp, err)
			}
		})
	}
}

// TestUnreadableSecretRefusesTokens: a configured secret that could not be
// read refuses every token (fail closed) instead of admitting the join as
// anonymous.
func TestUnreadableSecretRefusesTokens(t *testing.T) {
	_, secret := writeSecret(t)
	e := startEdge(t, configs.Edge{Auth: configs.EdgeAuth{HMACSecretFile: t.TempDir() + "/missing", Anonymous: configs.AnonymousEditor}}, nil)
	_, resp, err := e.dialV1(t, "s", "token="+mint(t, secret, "s", "u", RoleViewer, time.Hour), nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("token with an unreadable secret: %v %v, want 401", resp, err)
	}
}

// TestTokenCarriesNonceAndIssuedAt: every minted token is distinct (a
// nonce) and says when it was issued, so one token or every older token of
// a user can be revoked.
func TestTokenCarriesNonceAndIssuedAt(t *testing.T) {
	_, secret := writeSecret(t)
	a := mint(t, secret, "s", "u", RoleEditor, time.Hour)
	b := mint(t, secret, "s", "u", RoleEditor, time.Hour)
	if a == b {
		t.Fatal("two tokens for the same claims are identical: nothing tells them apart")
	}
	payload, _, _ := strings.Cut(a, ".")
	body, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil {
		t.Fatal(err)
	}
	var fields map[string]any
	if err := json.Unmarshal(body, &fields); err != nil {
		t.Fatal(err)
	}
	n, _ := fields["n"].(string)
	if raw, err := base64.RawURLEncoding.DecodeString(n); err != nil || len(raw) != 12 {
		t.Errorf("nonce %q: want 96 random bits, base64url (%v)", n, err)
	}
	if iat, _ := fields["iat"].(float64); iat < float64(time.Now().Add(-time.Minute).Unix()) {
		t.Errorf("iat %v: want the minting time", fields["iat"])
	}
	t.Logf("token payload: %s", body)
}

// adminPost posts form to the edge's admin port; X-Ringlb-Admin: 1 is the
// header every admin POST carries (the CSRF rule of admin ports).
func (e *testEdge) adminPost(t testing.TB, path string, form url.Values) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, "http://"+e.admin+path, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-Ringlb-Admin", "1")
	resp, err := (&http.Client{Timeout: testDeadline}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// TestRevokeUser: revoking a user closes its connected participants with
// 1008 and refuses its older tokens from then on; a token minted after the
// revocation admits again, and other users are untouched.
func TestRevokeUser(t *testing.T) {
	path, secret := writeSecret(t)
	e := startEdge(t, configs.Edge{Auth: configs.EdgeAuth{HMACSecretFile: path}}, nil)
	mallory := mint(t, secret, "doc", "mallory", RoleEditor, time.Hour)
	m := e.joinV1(t, "doc", "token="+mallory, nil)
	ann := e.joinV1(t, "doc", "token="+mint(t, secret, "doc", "ann", RoleEditor, time.Hour), nil)
	m.readType(t, "join")

	status, body := e.adminPost(t, "/api/tokens/revoke", url.Values{"user": {"mallory"}})
	t.Logf("POST /api/tokens/revoke user=mallory: %d %s", status, strings.TrimSpace(body))
	if status != http.StatusOK {
		t.Fatalf("revoke: %d %s", status, body)
	}
	if code := closeCode(t, m.Conn); code != websocket.ClosePolicyViolation {
		t.Fatalf("revoked participant closed with %d, want 1008", code)
	}
	if l := ann.readType(t, "leave"); l.User != "mallory" {
		t.Fatalf("ann saw %+v", l)
	}
	_, resp, err := e.dialV1(t, "doc", "token="+mallory, nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("revoked token joined: %v %v, want 401", resp, err)
	}
	// Issued after what the revocation refuses (its before, the edge's
	// clock plus the skew it takes tokens with): admitted once the edge's
	// clock is within that skew of the token's issue time, a second on.
	var answer struct{ Before time.Time }
	if err := json.Unmarshal([]byte(body), &answer); err != nil || answer.Before.Before(time.Now()) {
		t.Fatalf("revocation's before %s (%v), want at least now", answer.Before, err)
	}
	iat := answer.Before.Add(time.Second)
	fresh := mintClaims(t, secret, TokenClaims{Session: "doc", User: "mallory", Role: RoleViewer, IssuedAt: iat, Expires: iat.Add(time.Hour)})
	time.Sleep(time.Until(iat.Add(-tokenClockSkew))) // the wall clock reaching a second, not a wait for an event
	e.joinV1(t, "doc", "token="+fresh, nil)
	ann.msg(t, "still here")
	ann.readType(t, "ack")

	_, list := e.get(t, e.admin, "/api/tokens/revoked")
	var got revokedList
	if err := json.Unmarshal([]byte(list), &got); err != nil {
		t.Fatalf("%s: %v", list, err)
	}
	if len(got.Users) != 1 || got.Users[0].User != "mallory" || !got.Users[0].Until.After(time.Now().Add(23*time.Hour)) {
		t.Fatalf("/api/tokens/revoked = %s", list)
	}
	if v := metricValue(t, e.s, "ringlb_edge_tokens_revoked_total"); v != 1 {
		t.Errorf("ringlb_edge_tokens_revoked_total = %v, want 1", v)
	}
}

// A user revocation is the attack of a revoked user holding a token minted
// a moment before the revocation by an issuer whose clock runs ahead of
// the edge's (30 s here): the edge admits such a token, its issue time up
// to tokenClockSkew ahead of its own clock, so the revocation must refuse
// it too. Before, a revocation refused only the tokens issued at or before
// the edge's own clock: mallory stayed connected, and joined again with the
// very token after it.
func TestRevokeUserRefusesTokensOfAClockAhead(t *testing.T) {
	path, secret := writeSecret(t)
	e := startEdge(t, configs.Edge{Auth: configs.EdgeAuth{HMACSecretFile: path}}, nil)
	ahead := time.Now().Add(30 * time.Second)
	mallory := mintClaims(t, secret, TokenClaims{Session: "doc", User: "mallory", Role: RoleEditor, IssuedAt: ahead, Expires: ahead.Add(time.Hour)})
	m := e.joinV1(t, "doc", "token="+mallory, nil)

	status, body := e.adminPost(t, "/api/tokens/revoke", url.Values{"user": {"mallory"}})
	t.Logf("POST /api/tokens/revoke user=mallory: %d %s", status, strings.TrimSpace(body))
	var answer struct{ Closed int }
	if err := json.Unmarshal([]byte(body), &answer); status != http.StatusOK || err != nil {
		t.Fatalf("revoke: %d %s", status, body)
	}
	if answer.Closed != 1 {
		t.Errorf("revocation closed %d holders, want mallory's 1 (token issued 30 s ahead of the edge's clock)", answer.Closed)
	} else if code := closeCode(t, m.Conn); code != websocket.ClosePolicyViolation {
		t.Errorf("revoked participant closed with %d, want 1008", code)
	}
	if c, resp, err := e.dialV1(t, "doc", "token="+mallory, nil); err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		if c != nil {
			c.Close()
		}
		t.Errorf("revoked token joined: %v %v, want 401", resp, err)
	}
}

// TestRevokeNonce revokes one token: its holder is closed with 1008 and it
// is refused, while another token of the same user still admits.
func TestRevokeNonce(t *testing.T) {
	path, secret := writeSecret(t)
	e := startEdge(t, configs.Edge{Auth: configs.EdgeAuth{HMACSecretFile: path}}, nil)
	leaked := mint(t, secret, "doc", "bob", RoleEditor, time.Hour)
	other := mint(t, secret, "doc", "bob", RoleEditor, time.Hour)
	claims, err := VerifyToken(secret, leaked, time.Now(), configs.DefaultMaxTokenTTL)
	if err != nil {
		t.Fatal(err)
	}
	a := e.joinV1(t, "doc", "token="+leaked, nil)
	b := e.joinV1(t, "doc", "token="+other, nil)

	if status, body := e.adminPost(t, "/api/tokens/revoke", url.Values{"nonce": {claims.Nonce}}); status != http.StatusOK {
		t.Fatalf("revoke: %d %s", status, body)
	}
	if code := closeCode(t, a.Conn); code != websocket.ClosePolicyViolation {
		t.Fatalf("holder of the revoked token closed with %d, want 1008", code)
	}
	if _, resp, err := e.dialV1(t, "doc", "token="+leaked, nil); err == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("revoked token joined: %v %v", resp, err)
	}
	b.msg(t, "other token still works")
	b.readType(t, "ack")
	e.joinV1(t, "doc", "token="+other, nil)

	_, list := e.get(t, e.admin, "/api/tokens/revoked")
	var got revokedList
	if err := json.Unmarshal([]byte(list), &got); err != nil {
		t.Fatalf("%s: %v", list, err)
	}
	// The holder was connected, so the edge knew the token's expiry: the
	// entry is kept until then, not for all of max_token_ttl.
	if len(got.Nonces) != 1 || got.Nonces[0].Nonce != claims.Nonce || !got.Nonces[0].Until.Equal(claims.Expires) {
		t.Fatalf("/api/tokens/revoked = %s (token expires %s)", list, claims.Expires)
	}
}

// TestRevokedEditorsMessageInFlightReachesNoOne is the attack of an
// editor that keeps a msg in flight: all of its frame sent but the last
// bytes, so that the edge's reader has the header and waits for the rest.
// When the 1008 "token revoked" comes, it has closeWait to send the rest,
// chosen then (the mask is its own). Before, a stop was looked at only when
// a frame's header was read: the msg whose header came before the
// revocation was sequenced, relayed to ann ("DOCUMENT WIPED AFTER
// REVOCATION") and kept in the history. Now the msg of a participant being
// closed, whatever closes it, is dropped once it has arrived whole:
// nobody gets it and nothing is sequenced.
func TestRevokedEditorsMessageInFlightReachesNoOne(t *testing.T) {
	path, secret := writeSecret(t)
	e := startEdge(t, configs.Edge{Auth: configs.EdgeAuth{HMACSecretFile: path}}, nil)
	ann := e.joinV1(t, "doc", "token="+mint(t, secret, "doc", "ann", RoleEditor, time.Hour), nil)
	m := rawJoinV1With(t, e, "doc", "Authorization: Bearer "+mint(t, secret, "doc", "mallory", RoleEditor, time.Hour)+"\r\n", 1<<16)
	ann.readType(t, "join")

	const tail = 40
	f := appendClientTextFrame(nil, []byte(`{"type":"msg","data":"`+strings.Repeat(".", 60000)+` DOCUMENT WIPED AFTER REVOCATION"}`))
	if _, err := m.Write(f[:len(f)-tail]); err != nil {
		t.Fatal(err)
	}
	// The reader has read the header once the length it announces is
	// taken from the edge's incoming budget.
	healthtest.WaitUntil(t, "the msg's header read", func() bool {
		return metricValue(t, e.s, "ringlb_edge_incoming_bytes") > 0
	})
	if status, body := e.adminPost(t, "/api/tokens/revoke", url.Values{"user": {"mallory"}}); status != http.StatusOK {
		t.Fatalf("revoke: %d %s", status, body)
	}
	rf := newRawFrames(m)
	for {
		op, payload, err := rf.next()
		if err != nil {
			t.Fatalf("mallory's frames ended without a close: %v", err)
		}
		if op != websocket.CloseMessage {
			continue
		}
		code, reason := binary.BigEndian.Uint16(payload), string(payload[2:])
		t.Logf("mallory, its msg in flight, revoked: close %d %q", code, reason)
		if code != websocket.ClosePolicyViolation || reason != "token revoked" {
			t.Fatalf("mallory closed %d %q, want 1008 \"token revoked\"", code, reason)
		}
		break
	}
	// The rest of the msg, then the answer to the close.
	if _, err := m.Write(append(f[len(f)-tail:len(f):len(f)], closeFrame()...)); err != nil {
		t.Fatal(err)
	}
	// What mallory's reader relays comes before mallory's leave.
	for {
		got := ann.read(t)
		if got.Type == "msg" {
			t.Fatalf("ann got mallory's msg finished after its revocation: seq %d, %d bytes", got.Seq, len(got.Data))
		}
		if got.Type == "leave" && got.User == "mallory" {
			break
		}
	}
	ann.msg(t, "still here")
	if a := ann.readType(t, "ack"); a.Seq != 1 {
		t.Fatalf("ann's msg got seq %d, want 1: mallory's was sequenced", a.Seq)
	}
}

// TestRevokedNewcomersHeldMsgReachesNoOne is the attack of a newcomer
// whose msg waits its session's joiners' turn (pace.go): in its first
// second mallory sends a msg that spends the joiners' bucket (its fan-out,
// its join and leave), then another, which is read and held until the
// rate has paid for it, about 40 ms, looking at whether mallory was
// stopped between slices of 10 ms. Before, nothing looked after the last
// slice: revoked during it, mallory had its msg sequenced and relayed once
// its turn came, after the revocation had been answered (2–5 of 24
// trials, revoked 30–38 ms after sending). Now whether a sender is being
// closed, or its token has lapsed, is looked at under its session's lock
// as its msg goes out (relays). The proof of order: the revocation is answered
// once mallory is stopped, ann sends a marker once the answer is in, and
// the observer reads the session's one order until mallory's leave (what
// mallory's reader relays comes before it): no msg of mallory's may come
// after the marker. The trials revoke at offsets across the wait, so that
// some land in its last slice.
func TestRevokedNewcomersHeldMsgReachesNoOne(t *testing.T) {
	const trials = 24
	path, secret := writeSecret(t)
	e := startEdge(t, configs.Edge{
		Auth:                    configs.EdgeAuth{HMACSecretFile: path, Anonymous: configs.AnonymousViewer},
		MaxFanoutBytesPerSecond: 64 << 10,
	}, nil)
	type room struct{ obs, ann *v1Client }
	rooms := make([]room, trials)
	for i := range rooms {
		key := fmt.Sprintf("doc-%d", i)
		rooms[i].obs = e.joinV1(t, key, "", nil)
		rooms[i].ann = e.joinV1(t, key, "token="+mint(t, secret, key, "ann", RoleEditor, time.Hour), nil)
	}
	// Past their count as newcomers: mallory is its session's only one,
	// and the joiners' bucket is one participant's.
	time.Sleep(2*joinerWindow + 100*time.Millisecond)
	// Its fan-out to the two others fits mallory's own bucket (64 KiB);
	// with its join and leave it leaves the joiners' bucket 2.5 KiB in
	// debt, which the next msg waits for.
	big := strings.Repeat("x", 31000)
	late, before := 0, 0
	for i, r := range rooms {
		key := fmt.Sprintf("doc-%d", i)
		tok := mint(t, secret, key, "mallory", RoleEditor, time.Hour)
		claims, err := VerifyToken(secret, tok, time.Now(), configs.DefaultMaxTokenTTL)
		if err != nil {
			t.Fatal(err)
		}
		mal := e.joinV1(t, key, "token="+tok, nil)
		mal.msg(t, big)
		mal.msg(t, "held")
		time.Sleep(time.Duration(2*i) * time.Millisecond)
		if status, body := e.adminPost(t, "/api/tokens/revoke", url.Values{"nonce": {claims.Nonce}}); status != http.StatusOK {
			t.Fatalf("revoke: %d %s", status, body)
		}
		marker := fmt.Sprintf("marker-%d", i)
		r.ann.msg(t, marker)
		// Mallory answers its close, so its reader ends and it leaves.
		if code, reason, _ := closeWith(mal.Conn); code != websocket.ClosePolicyViolation || reason != "token revoked" {
			t.Fatalf("mallory revoked: close %d %q, want 1008 \"token revoked\"", code, reason)
		}
		_ = r.obs.SetReadDeadline(time.Now().Add(testDeadline))
		for seen, left := false, false; !seen || !left; {
			m := r.obs.read(t)
			switch {
			case m.Type == "msg" && string(m.Data) == strconv.Quote(marker):
				seen = true
			case m.Type == "msg" && m.From == mal.welcome.Participant && string(m.Data) == `"held"`:
				if !seen {
					before++
					break
				}
				late++
				t.Logf("trial %d, revoked %d ms after sending: mallory's held msg went out at seq %d, after the marker ann sent once the revocation was answered", i, 2*i, m.Seq)
			case m.Type == "leave" && m.Participant == mal.welcome.Participant:
				left = true
			}
		}
	}
	t.Logf("%d trials: mallory's held msg went before its revocation in %d, after it was answered in %d, nowhere in the rest", trials, before, late)
	if late > 0 {
		t.Errorf("%d of %d revoked newcomers had the msg that waited its turn relayed after their revocation was answered", late, trials)
	}
}

func TestRevokeRequestErrors(t *testing.T) {
	path, _ := writeSecret(t)
	e := startEdge(t, configs.Edge{Auth: configs.EdgeAuth{HMACSecretFile: path}}, nil)
	for _, tc := range []struct {
		name string
		form url.Values
	}{
		{"neither", url.Values{}},
		{"both", url.Values{"user": {"u"}, "nonce": {"AAAAAAAAAAAAAAAA"}}},
		{"nonce not base64url of 96 bits", url.Values{"nonce": {"short"}}},
		{"user not UTF-8", url.Values{"user": {"\xff"}}},
		{"user too long", url.Values{"user": {strings.Repeat("u", 257)}}},
	} {
		if status, body := e.adminPost(t, "/api/tokens/revoke", tc.form); status != http.StatusBadRequest {
			t.Errorf("%s: %d %s, want 400", tc.name, status, body)
		}
	}
	resp, _ := e.get(t, e.admin, "/api/tokens/revoke")
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET /api/tokens/revoke: %d, want 405", resp.StatusCode)
	}
}

// TestRevocationsBounded: entries live only while a token they refuse can
// still be valid, and their number is capped.
func TestRevocationsBounded(t *testing.T) {
	const maxTTL = time.Hour
	held := prometheus.NewGauge(prometheus.GaugeOpts{Name: "held"})
	r := newRevocations(maxTTL, held)
	t0 := time.Unix(1_800_000_000, 0)
	tok := func(user, nonce string, iat time.Time) *TokenClaims {
		return &TokenClaims{User: user, Nonce: nonce, IssuedAt: iat, Expires: iat.Add(maxTTL)}
	}
	if _, err := r.revokeUser("u", t0); err != nil {
		t.Fatal(err)
	}
	// A token the edge takes may claim an issue time up to tokenClockSkew
	// ahead of its clock (its issuer's clock running ahead): one issued a
	// moment before the revocation is refused though it says later.
	if !r.revoked(tok("u", "n1", t0.Add(-maxTTL+time.Second))) || !r.revoked(tok("u", "n1", t0)) || !r.revoked(tok("u", "n1", t0.Add(tokenClockSkew))) {
		t.Error("a token issued before (or in the second of) the revocation, by a clock up to tokenClockSkew ahead, is not refused")
	}
	if r.revoked(tok("u", "n1", t0.Add(tokenClockSkew+time.Second))) || r.revoked(tok("v", "n1", t0)) {
		t.Error("a later token, or another user's, is refused")
	}
	// Known expiry: kept until then; unknown: as long as a token issued
	// by now, by a clock up to tokenClockSkew ahead, may live.
	if until, _ := r.revokeNonce("known", t0.Add(10*time.Minute), t0); !until.Equal(t0.Add(10 * time.Minute)) {
		t.Errorf("nonce with known expiry kept until %s", until)
	}
	if until, _ := r.revokeNonce("unknown", time.Time{}, t0); !until.Equal(t0.Add(tokenClockSkew + maxTTL)) {
		t.Errorf("nonce with unknown expiry kept until %s", until)
	}
	if l := r.list(t0.Add(11 * time.Minute)); len(l.Users) != 1 || len(l.Nonces) != 1 || l.Nonces[0].Nonce != "unknown" {
		t.Errorf("after the known token's expiry: %+v", l)
	}
	// The longest-lived token the unknown nonce may be: issued by a clock
	// tokenClockSkew ahead, for max_token_ttl. While it still verifies, the
	// entries that refuse it are held.
	late := tok("u", "unknown", t0.Add(tokenClockSkew))
	if at := t0.Add(maxTTL); at.Before(late.Expires) {
		if l := r.list(at); len(l.Users) != 1 || len(l.Nonces) != 1 {
			t.Errorf("at %s, a token it refuses valid until %s: %+v", at, late.Expires, l)
		}
	}
	if l := r.list(t0.Add(tokenClockSkew + maxTTL)); len(l.Users) != 0 || len(l.Nonces) != 0 {
		t.Errorf("after tokenClockSkew + max_token_ttl: %+v", l)
	}
	// The cap: full, a new revocation is refused (503) rather than evicting
	// one that still protects; once entries expire there is room again.
	for i := range maxRevocations {
		if _, err := r.revokeNonce(strconv.Itoa(i), time.Time{}, t0); err != nil {
			t.Fatalf("revocation %d: %v", i, err)
		}
	}
	if _, err := r.revokeUser("one-more", t0); !errors.Is(err, errRevocationsFull) {
		t.Fatalf("revocation %d: %v, want errRevocationsFull", maxRevocations+1, err)
	}
	if got := gaugeValue(held); got != maxRevocations {
		t.Errorf("held gauge %v, want %d", got, maxRevocations)
	}
	if _, err := r.revokeUser("one-more", t0.Add(tokenClockSkew+maxTTL)); err != nil {
		t.Fatalf("after expiry: %v", err)
	}
	if got := gaugeValue(held); got != 1 {
		t.Errorf("held gauge %v after expiry, want 1", got)
	}
}

// TestTokenLifetimeOverEdgeMax: an edge with a shorter max_token_ttl
// refuses a token minted for longer, though its signature is good.
func TestTokenLifetimeOverEdgeMax(t *testing.T) {
	path, secret := writeSecret(t)
	e := startEdge(t, configs.Edge{Auth: configs.EdgeAuth{HMACSecretFile: path, MaxTokenTTL: configs.Duration(time.Hour)}}, nil)
	_, resp, err := e.dialV1(t, "s", "token="+mint(t, secret, "s", "u", RoleEditor, 2*time.Hour), nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("2h token on a 1h edge: %v %v, want 401", resp, err)
	}
	e.joinV1(t, "s", "token="+mint(t, secret, "s", "u", RoleEditor, time.Hour), nil)
}

// TestRevokeWithoutAuth: an edge without a secret admits no tokens, and
// says so instead of recording a revocation that does nothing.
func TestRevokeWithoutAuth(t *testing.T) {
	e := startEdge(t, configs.Edge{}, nil)
	if status, body := e.adminPost(t, "/api/tokens/revoke", url.Values{"user": {"u"}}); status != http.StatusConflict || !strings.Contains(body, "hmac_secret_file") {
		t.Fatalf("revoke without auth: %d %s, want 409", status, body)
	}
}

func gaugeValue(g prometheus.Gauge) float64 {
	var m dto.Metric
	_ = g.Write(&m)
	return m.GetGauge().GetValue()
}
