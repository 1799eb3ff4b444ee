//go:build linux

package balancer

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ringlb/ringlb/health/healthtest"
)

// TestUpgradeAgainstHAProxy is a differential test of the balancer's
// handling of upgrades (WebSocket and h2c smuggling) against HAProxy 2.6
// (compareUpgrades).
func TestUpgradeAgainstHAProxy(t *testing.T) {
	t.Parallel()
	compareUpgrades(t, framingPeer{name: "HAProxy", program: "haproxy", pkg: "haproxy", start: startDiffHAProxy, lax: haproxyNoTunnel})
}

// haproxyNoTunnel are the cases where HAProxy opens no tunnel and the
// balancer does (framingPeer.lax), with why that is safe.
var haproxyNoTunnel = map[string]string{
	"websocket after 100 Continue":    upgInterimThen101,
	"websocket after 103 Early Hints": upgInterimThen101,
}

// upgInterimThen101: HAProxy 2.6 answers 502 to a 101 that follows an
// interim answer.
const upgInterimThen101 = "a WebSocket server's 101 after a 1xx (any number may come before the answer, RFC 9110 15.2): HAProxy 2.6 answers 502; the balancer passes the 1xx over (handshake) and checks the 101's handshake, so the tunnel is to a WebSocket server"

// TestUpgradeAgainstNginx is the differential test of the balancer's
// handling of upgrades against nginx 1.22 (compareUpgrades), nginx set up
// with its own WebSocket proxying recipe (startDiffNginx), which passes any
// Upgrade the client sends.
func TestUpgradeAgainstNginx(t *testing.T) {
	t.Parallel()
	compareUpgrades(t, framingPeer{name: "nginx", program: "nginx", pkg: "nginx-light", start: startDiffNginx, workers: diffWorkers})
}

const (
	// upgKey is the Sec-WebSocket-Key of the corpus: RFC 6455's sample,
	// answered by wsSampleAccept.
	upgKey = "dGhlIHNhbXBsZSBub25jZQ=="
	// upgOtherKey is a second key, for a request with two.
	upgOtherKey = "AQIDBAUGBwgJCgsMDQ4PEA=="
	// upgAfter is what the client sends after its upgrade request as if a
	// tunnel had opened: requests no front forwards as they are — one for
	// the balancer's reserved path, both with a forged X-Forwarded-For and
	// a header the balancer drops. Reaching the backend unchanged, they
	// passed no front's request handling.
	upgAfter = "GET /_ringlb/secret HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 6.6.6.6\r\nX-Ringlb-Forged: 1\r\n\r\n" +
		"GET /after HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 6.6.6.6\r\nX-Ringlb-Forged: 1\r\n\r\n"
	// upgTunnelLine is the line of the record of the bytes the backend's
	// WebSocket server took after its 101 (a tunnel's, unparsed).
	upgTunnelLine = "(websocket bytes)"
	// upgSwitchedIdle is how long the backend keeps a connection it
	// switched (after its 101) with nothing coming from the front: a front
	// that relays a 101 as an answer whose body lasts until the backend
	// closes (nginx, to a request that asked for no upgrade, or after a
	// 1xx) waits for that. What a front forwards after a switch comes at
	// once; a slow one is missed by the peer's counts only — the
	// balancer's relaying an invalid 101 is seen by the client
	// (invalidSwitch) whenever its bytes come.
	upgSwitchedIdle = time.Second
)

// upgradeCase is one request of the corpus; the backend's answer is chosen
// by its target (upgradeApp).
type upgradeCase struct{ name, req string }

