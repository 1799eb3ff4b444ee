package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/fasthttp/websocket"
)

// Browser tests: headless Chromium, driven through the DevTools protocol,
// against real ringlb processes. They skip only when no browser binary is
// found. With RINGLB_SCREENSHOTS=DIR they also write dashboard.png and
// pad.png there (the README's pictures: RINGLB_SCREENSHOTS=$PWD/docs).

// browserWait bounds every wait for the page to reach a state.
const browserWait = 30 * time.Second

// browserPath is $RINGLB_BROWSER, else the first Chromium on PATH.
func browserPath() string {
	if p := os.Getenv("RINGLB_BROWSER"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// newBrowser starts headless Chromium with a fresh profile and returns the
// context of its first tab; the browser stops when the test ends.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	path := browserPath()
	if path == "" {
		t.Skip("no Chromium found (apt-get install chromium, or set RINGLB_BROWSER to a Chrome binary): browser tests skipped")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		// Without these the browser's own background connections (QUIC,
		// component updates, sync) are refused in sandboxed CI networks and
		// it stalls; tests reach loopback only.
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 860),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	// The first action starts the browser and binds it to its context, so
	// it runs on ctx itself (a timeout context would stop the browser when
	// it ends); the test's own deadline bounds it.
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("start %s: %v", path, err)
	}
	return ctx
}

// tab is one page of the browser, with what it wrote to its console (shown
// when the test fails).
type tab struct {
	name string
	ctx  context.Context
	mu   sync.Mutex
	logs []string
}

func newTab(t *testing.T, browser context.Context, name string) *tab {
	t.Helper()
	ctx, cancel := chromedp.NewContext(browser)
	tb := &tab{name: name, ctx: ctx}
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		cancel()
		t.Fatalf("open tab %s: %v", name, err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m, err := range chromedp.Console(ctx) {
			if err != nil {
				return
			}
			tb.mu.Lock()
			tb.logs = append(tb.logs, string(m.Type)+": "+m.Text)
			tb.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		if t.Failed() {
			tb.mu.Lock()
			defer tb.mu.Unlock()
			for _, l := range tb.logs {
				t.Logf("%s console: %s", name, l)
			}
		}
	})
	return tb
}

// do runs actions on the tab, bounded by browserWait.
func (tb *tab) do(t *testing.T, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, browserWait)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		t.Fatalf("%s: %v", tb.name, err)
	}
}

// eval returns the value of a JavaScript expression in the tab.
func (tb *tab) eval(t *testing.T, expr string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, browserWait)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[string](expr))
	if err != nil {
		t.Fatalf("%s: eval %s: %v", tb.name, expr, err)
	}
	return v
}

// waitFor waits until the JavaScript condition holds in the tab; on
// timeout it fails showing the page's state (describe, a JS expression).
func (tb *tab) waitFor(t *testing.T, what, cond, describe string) {
	t.Helper()
	tb.waitForWithin(t, browserWait, what, cond, describe)
}

// waitForWithin is waitFor with another bound (a condition that takes
// wall-clock time to come true, like a minute of history).
func (tb *tab) waitForWithin(t *testing.T, within time.Duration, what, cond, describe string) {
	t.Helper()
	deadline := time.Now().Add(within)
	var err error
	for {
		ctx, cancel := context.WithDeadline(tb.ctx, deadline.Add(5*time.Second))
		_, err = chromedp.Run(ctx, chromedp.Poll[chromedp.Void](cond, chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(time.Until(deadline))))
		cancel()
		// The page's JavaScript context is replaced while a navigation
		// finishes: poll again in the new one.
		if err == nil || !(strings.Contains(err.Error(), "Cannot find context") || strings.Contains(err.Error(), "navigated or closed")) || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		state := "?"
		if describe != "" {
			sctx, scancel := context.WithTimeout(tb.ctx, 5*time.Second)
			state, _ = chromedp.Run(sctx, chromedp.Evaluate[string](describe))
			scancel()
		}
		t.Fatalf("%s: %s: %v; page: %s", tb.name, what, err, state)
	}
}

