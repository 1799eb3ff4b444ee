package main

import (
	"encoding/json"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/fasthttp/websocket"
)

// A pad opened without ?session= makes up the session's key, and whoever
// knows a key joins its session as an editor (anonymous editors are the
// default): the key is the session's only guard, so it must be as hard to
// guess as the balancer's own assigned keys (128 bits from a CSPRNG), not
// a few characters of Math.random, which anyone could enumerate.
func TestBrowserPadMakesUpAnUnguessableKey(t *testing.T) {
	if testing.Short() {
		t.Skip("browser test; skipped with -short")
	}
	browser := newBrowser(t)
	base := "http://" + strings.TrimSuffix(strings.TrimPrefix(startTestEdge(t), "ws://"), "/ws") + "/"
	const state = `JSON.stringify({status: document.getElementById('status').textContent, url: location.href})`
	wellMade := regexp.MustCompile(`^pad-[0-9a-f]{32}$`)
	seen := map[string]bool{}
	for i := 0; i < 2; i++ {
		p := newTab(t, browser, "pad")
		p.do(t, chromedp.Navigate(base))
		p.waitFor(t, "pad connects", `document.getElementById('status').textContent.startsWith('connected')`, state)
		key := p.eval(t, `new URLSearchParams(location.search).get('session')`)
		t.Logf("made-up key %q (%d characters)", key, len(key))
		if !wellMade.MatchString(key) {
			t.Errorf("made-up key %q: want pad- and 128 random bits in hex", key)
		}
		if seen[key] {
			t.Errorf("two pads made up the same key %q", key)
		}
		seen[key] = true
	}
}

// A pad sends its whole text to the session it joined, and it joins the
// session of the first ctstickiness cookie its browser sends. A cookie of
// that name on a more specific path comes first (RFC 6265, 5.4), and any
// other port of the host — or, with Domain=, any other site of the same
// domain — can set one ("cookie tossing"); another tab's key set between a
// pad's own write and its handshake is read the same way. The pad then
// joined the other session as if it were its own and sent it the victim's
// text. It joins only a session whose welcome names its own key.
func TestBrowserPadSendsNothingToAnotherSession(t *testing.T) {
	if testing.Short() {
		t.Skip("browser test; skipped with -short")
	}
	browser := newBrowser(t)
	wsURL := startTestEdge(t)
	base := "http://" + strings.TrimSuffix(strings.TrimPrefix(wsURL, "ws://"), "/ws") + "/"

	const tossed, secret = "attacker-session", "the victim's secret"
	d := websocket.Dialer{Subprotocols: []string{"ringlb.v1"}, HandshakeTimeout: 10 * time.Second}
	attacker, _, err := d.Dial(wsURL, http.Header{"Ctstickiness": {tossed}})
	if err != nil {
		t.Fatal(err)
	}
	defer attacker.Close()
	type frame struct {
		Type, Participant string
		From              string          `json:"from"`
		Data              json.RawMessage `json:"data"`
	}
	read := func() frame {
		t.Helper()
		_ = attacker.SetReadDeadline(time.Now().Add(browserWait))
		var f frame
		if err := attacker.ReadJSON(&f); err != nil {
			t.Fatalf("attacker's read: %v", err)
		}
		return f
	}
	if f := read(); f.Type != "welcome" {
		t.Fatalf("attacker's first frame %+v", f)
	}

	p := newTab(t, browser, "victim's pad")
	// The tossed cookie: set as a page of any port of this host could.
	p.do(t, chromedp.Navigate(base+"whoami"))
	p.eval(t, `document.cookie = 'ctstickiness=`+tossed+`; path=/ws', document.cookie`)
	p.do(t, chromedp.Navigate(base+"?session=victim-session"),
		chromedp.Focus(chromedp.ID("text")), chromedp.SendKeys(chromedp.ID("text"), secret))

	// The pad's connection reaches the attacker's session (the edge reads
	// the first cookie); what it sends there comes before its leave.
	joined := ""
	for {
		f := read()
		t.Logf("attacker got %s %s %s", f.Type, f.Participant+f.From, f.Data)
		if f.Type == "join" && joined == "" {
			joined = f.Participant
		}
		if f.Type == "msg" && strings.Contains(string(f.Data), secret) {
			t.Fatalf("the victim's pad sent its text to another session: %s", f.Data)
		}
		if f.Type == "msg" {
			// It goes on to send what is typed: wait for the secret.
			t.Errorf("the victim's pad sent a msg to another session")
		}
		if f.Type == "leave" && f.Participant == joined {
			break
		}
	}
	p.waitFor(t, "the pad says why it did not join", `!document.getElementById('hint').hidden && document.getElementById('hint').textContent.includes('another session')`,
		`JSON.stringify({status: document.getElementById('status').textContent, hint: document.getElementById('hint').textContent})`)
}