// upgradeCorpus is the upgrade requests of a reviewer hunting WebSocket and
// h2c smuggling. Each goes to the backend's answer the case needs:
//
//   - /ws: a WebSocket server, strict as RFC 6455 4.2 asks (426 to another
//     version, 400 without a key) but for Connection, which it does not
//     need; ?interim= sends a 1xx first; ?accept=wrong|none and
//     ?upgrade=none|h2c make its 101 an invalid one;
//   - /h2c: a server that switches to h2c whenever Upgrade names it;
//   - /status?code=N: the attacker's own backend — a page answering the
//     status a client asks for, a 101 included, its connection staying
//     HTTP (?upgrade= and ?accept=sample add those headers to the 101).
func upgradeCorpus() []upgradeCase {
	const (
		wsHeaders   = "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: " + upgKey + "\r\nSec-WebSocket-Version: 13\r\n"
		wsNoUpgrade = "Sec-WebSocket-Key: " + upgKey + "\r\nSec-WebSocket-Version: 13\r\n"
		h2cSettings = "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"
		h2cHeaders  = "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n" + h2cSettings
	)
	req := func(line, headers string) string { return line + "\r\nHost: h\r\n" + headers + "\r\n" }
	get := func(target, headers string) string { return req("GET "+target+" HTTP/1.1", headers) }
	withBody := func(target, headers string) string {
		return req("POST "+target+" HTTP/1.1", headers+"Content-Length: 3\r\n") + "a=1"
	}
	chunked := func(target, headers string) string {
		return req("POST "+target+" HTTP/1.1", headers+"Transfer-Encoding: chunked\r\n") + "3\r\na=1\r\n0\r\n\r\n"
	}
	expect := func(target, headers string) string {
		return req("POST "+target+" HTTP/1.1", headers+"Expect: 100-continue\r\nContent-Length: 3\r\n") + "a=1"
	}
	return []upgradeCase{
		// WebSocket: the baseline, and refusals after which the client
		// talks on as if a tunnel were open.
		{"websocket", get("/ws", wsHeaders)},
		{"websocket after 100 Continue", get("/ws?interim=100", wsHeaders)},
		{"websocket after 103 Early Hints", get("/ws?interim=103", wsHeaders)},
		{"version 8 refused 426", get("/ws", strings.Replace(wsHeaders, "Version: 13", "Version: 8", 1))},
		{"no key refused 400", get("/ws", "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n")},
		{"wrong path refused 404", get("/status?code=404", wsHeaders)},
		{"refused with 200", get("/status?code=200", wsHeaders)},
		{"refused with 426", get("/status?code=426", wsHeaders)},
		{"refused with 400", get("/status?code=400", wsHeaders)},

		// 101s that switch to no WebSocket.
		{"bare 101", get("/status?code=101", wsHeaders)},
		{"101 upgrade websocket without accept", get("/status?code=101&upgrade=websocket", wsHeaders)},
		{"101 with a wrong accept", get("/ws?accept=wrong", wsHeaders)},
		{"101 without accept", get("/ws?accept=none", wsHeaders)},
		{"101 with a second, wrong accept", get("/ws?accept=twice", wsHeaders)},
		{"101 to the second of two keys", get("/ws", wsHeaders+"Sec-WebSocket-Key: "+upgOtherKey+"\r\n")},
		{"101 without Upgrade", get("/ws?upgrade=none", wsHeaders)},
		{"101 naming h2c with the accept", get("/ws?upgrade=h2c", wsHeaders)},
		{"101 to an upgrade without key", get("/status?code=101&upgrade=websocket", "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n")},
		{"101 with the accept to an upgrade without key", get("/status?code=101&upgrade=websocket&accept=sample", "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n")},
		{"bare 101 after 100 Continue", get("/status?code=101&interim=100", wsHeaders)},
		{"101 to a GET without upgrade", get("/status?code=101", "")},
		{"101 with the accept to a GET without upgrade", get("/status?code=101&upgrade=websocket&accept=sample", "")},

		// The request's spelling.
		{"Upgrade: WebSocket", get("/ws", strings.Replace(wsHeaders, "websocket", "WebSocket", 1))},
		{"Upgrade websocket without Connection", get("/ws", "Upgrade: websocket\r\n"+wsNoUpgrade)},
		{"Connection upgrade without Upgrade", get("/ws", "Connection: Upgrade\r\n"+wsNoUpgrade)},
		{"Connection upgrade without Upgrade, bare 101", get("/status?code=101&upgrade=websocket", "Connection: Upgrade\r\n"+wsNoUpgrade)},
		{"two Upgrade headers, websocket then h2c", get("/ws", wsHeaders+"Upgrade: h2c\r\n")},
		{"websocket on HTTP/1.0", req("GET /ws HTTP/1.0", wsHeaders)},
		{"websocket POST with a body", withBody("/ws", wsHeaders)},
		{"websocket POST chunked", chunked("/ws", wsHeaders)},
		{"websocket POST Expect 100-continue", expect("/ws", wsHeaders)},

		// h2c: no front is to open a tunnel for it.
		{"h2c", get("/h2c", h2cHeaders)},
		{"h2c, Connection: Upgrade only", get("/h2c", "Connection: Upgrade\r\nUpgrade: h2c\r\n"+h2cSettings)},
		{"h2c to a bare 101", get("/status?code=101&upgrade=h2c", h2cHeaders)},
		{"Upgrade: websocket, h2c", get("/h2c", strings.Replace(wsHeaders, "websocket", "websocket, h2c", 1)+h2cSettings)},
		{"Upgrade: h2c, websocket", get("/h2c", strings.Replace(wsHeaders, "websocket", "h2c, websocket", 1)+h2cSettings)},
		{"UPGRADE: H2C", get("/h2c", "CONNECTION: UPGRADE, HTTP2-SETTINGS\r\nUPGRADE: H2C\r\n"+h2cSettings)},
		{"Upgrade: h2c with whitespace", get("/h2c", "Connection:  upgrade ,HTTP2-Settings\r\nUpgrade: \t h2c \t\r\n"+h2cSettings)},
		{"h2c without Connection", get("/h2c", "Upgrade: h2c\r\n"+h2cSettings)},
		{"Connection upgrade without Upgrade to h2c", get("/h2c", "Connection: Upgrade, HTTP2-Settings\r\n"+h2cSettings)},
		{"two Upgrade headers, websocket then h2c, to h2c", get("/h2c", wsHeaders+"Upgrade: h2c\r\n"+h2cSettings)},
		{"two Upgrade headers, h2c then websocket, to h2c", get("/h2c", "Upgrade: h2c\r\n"+wsHeaders+h2cSettings)},
		{"h2c on HTTP/1.0", req("GET /h2c HTTP/1.0", h2cHeaders)},
		{"h2c POST with a body", withBody("/h2c", h2cHeaders)},
		{"h2c POST chunked", chunked("/h2c", h2cHeaders)},
		{"h2c POST Expect 100-continue", expect("/h2c", h2cHeaders)},
	}
}

