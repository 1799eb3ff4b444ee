package main

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
)

// TestTokenEndToEnd drives the real binary: `ringlb token` mints a token
// for the edge's secret (its nonce on stderr), a real `ringlb edge` admits
// it, admits a token-less join only as a viewer, refuses a spoiled token,
// and after POST /api/tokens/revoke nonce=N closes the holder with 1008
// and refuses the token from then on; a holder is closed when its token
// expires, unless it refreshed it in time.
func TestTokenEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test of the real binary; skipped with -short")
	}
	// Its own edge on ports of its own and its own directory; most of its
	// time is the short-lived token's 5 s running out: it waits beside the
	// other tests that wait.
	t.Parallel()
	bin := buildBinary(t)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "hmac.key"), "0123456789abcdef0123456789abcdef\n")
	cfg := filepath.Join(dir, "edge.yaml")
	writeFile(t, cfg, clusterSection("edge-tok", "")+"edge: { listen: 127.0.0.1:0, admin: 127.0.0.1:0, auth: { hmac_secret_file: hmac.key } }\n")

	mint := func(args ...string) (token, info string, err error) {
		cmd := exec.Command(bin, append([]string{"token", "-config", cfg}, args...)...)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		return strings.TrimSpace(string(out)), stderr.String(), err
	}
	token, info, err := mint("-session", "doc", "-user", "mallory", "-role", "editor")
	if err != nil {
		t.Fatalf("ringlb token: %v\n%s", err, info)
	}
	t.Logf("ringlb token: %s", strings.TrimSpace(info))
	nonce := strings.TrimSuffix(strings.Fields(info)[1], ",")
	if _, info, err := mint("-session", "doc", "-user", "u", "-ttl", "25h"); err == nil || !strings.Contains(info, "at most 24h0m0s") {
		t.Errorf("ringlb token -ttl 25h: %v %s, want a refusal naming max_token_ttl", err, info)
	}

	rec := startProc(t, bin, "edge", "-config", cfg).waitLog(t, "edge started")
	data, admin := rec["listen"].(string), rec["admin"].(string)
	dial := func(query string) (*websocket.Conn, *http.Response, error) {
		d := websocket.Dialer{HandshakeTimeout: 20 * time.Second, Subprotocols: []string{"ringlb.v1"}}
		c, resp, err := d.Dial("ws://"+data+"/ws"+query, http.Header{"Ctstickiness": {"doc"}})
		if err == nil {
			t.Cleanup(func() { c.Close() })
			_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
		}
		return c, resp, err
	}
	readType := func(c *websocket.Conn, typ string) map[string]any {
		t.Helper()
		for {
			var m map[string]any
			if err := c.ReadJSON(&m); err != nil {
				t.Fatalf("waiting for %s: %v", typ, err)
			}
			if m["type"] == typ {
				return m
			}
		}
	}

	holder, resp, err := dial("?token=" + token)
	if err != nil {
		t.Fatalf("join with the minted token: %v %v", resp, err)
	}
	if w := readType(holder, "welcome"); w["user"] != "mallory" {
		t.Fatalf("welcome %v", w)
	}
	anon, resp, err := dial("")
	if err != nil {
		t.Fatalf("token-less join: %v %v", resp, err)
	}
	readType(anon, "welcome")
	if err := anon.WriteJSON(map[string]any{"type": "msg", "data": "no token"}); err != nil {
		t.Fatal(err)
	}
	if m := readType(anon, "error"); m["code"] != "forbidden" {
		t.Fatalf("token-less msg: %v, want error forbidden", m)
	}
	if _, resp, err := dial("?token=" + token + "x"); err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("spoiled token: %v %v, want 401", resp, err)
	}

	req, _ := http.NewRequest(http.MethodPost, "http://"+admin+"/api/tokens/revoke", strings.NewReader(url.Values{"nonce": {nonce}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-Ringlb-Admin", "1")
	rresp, err := (&http.Client{Timeout: 20 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	rresp.Body.Close()
	if rresp.StatusCode != http.StatusOK {
		t.Fatalf("revoke: %d", rresp.StatusCode)
	}
	for {
		_, _, err := holder.ReadMessage()
		if err == nil {
			continue
		}
		if !websocket.IsCloseError(err, websocket.ClosePolicyViolation) {
			t.Fatalf("holder of the revoked token: %v, want close 1008", err)
		}
		break
	}
	if _, resp, err := dial("?token=" + token); err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("revoked token: %v %v, want 401", resp, err)
	}

	// A token's lifetime bounds its holder's: a participant whose token
	// expires is closed with 1008, unless it sent a fresh one before
	// (ringlb.v1's refresh).
	fresh, info, err := mint("-session", "doc", "-user", "ann", "-role", "editor", "-ttl", "1h")
	if err != nil {
		t.Fatalf("ringlb token: %v\n%s", err, info)
	}
	var shortLived [2]*websocket.Conn
	for i := range shortLived {
		short, info, err := mint("-session", "doc", "-user", "ann", "-role", "editor", "-ttl", "5s")
		if err != nil {
			t.Fatalf("ringlb token -ttl 5s: %v\n%s", err, info)
		}
		if shortLived[i], resp, err = dial("?token=" + short); err != nil {
			t.Fatalf("join with a short-lived token: %v %v", resp, err)
		}
	}
	lapsing, refreshed := shortLived[0], shortLived[1]
	if err := refreshed.WriteJSON(map[string]any{"type": "token", "token": fresh}); err != nil {
		t.Fatal(err)
	}
	for _, c := range shortLived {
		if w := readType(c, "welcome"); w["expires"] == nil {
			t.Fatalf("welcome %v: want the token's expiry", w)
		}
	}
	readType(refreshed, "token")
	for {
		_, _, err := lapsing.ReadMessage()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != websocket.ClosePolicyViolation || ce.Text != "token expired" {
			t.Fatalf("holder of an expired token: %v, want close 1008 \"token expired\"", err)
		}
		break
	}
	if err := refreshed.WriteJSON(map[string]any{"type": "msg", "data": "refreshed in time"}); err != nil {
		t.Fatal(err)
	}
	readType(refreshed, "ack")
}

// TestCheckTokenAuthContradiction: `ringlb check` names a config whose
// auth.required and auth.anonymous disagree.
func TestCheckTokenAuthContradiction(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "hmac.key"), "0123456789abcdef0123456789abcdef\n")
	cfg := filepath.Join(dir, "edge.yaml")
	writeFile(t, cfg, "edge:\n  auth: { hmac_secret_file: hmac.key, required: true, anonymous: viewer }\n")
	var out, errOut strings.Builder
	code := run(context.Background(), []string{"check", "-config", cfg}, &out, &errOut)
	if code != 1 || !strings.Contains(errOut.String(), cfg+`:2: edge.auth.required: true means anonymous: deny, but edge.auth.anonymous is "viewer"`) {
		t.Errorf("check: exit %d, stderr:\n%s", code, errOut.String())
	}
}