// screenshot writes the tab's page to $RINGLB_SCREENSHOTS/name, if set.
func (tb *tab) screenshot(t *testing.T, name string, full bool) {
	t.Helper()
	dir := os.Getenv("RINGLB_SCREENSHOTS")
	if dir == "" {
		return
	}
	ctx, cancel := context.WithTimeout(tb.ctx, browserWait)
	defer cancel()
	shot := chromedp.CaptureScreenshot()
	if full {
		shot = chromedp.FullScreenshot(100) // 100: PNG
	}
	png, err := chromedp.Run(ctx, shot)
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s", filepath.Join(dir, name))
}

// jsString is s as a JavaScript string literal.
func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// browserCluster is two balancers, four edges and a gslb, as processes of
// the real binary on free loopback ports, in one gossip cluster.
type browserCluster struct {
	balListen, balAdmin []string
	gslbAdmin           string
	dir, gossip         string // config directory, the seed's gossip address
}

// clusterSection is the cluster: line of a node joining the cluster (or
// seeding it, when gossip is "").
func clusterSection(name, gossip string) string {
	join := ""
	if gossip != "" {
		join = fmt.Sprintf(", join: [%q]", gossip)
	}
	return fmt.Sprintf("cluster: { name: %s, region: east, bind: 127.0.0.1:0%s, profile: local, probe_interval: 200ms, gossip_interval: 100ms }\n", name, join)
}

func startBrowserCluster(t *testing.T, bin string) *browserCluster {
	t.Helper()
	dir := t.TempDir()
	c := &browserCluster{dir: dir}
	gossip := ""
	clusterLine := func(name string) string { return clusterSection(name, gossip) }
	for i := 1; i <= 2; i++ {
		cfg := filepath.Join(dir, fmt.Sprintf("bal%d.yaml", i))
		writeFile(t, cfg, clusterLine(fmt.Sprintf("bal-%d", i))+"balancer: { listen: 127.0.0.1:0, admin: { listen: 127.0.0.1:0 } }\n")
		rec := startProc(t, bin, "balancer", "-config", cfg).waitLog(t, "balancer started")
		c.balListen = append(c.balListen, rec["listen"].(string))
		c.balAdmin = append(c.balAdmin, rec["admin"].(string))
		if gossip == "" {
			gossip = rec["gossip"].(string)
		}
	}
	var edges []*proc // started at once, then waited for
	for i := 1; i <= 4; i++ {
		cfg := filepath.Join(dir, fmt.Sprintf("edge%d.yaml", i))
		writeFile(t, cfg, clusterLine(fmt.Sprintf("edge-%d", i))+"edge: { listen: 127.0.0.1:0, admin: 127.0.0.1:0, drain_timeout: 2s }\n")
		edges = append(edges, startProc(t, bin, "edge", "-config", cfg))
	}
	for _, p := range edges {
		p.waitLog(t, "edge started")
	}
	gcfg := filepath.Join(dir, "gslb.yaml")
	writeFile(t, gcfg, clusterLine("gslb-1")+fmt.Sprintf(`gslb:
  listen: 127.0.0.1:0
  admin: { listen: 127.0.0.1:0 }
  zones: [ { origin: ringlb.test, records: [ "@ 3600 IN SOA ns1 hostmaster 1 7200 3600 1209600 60", "ns1 3600 IN A 127.0.0.1" ] } ]
  monitors: { balancer: { type: http, path: /_ringlb/health, interval: 200ms, timeout: 150ms, rise: 2, fall: 2 } }
  names:
    - name: ide.ringlb.test
      ttl: 30
      failover_ttl: 5
      geo: { east: [127.0.0.1/32], west: [127.0.0.2/32] }
      regions:
        east: { monitor: balancer, failover: [west], members: [ { name: bal-1, address: 127.0.0.1, probe: %q } ] }
        west: { monitor: balancer, failover: [east], members: [ { name: bal-2, address: 127.0.0.2, probe: %q } ] }
`, c.balListen[0], c.balListen[1]))
	c.gslbAdmin = startProc(t, bin, "gslb", "-config", gcfg).waitLog(t, "gslb started")["admin"].(string)
	for _, admin := range c.balAdmin {
		waitRingMembers(t, "http://"+admin+"/api/ring", 4)
	}
	c.gossip = gossip
	return c
}