// upgradeApp is the backend's application behind both fronts (see
// upgradeCorpus for what it answers). It notes, per request it read, the
// 101 it sent (valid: a WebSocket handshake's for the request's key) and
// whether the request came after a 101 of its own on its connection — when
// the connection had switched and the request's bytes passed the front
// unparsed. After a valid 101 it is a WebSocket server that echoes what
// it gets, recorded as one upgTunnelLine request whose body is the bytes;
// after any other 101 its connection stays HTTP, as the page that answered
// it does.
type upgradeApp struct {
	b *diffBackend

	mu       sync.Mutex
	switched map[int]bool   // by seq: read after a 101 on its connection
	sent101  map[int]string // by seq: "valid" or "invalid"
}

func newUpgradeApp(b *diffBackend) *upgradeApp {
	a := &upgradeApp{b: b, switched: map[int]bool{}, sent101: map[int]string{}}
	b.serveConn = a.serve
	return a
}

func (a *upgradeApp) serve(front string, c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	switched := false
	for {
		_ = c.SetDeadline(time.Now().Add(healthtest.Patience))
		if switched {
			_ = c.SetReadDeadline(time.Now().Add(upgSwitchedIdle))
		}
		r, ok := readSeenRequest(br)
		if r.line == "" && !ok {
			return
		}
		a.b.record(front, &r, ok)
		if !ok {
			return
		}
		answer, sent101 := upgradeAppAnswer(r)
		a.mu.Lock()
		a.switched[r.seq] = switched
		if sent101 != "" {
			a.sent101[r.seq] = sent101
		}
		a.mu.Unlock()
		if _, err := io.WriteString(c, answer); err != nil {
			return
		}
		switch sent101 {
		case "valid":
			// A WebSocket server: bytes, echoed, until the peer ends
			// or sends nothing for upgSwitchedIdle.
			var (
				got bytes.Buffer
				buf [4096]byte
			)
			for {
				_ = c.SetReadDeadline(time.Now().Add(upgSwitchedIdle))
				n, err := br.Read(buf[:])
				got.Write(buf[:n])
				if _, werr := c.Write(buf[:n]); err != nil || werr != nil {
					break
				}
			}
			if got.Len() > 0 {
				a.b.record(front, &seenRequest{line: upgTunnelLine, body: got.String()}, false)
			}
			return
		case "invalid":
			switched = true
		}
	}
}

// upgradeAppAnswer is the answer to r and the 101 it is ("" when none).
func upgradeAppAnswer(r seenRequest) (answer, sent101 string) {
	_, rest, _ := strings.Cut(r.line, " ")
	target, _, _ := strings.Cut(rest, " ")
	u, err := url.Parse(target)
	if err != nil {
		return upgradeAppStatus(r.seq, 400), ""
	}
	hdr := map[string][]string{}
	for line := range strings.SplitSeq(r.head, "\n") {
		if name, value, ok := strings.Cut(line, ":"); ok {
			k := strings.ToLower(strings.TrimSpace(name))
			hdr[k] = append(hdr[k], strings.TrimSpace(value))
		}
	}
	upgrades := func(proto string) bool {
		for _, v := range hdr["upgrade"] {
			for tok := range strings.SplitSeq(v, ",") {
				if strings.EqualFold(strings.TrimSpace(tok), proto) {
					return true
				}
			}
		}
		return false
	}
	last := func(name string) string {
		if vs := hdr[name]; len(vs) > 0 {
			return vs[len(vs)-1]
		}
		return ""
	}
	q := u.Query()
	var interim string
	switch q.Get("interim") {
	case "100":
		interim = "HTTP/1.1 100 Continue\r\n\r\n"
	case "103":
		interim = "HTTP/1.1 103 Early Hints\r\nLink: </app.js>; rel=preload\r\n\r\n"
	}
	switch u.Path {
	case "/ws":
		switch {
		case !upgrades("websocket"):
			return interim + upgradeAppStatus(r.seq, 426), ""
		case last("sec-websocket-version") != "13":
			return interim + strings.Replace(upgradeAppStatus(r.seq, 426), "\r\n", "\r\nSec-WebSocket-Version: 13\r\n", 1), ""
		case last("sec-websocket-key") == "":
			return interim + upgradeAppStatus(r.seq, 400), ""
		}
		accept, up := wsAccept(last("sec-websocket-key")), "websocket"
		valid := "valid"
		switch q.Get("accept") {
		case "wrong":
			accept, valid = wsAccept("another key"), "invalid"
		case "none":
			accept, valid = "", "invalid"
		case "twice":
			accept, valid = accept+"\r\nSec-WebSocket-Accept: "+wsAccept("another key"), "invalid"
		}
		switch q.Get("upgrade") {
		case "none":
			up, valid = "", "invalid"
		case "h2c":
			up, valid = "h2c", "invalid"
		}
		head := "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
		if up != "" {
			head += "Upgrade: " + up + "\r\n"
		}
		if accept != "" {
			head += "Sec-WebSocket-Accept: " + accept + "\r\n"
		}
		return interim + head + "\r\n", valid
	case "/h2c":
		if upgrades("h2c") {
			return interim + "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n", "invalid"
		}
	case "/status":
		code := 200
		_, _ = fmt.Sscanf(q.Get("code"), "%d", &code)
		if code != 101 {
			return interim + upgradeAppStatus(r.seq, code), ""
		}
		head := "HTTP/1.1 101 Switching Protocols\r\n"
		if up := q.Get("upgrade"); up != "" {
			head += "Connection: Upgrade\r\nUpgrade: " + up + "\r\n"
		}
		if q.Get("accept") == "sample" {
			head += "Sec-WebSocket-Accept: " + wsSampleAccept + "\r\n"
		}
		return interim + head + "\r\n", "invalid"
	}
	return interim + upgradeAppStatus(r.seq, 200), ""
}

// upgradeAppStatus is a final answer with status code, carrying seq.
func upgradeAppStatus(seq, code int) string {
	body := fmt.Sprintf("status %d", code)
	return fmt.Sprintf("HTTP/1.1 %d %s\r\nContent-Length: %d\r\nX-Seq: %d\r\n\r\n%s", code, http.StatusText(code), len(body), seq, body)
}

// upgradeOutcome is what one front did with one case.
type upgradeOutcome struct {
	answers  []diffAnswer // every answer the client read up to a 101 and after a refusal, 1xx included
	switched bool         // the client read a 101
	after    string       // the bytes the client read after the 101's head
	stalled  bool         // the front did not close the connection within healthtest.Patience
	backend  []seenRequest
	// Of the backend's records, by seq: read after its 101, and its 101.
	afterSwitch map[int]bool
	sent101     map[int]string
}