// TestBrowserPadAndDashboard drives the demo pad and the dashboard in
// headless Chromium against real processes: two pad windows with the same
// session share an edit and see each other (presence 2, a remote cursor);
// after the edge hosting the session is drained through a balancer's admin
// API, both reconnect elsewhere with the text intact and still share edits;
// the dashboard renders the ring, the nodes (the drained edge draining) and
// the gslb pools, shows live counters under traffic, and its serve mode
// control makes the gslb fail a region over.
func TestBrowserPadAndDashboard(t *testing.T) {
	if testing.Short() {
		t.Skip("browser test against the real binary; skipped with -short")
	}
	// Its own processes on ports of their own, its own browser and
	// directories: it waits on them beside the other tests that wait.
	t.Parallel()
	browser := newBrowser(t)
	bin := buildBinary(t)
	c := startBrowserCluster(t, bin)

	// --- the pad: two windows, one session, through the first balancer.
	padURL := "http://" + c.balListen[0] + "/?session=browser-test"
	const padState = `JSON.stringify({status: document.getElementById('status').textContent, edge: document.getElementById('edge').textContent,
		here: document.getElementById('presence-count').textContent, text: document.getElementById('text').value,
		hint: document.getElementById('hint').textContent})`
	connected := `document.getElementById('status').textContent.startsWith('connected')`
	a, b := newTab(t, browser, "pad A"), newTab(t, browser, "pad B")
	for _, p := range []*tab{a, b} {
		p.do(t, chromedp.Navigate(padURL))
		p.waitFor(t, "pad connects", connected, padState)
	}
	for _, p := range []*tab{a, b} {
		p.waitFor(t, "presence shows both windows", `document.getElementById('presence-count').textContent === '2'`, padState)
	}

	typed := "func main() {\n    fmt.Println(\"hello from window A\")\n}\n"
	a.do(t, chromedp.Focus(chromedp.ID("text")), chromedp.SendKeys(chromedp.ID("text"), typed))
	b.waitFor(t, "B sees A's edit", `document.getElementById('text').value === `+jsString(typed), padState)
	// B types at the end of the shared text; A sees it and B's cursor.
	more := "// and B was here"
	b.do(t, chromedp.Evaluate[chromedp.Void](`(t => { t.focus(); t.setSelectionRange(t.value.length, t.value.length); })(document.getElementById('text'))`),
		chromedp.SendKeys(chromedp.ID("text"), more))
	want := typed + more
	a.waitFor(t, "A sees B's edit", `document.getElementById('text').value === `+jsString(want), padState)
	a.waitFor(t, "A shows B's cursor", `document.querySelectorAll('#mirror .caret').length === 1`, padState)
	a.screenshot(t, "pad.png", false)

	// --- drain the edge hosting the session.
	drained := a.eval(t, `document.getElementById('edge').textContent`)
	epoch := a.eval(t, `document.getElementById('epoch').textContent`)
	if other := b.eval(t, `document.getElementById('edge').textContent`); other != drained || drained == "" || drained == "–" {
		t.Fatalf("the two windows are on edges %q and %q", drained, other)
	}
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := postAdmin(client, "http://"+c.balAdmin[0]+"/api/nodes/"+drained+"/drain")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("drain %s: %s", drained, resp.Status)
	}
	moved := connected + ` && document.getElementById('edge').textContent !== ` + jsString(drained)
	for _, p := range []*tab{a, b} {
		p.waitFor(t, "pad reconnects to another edge", moved, padState)
		p.waitFor(t, "text intact after the drain", `document.getElementById('text').value === `+jsString(want), padState)
	}
	t.Logf("session moved from %s to %s; epoch %s → %s (the same when the drain handed the history over, else the pads re-sent the text)",
		drained, a.eval(t, `document.getElementById('edge').textContent`), epoch, a.eval(t, `document.getElementById('epoch').textContent`))
	if n := a.eval(t, `document.getElementById('reconnects').textContent`); n == "0" {
		t.Errorf("pad A counts %s reconnects after the drain", n)
	}
	// Still one session: an edit after the move reaches the other window.
	after := "\n// after the drain"
	a.do(t, chromedp.Evaluate[chromedp.Void](`(t => { t.focus(); t.setSelectionRange(t.value.length, t.value.length); })(document.getElementById('text'))`),
		chromedp.SendKeys(chromedp.ID("text"), after))
	b.waitFor(t, "B sees an edit made after the move", `document.getElementById('text').value === `+jsString(want+after), padState)
	b.waitFor(t, "presence after the move", `document.getElementById('presence-count').textContent === '2'`, padState)

	// Both type at once, A at the start and B at the end: both edits are
	// kept and the windows end with the same text.
	var wg sync.WaitGroup
	for _, e := range []struct {
		p        *tab
		caret    string
		inserted string
	}{{a, "0", "// A first\n"}, {b, "t.value.length", "\n// B last"}} {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(e.p.ctx, browserWait)
			defer cancel()
			// Errors show as the wait below failing.
			_ = chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](`(t => { t.focus(); t.setSelectionRange(`+e.caret+`, `+e.caret+`); })(document.getElementById('text'))`),
				chromedp.SendKeys(chromedp.ID("text"), e.inserted))
		})
	}
	wg.Wait()
	merged := "// A first\n" + want + after + "\n// B last"
	for _, p := range []*tab{a, b} {
		p.waitFor(t, "concurrent edits merged", `document.getElementById('text').value === `+jsString(merged), padState)
	}

	// --- the dashboard, with some traffic to count.
	stopTraffic := startTraffic(t, c.balListen, 12)
	defer stopTraffic()
	const dashState = `JSON.stringify({status: document.getElementById('status').textContent, error: document.getElementById('error').textContent,
		ring: document.querySelectorAll('#ring-table tbody tr[data-edge]').length, nodes: [...document.querySelectorAll('#nodes tbody tr')].map(r => r.dataset.node + ':' + r.innerText.replace(/\s+/g, ' ')),
		gslb: document.getElementById('gslb').innerText.slice(0, 400)})`
	d := newTab(t, browser, "dashboard")
	d.do(t, chromedp.EmulateViewport(1280, 900), chromedp.Navigate("http://"+c.balAdmin[0]+"/"))
	d.waitFor(t, "the ring: three edges left after the drain", `document.querySelectorAll('#ring-table tbody tr[data-edge]').length === 3 &&
		!document.querySelector('#ring-table tbody tr[data-edge=`+jsString(drained)+`]')`, dashState)
	d.waitFor(t, "the nodes: 2 balancers, 4 edges, 1 gslb", `document.querySelectorAll('#nodes tbody tr[data-role=balancer]').length === 2 &&
		document.querySelectorAll('#nodes tbody tr[data-role=edge]').length === 4 && document.querySelectorAll('#nodes tbody tr[data-role=gslb]').length === 1`, dashState)
	d.waitFor(t, "the drained edge shows as draining", `document.querySelector('#nodes tr[data-node=`+jsString(drained)+`]').innerText.includes('draining')`, dashState)
	d.waitFor(t, "live counters: the traffic's sessions and messages", `Number(document.getElementById('c-sessions').textContent) >= 12 &&
		Number(document.getElementById('c-msgs').textContent.replace(/,/g, '')) > 0`, dashState)
	d.waitFor(t, "the gslb pools", `document.querySelectorAll('[data-gslb="gslb-1"] tr[data-member]').length === 2 &&
		document.querySelector('[data-gslb="gslb-1"] tr[data-region="west"]').innerText.includes('serving its own members')`, dashState)

	// Serve mode from the page: bal-2 removed, west fails over to east.
	d.do(t, chromedp.Evaluate[chromedp.Void](`(s => { s.value = 'remove'; s.dispatchEvent(new Event('change')); })(document.querySelector('select[data-mode="bal-2"]'))`))
	d.waitFor(t, "west fails over after bal-2 is removed", `document.querySelector('[data-gslb="gslb-1"] tr[data-region="west"]').innerText.includes('failed over → east')`, dashState)
	d.screenshot(t, "dashboard.png", true)

	// A balancer with an admin token: the page asks for it, keeps it in
	// the tab, and shows the cluster.
	tokenFile := filepath.Join(c.dir, "admin.token")
	writeFile(t, tokenFile, "browser-s3cret-token\n")
	cfg := filepath.Join(c.dir, "bal3.yaml")
	writeFile(t, cfg, clusterSection("bal-3", c.gossip)+fmt.Sprintf("balancer: { listen: 127.0.0.1:0, admin: { listen: 127.0.0.1:0, token_file: %q } }\n", tokenFile))
	admin3 := startProc(t, bin, "balancer", "-config", cfg).waitLog(t, "balancer started")["admin"].(string)
	k := newTab(t, browser, "dashboard with a token")
	k.do(t, chromedp.Navigate("http://"+admin3+"/"))
	k.waitFor(t, "the page asks for the token", `!document.getElementById('token-form').hidden`, dashState)
	k.do(t, chromedp.SendKeys(chromedp.ID("token-input"), "browser-s3cret-token"), chromedp.Click(chromedp.CSS(`#token-form button[type=submit]`)))
	k.waitFor(t, "with the token, the ring and the nodes", `document.querySelectorAll('#ring-table tbody tr[data-edge]').length === 3 &&
		document.querySelectorAll('#nodes tbody tr[data-role=balancer]').length === 3 && sessionStorage.getItem('ringlb.adminToken') === 'browser-s3cret-token'`, dashState)
}