// upgradeExchange sends req to addr followed by upgAfter, in the
// same write (pipelined) or once the answer came (wait), shuts the write
// side and reads until the front closes.
func upgradeExchange(t *testing.T, addr, req string, wait bool) upgradeOutcome {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(healthtest.Patience))
	var o upgradeOutcome
	br := bufio.NewReader(c)
	write := func(s string) {
		if _, err := io.WriteString(c, s); err != nil {
			t.Logf("write: %v", err) // a front may close before it took all
		}
	}
	if !wait {
		write(req + upgAfter)
	} else {
		write(req)
		// The answer, past any interim one (a 101 is the answer).
		for {
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				break
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			o.note(resp)
			if resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
				break
			}
		}
		write(upgAfter)
	}
	_ = c.(*net.TCPConn).CloseWrite()
	rest, err := io.ReadAll(br)
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		// The front neither answered nor closed: what it did is in the
		// backend's records.
		o.stalled = true
	case err != nil && !isReset(err) && !errors.Is(err, io.ErrUnexpectedEOF):
		t.Fatalf("reading the answers from %s: %v (got %q)", addr, err, rest)
	}
	if o.switched {
		o.after = string(rest)
		return o
	}
	rbr := bufio.NewReader(bytes.NewReader(rest))
	for {
		if _, err := rbr.Peek(1); err != nil {
			break
		}
		resp, err := http.ReadResponse(rbr, nil)
		if err != nil {
			all, _ := io.ReadAll(rbr)
			o.after = string(all)
			break
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if o.note(resp) {
			all, _ := io.ReadAll(rbr)
			o.after = string(all)
			break
		}
	}
	return o
}

// note adds resp to the answers and reports whether it is a 101.
func (o *upgradeOutcome) note(resp *http.Response) bool {
	seq := 0
	_, _ = fmt.Sscanf(resp.Header.Get("X-Seq"), "%d", &seq)
	o.answers = append(o.answers, diffAnswer{status: resp.StatusCode, line: resp.Proto + " " + resp.Status, seq: seq})
	if resp.StatusCode == http.StatusSwitchingProtocols {
		o.switched = true
	}
	return o.switched
}

// isAfter: r is one of upgAfter's requests (or the bytes of them a
// WebSocket server took).
func isAfter(r seenRequest) bool {
	return strings.Contains(r.line, "/_ringlb/secret") || strings.Contains(r.line, " /after ") || r.line == upgTunnelLine
}

// bypassed reports whether r reached the backend without the front's
// request handling: read after a 101 on its connection, or without the
// front's X-Forwarded-For entry (the client's address, 127.0.0.1) last;
// through the balancer (ringlb) also when it is for its reserved path or
// carries an X-Ringlb- header of the client's.
func (o upgradeOutcome) bypassed(r seenRequest, ringlb bool) bool {
	if r.line == upgTunnelLine {
		return false // a WebSocket server's bytes, never parsed as HTTP
	}
	if o.afterSwitch[r.seq] {
		return true
	}
	xff := ""
	for line := range strings.SplitSeq(r.head, "\n") {
		if name, value, ok := strings.Cut(line, ":"); ok && strings.EqualFold(strings.TrimSpace(name), "X-Forwarded-For") {
			xff = value
		}
	}
	entries := strings.Split(xff, ",")
	if strings.TrimSpace(entries[len(entries)-1]) != "127.0.0.1" {
		return true
	}
	return ringlb && (strings.Contains(r.line, " /_ringlb/") || strings.Contains(strings.ToLower(r.head), "x-ringlb-forged:"))
}

// smuggled are the requests of upgAfter that reached the backend bypassing
// the front.
func (o upgradeOutcome) smuggled(ringlb bool) []string {
	var s []string
	for _, r := range o.backend {
		if o.bypassed(r, ringlb) {
			s = append(s, r.line)
		}
	}
	return s
}

// tunnel reports whether the front opened a tunnel: the client read a 101
// and bytes it sent after its request reached the backend unparsed.
func (o upgradeOutcome) tunnel() bool {
	if !o.switched {
		return false
	}
	for _, r := range o.backend {
		if r.line == upgTunnelLine || o.afterSwitch[r.seq] {
			return true
		}
	}
	return false
}

// opened reports whether the front opened a tunnel, or relayed a
// WebSocket handshake's 101 and so would have: bytes pipelined behind the
// request may be lost in the switch (HAProxy drops them at times).
func (o upgradeOutcome) opened() bool {
	return o.tunnel() || o.switched && !o.invalidSwitch()
}

// invalidSwitch reports whether the client read a 101 the backend sent as
// no WebSocket handshake's: a front relaying it told the client a tunnel
// opened to a connection that stays HTTP (or speaks h2c).
func (o upgradeOutcome) invalidSwitch() bool {
	if !o.switched {
		return false
	}
	for _, r := range o.backend {
		if o.sent101[r.seq] == "invalid" {
			return true
		}
	}
	return false
}

// unsafe is why the outcome is unsafe, "" when it is not.
func (o upgradeOutcome) unsafe(ringlb bool) string {
	var why []string
	if s := o.smuggled(ringlb); len(s) > 0 {
		why = append(why, fmt.Sprintf("requests reached the backend bypassing the front: %q", s))
	}
	if o.invalidSwitch() {
		why = append(why, "relayed a 101 that switches to no WebSocket")
	}
	return strings.Join(why, "; ")
}

// level orders outcomes from strictest: 0 the upgrade request was not
// forwarded, 1 forwarded, 2 the client read an invalid 101 (no tunnel), 3
// a tunnel opened (opened).
func (o upgradeOutcome) level() int {
	switch {
	case o.opened():
		return 3
	case o.switched:
		return 2
	}
	for _, r := range o.backend {
		if !isAfter(r) {
			return 1
		}
	}
	return 0
}

// finalStatus is the first final answer's status, 101 counted; 0 if none.
func (o upgradeOutcome) finalStatus() int {
	for _, a := range o.answers {
		if a.status >= 200 || a.status == http.StatusSwitchingProtocols {
			return a.status
		}
	}
	return 0
}

func (o upgradeOutcome) String() string {
	var b strings.Builder
	writeAnswers(&b, o.answers)
	if o.stalled {
		b.WriteString(" STALLED")
	}
	if o.after != "" {
		fmt.Fprintf(&b, " then %q", trimForLog(o.after))
	}
	b.WriteString("; backend read [")
	for i, r := range o.backend {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%q", trimForLog(r.line))
		if r.line == upgTunnelLine {
			fmt.Fprintf(&b, " %q", trimForLog(r.body))
		}
		if o.afterSwitch[r.seq] {
			b.WriteString(" AFTER ITS 101")
		}
		if s := o.sent101[r.seq]; s != "" {
			b.WriteString(" answered with an " + s + " 101")
		}
	}
	b.WriteString("]")
	return b.String()
}