// startTraffic opens sessions (two participants each, raw mode) spread over
// the balancers; one participant of each sends a frame every 100 ms and the
// other reads, until the returned func stops them all.
func startTraffic(t *testing.T, balancers []string, sessions int) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var conns []*websocket.Conn
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	for s := range sessions {
		h := http.Header{"Ctstickiness": {fmt.Sprintf("traffic-%d", s)}}
		var pair [2]*websocket.Conn
		for i := range pair {
			// Right after a drain, views of the ring still converge: a
			// new session may get a 421 or 503 for a moment, and clients
			// try again, as this one does.
			var conn *websocket.Conn
			var resp *http.Response
			var err error
			for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
				if conn, resp, err = d.Dial("ws://"+balancers[(s+i)%len(balancers)]+"/ws", h); err == nil {
					break
				}
			}
			if err != nil {
				cancel()
				for _, c := range conns {
					c.Close()
				}
				if resp != nil {
					body, _ := io.ReadAll(resp.Body)
					err = fmt.Errorf("%w: %s %s %q", err, resp.Status, resp.Header, body)
				}
				t.Fatalf("traffic session %d: %v", s, err)
			}
			pair[i] = conn
			conns = append(conns, conn)
		}
		wg.Go(func() {
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
					pair[0].SetWriteDeadline(time.Now().Add(5 * time.Second))
					if pair[0].WriteMessage(websocket.TextMessage, []byte(strings.Repeat("x", 64))) != nil {
						return
					}
				}
			}
		})
		wg.Go(func() {
			for {
				pair[1].SetReadDeadline(time.Now().Add(time.Minute))
				if _, _, err := pair[1].ReadMessage(); err != nil {
					return // closed by stop
				}
			}
		})
	}
	return func() {
		cancel()
		for _, c := range conns {
			c.Close()
		}
		wg.Wait()
	}
}

// checkDemoPages: the two pages the demo banner sends a new user to answer
// through the demo's fixed ports — the pad through a balancer, the
// dashboard on its admin port with every edge and the gslb's pools.
func checkDemoPages(t *testing.T) {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second}
	for _, url := range []string{"http://127.0.0.1:8080/?session=hello", "http://127.0.0.1:9090/"} {
		resp, err := client.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
			t.Errorf("GET %s: %s %s", url, resp.Status, resp.Header.Get("Content-Type"))
		}
	}
	resp, err := client.Get("http://127.0.0.1:9090/api/cluster")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var view struct {
		Ring struct{ Members []json.RawMessage }
		GSLB []struct {
			Node, Error string
			Names       []json.RawMessage
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&view); err != nil {
		t.Fatal(err)
	}
	if len(view.Ring.Members) != 3 || len(view.GSLB) != 1 || view.GSLB[0].Error != "" || len(view.GSLB[0].Names) != 1 {
		t.Errorf("demo /api/cluster: %d ring members, gslb %+v", len(view.Ring.Members), view.GSLB)
	}
}