// compareUpgrades is a differential test of the balancer's upgrade
// handling against peer, as a reviewer hunting WebSocket smuggling and h2c
// smuggling would write it. Each case of upgradeCorpus goes to the peer
// and to a balancer (one static edge), both in front of the same
// upgradeApp, followed by upgAfter's requests — in the same write, and
// again once the answer came. Asserted is safety, not statuses: through
// the balancer no request reaches the backend bypassing its request
// handling (upgAfter's carry what it refuses and drops), no 101 that
// switches to no WebSocket reaches the client, and no tunnel opens that
// the peer did not open (but for peer.lax's cases, each with why that is
// safe). Where the balancer is stricter or answers
// otherwise, and where the peer is unsafe, the test logs it (go test -v).
func compareUpgrades(t *testing.T, peer framingPeer) {
	bin := findSbinBinary(peer.program)
	if bin == "" {
		t.Skipf("%s not installed (apt-get install -y %s): no differential run", peer.program, peer.pkg)
	}
	backend := startDiffBackend(t)
	app := newUpgradeApp(backend)
	settle := func(t *testing.T, o *upgradeOutcome, front string, closeIdle func()) {
		o.backend = backend.settle(t, front, closeIdle)
		app.mu.Lock()
		defer app.mu.Unlock()
		o.afterSwitch, o.sent101 = map[int]bool{}, map[int]string{}
		for _, r := range o.backend {
			o.afterSwitch[r.seq], o.sent101[r.seq] = app.switched[r.seq], app.sent101[r.seq]
		}
	}
	// Each of peer.workers workers has a peer and a balancer of its own in
	// front of the backend (its listeners "peer-k" and "ringlb-k"), and
	// goes through its share of the corpus: the backend waits
	// upgSwitchedIdle on each connection it switched that a peer keeps
	// open, and case after case those waits were most of the test.
	type pair struct {
		peerAddr, peerFront, ringlbFront string
		cb                               *clusterBalancer
	}
	workers := make([]pair, max(peer.workers, 1))
	for k := range workers {
		w := pair{peerFront: fmt.Sprintf("peer-%d", k), ringlbFront: fmt.Sprintf("ringlb-%d", k)}
		w.peerAddr = peer.start(t, bin, backend.listen(t, w.peerFront))
		w.cb = startDiffBalancer(t, backend.listen(t, w.ringlbFront))
		workers[k] = w
		// Each front answers before the corpus starts.
		for _, f := range []struct{ addr, front string }{{w.peerAddr, w.peerFront}, {w.cb.addr, w.ringlbFront}} {
			if got := sendRaw(t, f.addr, diffSecond); len(got.answers) != 1 || got.answers[0].status != 200 {
				t.Fatalf("%s does not answer: %+v", f.addr, got)
			}
			backend.settle(t, f.front, w.cb.bal.edges.closeIdle)
		}
	}

	type job struct {
		c    upgradeCase
		wait bool
	}
	var jobs []job
	for _, c := range upgradeCorpus() {
		for _, wait := range []bool{false, true} {
			jobs = append(jobs, job{c, wait})
		}
	}
	start := time.Now()
	var (
		mu                                                                 sync.Mutex // the counts
		cases, alike, stricter, laxer, otherwise, unsafeRinglb, unsafePeer int
	)
	diffShards(len(workers), len(jobs), func(k, j int) {
		c, wait, w := jobs[j].c, jobs[j].wait, workers[k]
		name := c.name + "/pipelined"
		if wait {
			name = c.name + "/after the answer"
		}
		t.Run(name, func(t *testing.T) {
			p := upgradeExchange(t, w.peerAddr, c.req, wait)
			settle(t, &p, w.peerFront, nil)
			r := upgradeExchange(t, w.cb.addr, c.req, wait)
			settle(t, &r, w.ringlbFront, w.cb.bal.edges.closeIdle)
			mu.Lock()
			defer mu.Unlock()
			cases++
			t.Logf("%-8s %s", peer.name+":", p)
			t.Logf("%-8s %s", "ringlb:", r)

			if why := r.unsafe(true); why != "" {
				unsafeRinglb++
				t.Errorf("ringlb unsafe: %s", why)
			}
			if why := p.unsafe(false); why != "" {
				unsafePeer++
				t.Logf("%s UNSAFE: %s", peer.name, why)
			}
			switch {
			case r.opened() && !p.opened() && peer.lax[c.name] != "":
				t.Logf("DIFF ringlb opened a tunnel %s did not, harmless: %s", peer.name, peer.lax[c.name])
			case r.opened() && !p.opened():
				t.Errorf("ringlb opened a tunnel %s did not", peer.name)
			}
			switch rl, pl := r.level(), p.level(); {
			case rl < pl:
				stricter++
				t.Logf("DIFF ringlb stricter: %s went to level %d (answer %d), ringlb %d (answer %d)", peer.name, pl, p.finalStatus(), rl, r.finalStatus())
			case rl > pl:
				laxer++
				t.Logf("DIFF %s stricter: %s went to level %d (answer %d), ringlb %d (answer %d)", peer.name, peer.name, pl, p.finalStatus(), rl, r.finalStatus())
			case p.finalStatus() != r.finalStatus():
				otherwise++
				t.Logf("DIFF answered otherwise: %s %d, ringlb %d", peer.name, p.finalStatus(), r.finalStatus())
			default:
				alike++
			}
		})
	})
	t.Logf("%d cases in %v: %d alike, %d ringlb stricter, %d %s stricter, %d answered otherwise; unsafe outcomes: ringlb %d, %s %d",
		cases, time.Since(start).Round(time.Millisecond), alike, stricter, laxer, peer.name, otherwise, unsafeRinglb, peer.name, unsafePeer)
}
