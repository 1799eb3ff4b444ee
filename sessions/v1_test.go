package sessions

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/ringlb/ringlb/configs"
)

// env is any server envelope of ringlb.v1, decoded loosely.
type env struct {
	Type         string          `json:"type"`
	Session      string          `json:"session"`
	Participant  string          `json:"participant"`
	User         string          `json:"user"`
	Edge         string          `json:"edge"`
	Seq          uint64          `json:"seq"`
	Epoch        string          `json:"epoch"`
	Participants []memberInfo    `json:"participants"`
	From         string          `json:"from"`
	TS           json.RawMessage `json:"ts"`
	ServerTS     int64           `json:"server_ts"`
	Data         json.RawMessage `json:"data"`
	Reason       string          `json:"reason"`
	Code         string          `json:"code"`
	Message      string          `json:"message"`
	Expires      int64           `json:"expires"`
}

// v1Client is a ringlb.v1 test client.
type v1Client struct {
	*websocket.Conn
	welcome env
}

// dialV1 connects with the ringlb.v1 subprotocol; query is appended to
// /ws (e.g. "resume=3&epoch=E"). It does not read.
func (e *testEdge) dialV1(t testing.TB, key, query string, h http.Header) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	if h == nil {
		h = http.Header{}
	}
	h.Set("ctstickiness", key)
	d := websocket.Dialer{HandshakeTimeout: testDeadline, Subprotocols: []string{protocolV1}}
	u := "ws://" + e.data + "/ws"
	if query != "" {
		u += "?" + query
	}
	c, resp, err := d.Dial(u, h)
	if err == nil {
		t.Cleanup(func() { c.Close() })
		_ = c.SetReadDeadline(time.Now().Add(testDeadline))
	}
	return c, resp, err
}

// twoTalking joins two participants to key's session on e, the first
// having sent msgs msgs (0, 1, ...), each acknowledged and delivered.
func (e *testEdge) twoTalking(t testing.TB, key string, msgs int) (p1, p2 *v1Client) {
	t.Helper()
	p1 = e.joinV1(t, key, "", nil)
	p2 = e.joinV1(t, key, "", nil)
	p1.readType(t, "join")
	for i := range msgs {
		p1.msg(t, i)
		p1.readType(t, "ack")
		p2.readType(t, "msg")
	}
	return p1, p2
}

// joinV1 connects and reads the welcome.
func (e *testEdge) joinV1(t testing.TB, key, query string, h http.Header) *v1Client {
	t.Helper()
	c, resp, err := e.dialV1(t, key, query, h)
	if err != nil {
		t.Fatalf("dial v1: %v (response %v)", err, resp)
	}
	if c.Subprotocol() != protocolV1 {
		t.Fatalf("subprotocol %q", c.Subprotocol())
	}
	e.waitJoined(t)
	v := &v1Client{Conn: c}
	v.welcome = v.read(t)
	if v.welcome.Type != "welcome" {
		t.Fatalf("first frame %+v, want welcome", v.welcome)
	}
	return v
}

func (c *v1Client) read(t testing.TB) env {
	t.Helper()
	kind, data, err := c.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if kind != websocket.TextMessage {
		t.Fatalf("frame kind %d", kind)
	}
	var m env
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatalf("%q: %v", data, err)
	}
	return m
}

// readType reads until a frame of type typ, skipping presence events.
func (c *v1Client) readType(t testing.TB, typ string) env {
	t.Helper()
	for {
		m := c.read(t)
		if m.Type == typ {
			return m
		}
		if m.Type != "join" && m.Type != "leave" {
			t.Fatalf("got %+v while waiting for %s", m, typ)
		}
	}
}

func (c *v1Client) send(t testing.TB, v any) {
	t.Helper()
	b, _ := json.Marshal(v)
	if err := c.WriteMessage(websocket.TextMessage, b); err != nil {
		t.Fatal(err)
	}
}

func (c *v1Client) msg(t testing.TB, data any) {
	t.Helper()
	c.send(t, map[string]any{"type": "msg", "data": data})
}

// leave closes c cleanly and waits until the edge has closed its side.
func (c *v1Client) leave(t testing.TB) {
	t.Helper()
	_ = c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
	closeCode(t, c.Conn)
	_ = c.NetConn().SetReadDeadline(time.Now().Add(testDeadline))
	_, _ = c.NetConn().Read(make([]byte, 1)) // EOF once the edge has left and closed
}

func TestV1WelcomePresenceAckPing(t *testing.T) {
	e := startEdge(t, configs.Edge{}, nil)
	a := e.joinV1(t, "doc", "", nil)
	w := a.welcome
	if w.Session != "doc" || w.Edge != "edge-t" || w.Seq != 0 || w.Epoch == "" || w.Participant == "" ||
		len(w.Participants) != 1 || w.Participants[0].Participant != w.Participant || w.User != w.Participant {
		t.Fatalf("welcome %+v", w)
	}
	b := e.joinV1(t, "doc", "", nil)
	if b.welcome.Epoch != w.Epoch || len(b.welcome.Participants) != 2 || b.welcome.Participant == w.Participant {
		t.Fatalf("second welcome %+v", b.welcome)
	}
	if j := a.read(t); j.Type != "join" || j.Participant != b.welcome.Participant {
		t.Fatalf("join event %+v", j)
	}

	a.msg(t, map[string]any{"op": "insert", "at": 42})
	if ack := a.read(t); ack.Type != "ack" || ack.Seq != 1 {
		t.Fatalf("ack %+v", ack)
	}
	m := b.read(t)
	if m.Type != "msg" || m.Seq != 1 || m.From != w.Participant || string(m.Data) != `{"at":42,"op":"insert"}` || string(m.TS) == "" || string(m.TS) == "0" {
		t.Fatalf("msg %+v data %s", m, m.Data)
	}

	b.send(t, map[string]any{"type": "ping", "ts": 12345})
	if p := b.read(t); p.Type != "pong" || string(p.TS) != "12345" || p.ServerTS <= 0 {
		t.Fatalf("pong %+v", p)
	}
	// Mistakes get an error frame and the connection lives on.
	for _, bad := range []string{`not json`, `{"type":"nope"}`, `{"type":"msg"}`, `{"type":"resume"}`} {
		if err := b.WriteMessage(websocket.TextMessage, []byte(bad)); err != nil {
			t.Fatal(err)
		}
		if m := b.read(t); m.Type != "error" || m.Code != "bad_request" {
			t.Fatalf("%s: %+v", bad, m)
		}
	}

	b.leave(t)
	if l := a.read(t); l.Type != "leave" || l.Participant != b.welcome.Participant {
		t.Fatalf("leave event %+v", l)
	}
}

// Concurrent senders: every receiver sees strictly consecutive sequence
// numbers and the same message under each number; every sender gets an ack
// for each of its messages.
func TestV1TotalOrder(t *testing.T) {
	const senders, each = 4, 100
	// Queues hold everything: this test is about order, not backpressure
	// (a -race reader may lag its burst of 400 frames).
	e := startEdge(t, configs.Edge{SendQueue: 4096}, nil)
	cs := make([]*v1Client, senders)
	for i := range cs {
		cs[i] = e.joinV1(t, "order", "", nil)
	}
	type seen struct {
		bySeq map[uint64]string
		acks  int
		err   error
	}
	results := make([]seen, senders)
	var wg sync.WaitGroup
	for i, c := range cs {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for j := range each {
				b, _ := json.Marshal(map[string]any{"type": "msg", "data": fmt.Sprintf("%d-%d", i, j)})
				if err := c.WriteMessage(websocket.TextMessage, b); err != nil {
					return
				}
			}
		}()
		go func() {
			defer wg.Done()
			r := seen{bySeq: map[uint64]string{}}
			defer func() { results[i] = r }()
			var last uint64
			for len(r.bySeq) < (senders-1)*each || r.acks < each {
				_, data, err := c.ReadMessage()
				if err != nil {
					r.err = err
					return
				}
				var m env
				_ = json.Unmarshal(data, &m)
				switch m.Type {
				case "ack":
					r.acks++
				case "msg":
					if m.Seq <= last {
						r.err = fmt.Errorf("seq %d after %d", m.Seq, last)
						return
					}
					last = m.Seq
					r.bySeq[m.Seq] = string(m.Data)
				}
			}
		}()
	}
	wg.Wait()
	all := map[uint64]string{}
	for i, r := range results {
		if r.err != nil {
			t.Fatalf("client %d: %v", i, r.err)
		}
		for seq, d := range r.bySeq {
			if prev, ok := all[seq]; ok && prev != d {
				t.Fatalf("seq %d is %s for one and %s for another", seq, prev, d)
			}
			all[seq] = d
		}
	}
	if len(all) != senders*each {
		t.Fatalf("%d distinct messages, want %d", len(all), senders*each)
	}
	for seq := uint64(1); seq <= senders*each; seq++ {
		if _, ok := all[seq]; !ok {
			t.Fatalf("seq %d missing", seq)
		}
	}
}

// A participant that drops off while another keeps sending reconnects with
// ?resume= and, between what it saw and what it is replayed, has every
// message exactly once, in order.
func TestV1ResumeLosesNothing(t *testing.T) {
	const total = 300
	// The reader here keeps up on average, not frame by frame: a queue
	// that holds the whole burst keeps backpressure out of this test.
	e := startEdge(t, configs.Edge{SendQueue: 1024}, nil)
	sender := e.joinV1(t, "r", "", nil)
	b := e.joinV1(t, "r", "", nil)
	epoch := b.welcome.Epoch
	go func() { // the sender's acks and presence events, unread they would make it a slow consumer
		for {
			if _, _, err := sender.ReadMessage(); err != nil {
				return
			}
		}
	}()
	sent := make(chan error, 1)
	go func() {
		for i := range total {
			b, _ := json.Marshal(map[string]any{"type": "msg", "data": i})
			if err := sender.WriteMessage(websocket.TextMessage, b); err != nil {
				sent <- err
				return
			}
		}
		sent <- nil
	}()
	var got []string
	var last uint64
	for len(got) < total/3 {
		m := b.read(t)
		if m.Type == "msg" {
			got = append(got, string(m.Data))
			last = m.Seq
		}
	}
	// Drop off abruptly (no close handshake), as a network failure would.
	_ = b.NetConn().Close()

	b2 := e.joinV1(t, "r", fmt.Sprintf("resume=%d&epoch=%s", last, url.QueryEscape(epoch)), nil)
	for len(got) < total {
		m := b2.read(t)
		switch m.Type {
		case "msg":
			if m.Seq != last+1 {
				t.Fatalf("seq %d after %d", m.Seq, last)
			}
			last = m.Seq
			got = append(got, string(m.Data))
		case "join", "leave":
		default:
			t.Fatalf("unexpected %+v", m)
		}
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	for i, d := range got {
		if d != fmt.Sprint(i) {
			t.Fatalf("message %d is %s", i, d)
		}
	}

	// The resume message does the same on an open connection.
	c := e.joinV1(t, "r", "", nil)
	c.send(t, map[string]any{"type": "resume", "after": total - 5, "epoch": epoch})
	for want := uint64(total - 4); want <= total; want++ {
		if m := c.readType(t, "msg"); m.Seq != want {
			t.Fatalf("replayed seq %d, want %d", m.Seq, want)
		}
	}
}

// reset, not a gap: another epoch, a sequence number from the future, or
// one the history (bounded by count and by bytes) no longer reaches.
func TestV1ResetAndHistoryBounds(t *testing.T) {
	e := startEdge(t, configs.Edge{History: configs.History{Messages: 5, Bytes: 1 << 20}}, nil)
	a := e.joinV1(t, "h", "", nil)
	for i := range 10 {
		a.msg(t, i)
		a.readType(t, "ack")
	}
	epoch := a.welcome.Epoch
	cases := []struct {
		query  string
		reason string
		first  uint64 // first replayed seq when no reset
	}{
		{"resume=5&epoch=" + epoch, "", 6},
		{"resume=4&epoch=" + epoch, "history", 0},
		{"resume=10&epoch=" + epoch, "", 11}, // two markers were sequenced since
		{"resume=1000&epoch=" + epoch, "ahead", 0},
		{"resume=8&epoch=other", "epoch", 0},
	}
	for _, tc := range cases {
		c := e.joinV1(t, "h", tc.query, nil)
		c.msg(t, "marker") // sequenced after whatever the join replayed
		var seqs []uint64
		for {
			m := c.read(t)
			if m.Type == "reset" {
				if tc.reason == "" || m.Reason != tc.reason || m.Epoch != epoch {
					t.Fatalf("%s: %+v", tc.query, m)
				}
				tc.reason = ""
				continue
			}
			if m.Type == "ack" {
				break
			}
			if m.Type == "msg" {
				seqs = append(seqs, m.Seq)
			}
		}
		if tc.reason != "" {
			t.Fatalf("%s: no reset", tc.query)
		}
		if tc.first != 0 && (len(seqs) == 0 || seqs[0] != tc.first || seqs[len(seqs)-1] != a.welcome.Seq+10) {
			t.Fatalf("%s: replayed %v", tc.query, seqs)
		}
		if tc.first == 0 && len(seqs) != 0 {
			t.Fatalf("%s: replayed %v", tc.query, seqs)
		}
		c.leave(t)
		// Each marker is one more message in the history.
		a.welcome.Seq++
	}

	// By bytes: 1000-byte messages and a 3500-byte bound keep three.
	e2 := startEdge(t, configs.Edge{History: configs.History{Messages: 100, Bytes: 3500}}, nil)
	b := e2.joinV1(t, "bytes", "", nil)
	big := strings.Repeat("x", 1000)
	for range 6 {
		b.msg(t, big)
		b.readType(t, "ack")
	}
	if list := e2.s.hub.list(); len(list) != 1 || list[0].History != 3 || list[0].Seq != 6 {
		t.Fatalf("sessions %+v", list)
	}
	c := e2.joinV1(t, "bytes", "resume=2&epoch="+b.welcome.Epoch, nil)
	if m := c.read(t); m.Type != "reset" || m.Reason != "history" {
		t.Fatalf("%+v", m)
	}
	c2 := e2.joinV1(t, "bytes", "resume=3&epoch="+b.welcome.Epoch, nil)
	if m := c2.read(t); m.Type != "msg" || m.Seq != 4 || len(m.Data) != 1002 {
		t.Fatalf("%+v", m)
	}
}

// A session whose last participant left is kept for idle_grace (a
// reconnect resumes), then freed (a reconnect gets a new epoch and reset).
func TestV1IdleGrace(t *testing.T) {
	expired := make(chan string, 16)
	e := startEdge(t, configs.Edge{IdleGrace: configs.Duration(time.Hour)}, nil)
	a := e.joinV1(t, "idle", "", nil)
	a.msg(t, "kept")
	a.readType(t, "ack")
	a.leave(t)
	if sessions, _ := e.s.Stats(); sessions != 1 {
		t.Fatalf("idle session not kept: %d", sessions)
	}
	if got := metricValue(t, e.s, "ringlb_edge_sessions_active"); got != 0 {
		t.Fatalf("sessions_active while idle = %v", got)
	}
	b := e.joinV1(t, "idle", "resume=0&epoch="+a.welcome.Epoch, nil)
	if m := b.read(t); m.Type != "msg" || string(m.Data) != `"kept"` {
		t.Fatalf("resume into idle session: %+v", m)
	}
	if b.welcome.Epoch != a.welcome.Epoch {
		t.Fatal("epoch changed within idle_grace")
	}

	e2 := startEdge(t, configs.Edge{IdleGrace: configs.Duration(time.Millisecond)}, func(s *Server) {
		s.hub.expired = func(key string) { expired <- key }
	})
	c := e2.joinV1(t, "idle", "", nil)
	c.msg(t, "gone")
	c.readType(t, "ack")
	c.leave(t)
	select {
	case <-expired:
	case <-time.After(testDeadline):
		t.Fatal("idle session never freed")
	}
	if sessions, _ := e2.s.Stats(); sessions != 0 {
		t.Fatalf("sessions after idle_grace: %d", sessions)
	}
	d := e2.joinV1(t, "idle", "resume=0&epoch="+c.welcome.Epoch, nil)
	if m := d.read(t); m.Type != "reset" || m.Reason != "epoch" || d.welcome.Epoch == c.welcome.Epoch {
		t.Fatalf("after idle_grace: %+v (welcome %+v)", m, d.welcome)
	}
}

// Idle sessions' histories are freed: the heap returns to its baseline.
// Measured in a process of its own (ownProcess): it reads the heap both
// ways, and in the package's process earlier tests' memory let go between
// its baseline and its peak read as histories never held (under -race,
// after a selection of drain and claim tests: 2 MiB grown for 8 MiB held).
func TestV1IdleMemoryReturnsToBaseline(t *testing.T) {
	if !ownProcess(t) {
		return
	}
	const sessions, msgs, size = 40, 50, 4 << 10 // 8 MiB of history
	expired := make(chan string, sessions)
	e := startEdge(t, configs.Edge{IdleGrace: configs.Duration(time.Millisecond), History: configs.History{Messages: 1000, Bytes: 1 << 20}},
		func(s *Server) { s.hub.expired = func(key string) { expired <- key } })
	baseline := heapAfterGC()
	data := strings.Repeat("m", size)
	var clients []*v1Client
	for i := range sessions {
		c := e.joinV1(t, fmt.Sprintf("mem-%d", i), "", nil)
		for range msgs {
			c.msg(t, data)
			c.readType(t, "ack")
		}
		clients = append(clients, c)
	}
	// While the sessions live, their histories show on the heap, so the
	// comparison below is not vacuous.
	held := int64(sessions * msgs * size)
	peak := heapAfterGC()
	if peak-baseline < held {
		t.Fatalf("heap grew by %d bytes holding %d bytes of history", peak-baseline, held)
	}
	for _, c := range clients {
		c.leave(t)
	}
	clients = nil
	for range sessions {
		select {
		case <-expired:
		case <-time.After(testDeadline):
			t.Fatal("idle sessions never freed")
		}
	}
	after := heapAfterGC()
	if after-baseline > held/8 {
		t.Fatalf("heap %d bytes above baseline after every idle session was freed (histories held %d)", after-baseline, held)
	}
	t.Logf("heap: baseline %d, peak %d, after %d (histories held %d)", baseline, peak, after, held)
}

// ownProcessEnv names the test a child process of ownProcess runs.
const ownProcessEnv = "RINGLB_TEST_OWN_PROCESS"

// ownProcess reports whether t runs in a process of its own: if not, it
// runs this test binary again for t alone, fails t with that run's
// output unless it passed, and reports false. For a test that reads the
// process's heap as a whole.
func ownProcess(t *testing.T) bool {
	t.Helper()
	if os.Getenv(ownProcessEnv) == t.Name() {
		return true
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^"+regexp.QuoteMeta(t.Name())+"$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), ownProcessEnv+"="+t.Name())
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: "+t.Name()) {
		t.Fatalf("in a process of its own: %v\n%s", err, out)
	}
	t.Logf("in a process of its own:\n%s", out)
	return false
}

func heapAfterGC() int64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.GC() // the second empties sync.Pools' victim caches
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}

func writeSecret(t *testing.T) (string, []byte) {
	t.Helper()
	secret := []byte("0123456789abcdef0123456789abcdef")
	path := filepath.Join(t.TempDir(), "hmac.key")
	if err := os.WriteFile(path, append(secret, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, secret
}

func mint(t *testing.T, secret []byte, session, user, role string, ttl time.Duration) string {
	t.Helper()
	now := time.Now()
	if ttl < 0 {
		// Expired: issued a lifetime before it expired.
		now = now.Add(ttl - time.Minute)
		ttl = time.Minute
	}
	return mintClaims(t, secret, TokenClaims{Session: session, User: user, Role: role, IssuedAt: now, Expires: now.Add(ttl)})
}

// mintClaims mints c with the default max_token_ttl.
func mintClaims(t *testing.T, secret []byte, c TokenClaims) string {
	t.Helper()
	tok, _, err := MintToken(secret, c, configs.DefaultMaxTokenTTL)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestAuthRefusals(t *testing.T) {
	path, secret := writeSecret(t)
	e := startEdge(t, configs.Edge{Auth: configs.EdgeAuth{HMACSecretFile: path, Required: true}}, nil)
	cases := []struct {
		name  string
		query string
		auth  string
	}{
		{"missing", "", ""},
		{"garbage", "token=abc", ""},
		{"bad signature", "token=" + mint(t, []byte("another secret, 16+ bytes"), "s", "u", RoleEditor, time.Hour), ""},
		{"expired", "token=" + mint(t, secret, "s", "u", RoleEditor, -time.Second), ""},
		{"other session", "token=" + mint(t, secret, "other", "u", RoleEditor, time.Hour), ""},
		{"bad bearer", "", "Bearer " + mint(t, secret, "s", "u", RoleEditor, time.Hour) + "x"},
	}
	for _, tc := range cases {
		h := http.Header{}
		if tc.auth != "" {
			h.Set("Authorization", tc.auth)
		}
		for _, v1 := range []bool{true, false} {
			var resp *http.Response
			var err error
			if v1 {
				_, resp, err = e.dialV1(t, "s", tc.query, h)
			} else {
				h.Set("ctstickiness", "s")
				d := websocket.Dialer{HandshakeTimeout: testDeadline}
				u := "ws://" + e.data + "/ws"
				if tc.query != "" {
					u += "?" + tc.query
				}
				_, resp, err = d.Dial(u, h)
			}
			if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("%s (v1 %v): %v %v", tc.name, v1, resp, err)
			}
		}
	}
	// Valid tokens, in the query and in the header.
	e.joinV1(t, "s", "token="+mint(t, secret, "s", "ann", RoleEditor, time.Hour), nil)
	h := http.Header{"Authorization": {"Bearer " + mint(t, secret, "s", "ann", RoleEditor, time.Hour)}}
	ann2 := e.joinV1(t, "s", "", h)
	if ann2.welcome.User != "ann" {
		t.Fatalf("welcome user %q", ann2.welcome.User)
	}
	// One user with two connections is one user online.
	if got := metricValue(t, e.s, "ringlb_edge_users_online"); got != 1 {
		t.Fatalf("users_online = %v, want 1", got)
	}
}

func TestViewerMsgRefused(t *testing.T) {
	path, secret := writeSecret(t)
	e := startEdge(t, configs.Edge{Auth: configs.EdgeAuth{HMACSecretFile: path}}, nil)
	ed := e.joinV1(t, "doc", "token="+mint(t, secret, "doc", "ed", RoleEditor, time.Hour), nil)
	viewer := e.joinV1(t, "doc", "token="+mint(t, secret, "doc", "vi", RoleViewer, time.Hour), nil)
	anon := e.joinV1(t, "doc", "", nil) // no token: a viewer (the default with a secret)
	viewer.msg(t, "let me write")
	if m := viewer.readType(t, "error"); m.Code != "forbidden" {
		t.Fatalf("viewer msg: %+v", m)
	}
	ed.msg(t, "editor writes")
	// The viewer's message took no sequence number and reached nobody: the
	// first msg the others see is the editor's, seq 1.
	for _, c := range []*v1Client{viewer, anon} {
		if m := c.readType(t, "msg"); m.Seq != 1 || string(m.Data) != `"editor writes"` {
			t.Fatalf("%+v", m)
		}
	}
	if got := metricValue(t, e.s, "ringlb_edge_users_online"); got != 3 {
		t.Fatalf("users_online = %v, want 3", got)
	}
}

func TestTokenRoundTrip(t *testing.T) {
	secret := []byte("0123456789abcdef")
	now := time.Unix(1_800_000_000, 0)
	const maxTTL = 24 * time.Hour
	tok, good, err := MintToken(secret, TokenClaims{Session: "s", User: "u", Role: RoleViewer, IssuedAt: now, Expires: now.Add(time.Minute)}, maxTTL)
	if err != nil {
		t.Fatal(err)
	}
	if !validNonce(good.Nonce) || !good.IssuedAt.Equal(now) {
		t.Fatalf("minted claims %+v", good)
	}
	got, err := VerifyToken(secret, tok, now, maxTTL)
	if err != nil || got != good {
		t.Fatalf("%+v %v, want %+v", got, err, good)
	}
	payload, sig, _ := strings.Cut(tok, ".")
	// signed builds a token of any payload with the right MAC: what only
	// the secret's holder could do.
	signed := func(p string) string {
		enc := base64.RawURLEncoding.EncodeToString([]byte(p))
		return enc + "." + base64.RawURLEncoding.EncodeToString(tokenMAC(secret, enc))
	}
	nonce := good.Nonce
	for _, tc := range []struct {
		name  string
		token string
		now   time.Time
		want  error
	}{
		{"expired", tok, now.Add(time.Minute), ErrTokenExpired},
		{"other secret", mustMint(t, []byte("fedcba9876543210"), good), now, ErrTokenSignature},
		{"no dot", payload + sig, now, ErrTokenMalformed},
		{"tampered payload", "x" + tok, now, ErrTokenSignature},
		{"bad base64", payload + ".!!", now, ErrTokenMalformed},
		{"too long", strings.Repeat("a", maxTokenLength+1), now, ErrTokenMalformed},
		{"old format: no nonce, no iat", signed(`{"s":"s","u":"u","r":"editor","exp":1800000060}`), now, ErrTokenClaims},
		{"no nonce", signed(`{"s":"s","u":"u","r":"editor","n":"","iat":1800000000,"exp":1800000060}`), now, ErrTokenClaims},
		{"short nonce", signed(`{"s":"s","u":"u","r":"editor","n":"abc","iat":1800000000,"exp":1800000060}`), now, ErrTokenClaims},
		{"no iat", signed(`{"s":"s","u":"u","r":"editor","n":"` + nonce + `","exp":1800000060}`), now, ErrTokenClaims},
		{"lifetime over max_token_ttl", signed(`{"s":"s","u":"u","r":"editor","n":"` + nonce + `","iat":1800000000,"exp":1800086401}`), now, ErrTokenClaims},
		{"expires before issued", signed(`{"s":"s","u":"u","r":"editor","n":"` + nonce + `","iat":1800000000,"exp":1799999999}`), now.Add(-time.Hour), ErrTokenClaims},
		{"issued in the future", signed(`{"s":"s","u":"u","r":"editor","n":"` + nonce + `","iat":1800000600,"exp":1800000660}`), now, ErrTokenClaims},
		{"unknown field", signed(`{"s":"s","u":"u","r":"editor","n":"` + nonce + `","iat":1800000000,"exp":1800000060,"admin":true}`), now, ErrTokenMalformed},
	} {
		if _, err := VerifyToken(secret, tc.token, tc.now, maxTTL); err == nil || !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	// A lifetime at max_token_ttl is fine; a second more is refused.
	if _, _, err := MintToken(secret, TokenClaims{Session: "s", User: "u", Role: RoleEditor, IssuedAt: now, Expires: now.Add(maxTTL)}, maxTTL); err != nil {
		t.Errorf("lifetime of max_token_ttl: %v", err)
	}
	for _, bad := range []TokenClaims{
		{User: "u", Role: RoleEditor, Expires: now},
		{Session: "s", Role: RoleEditor, Expires: now},
		{Session: "s", User: "u", Role: "admin", Expires: now},
		{Session: "s", User: "u", Role: RoleEditor},
		{Session: "s", User: "u", Role: RoleEditor, IssuedAt: now, Expires: now.Add(maxTTL + time.Second)},
		{Session: "s", User: "u", Role: RoleEditor, IssuedAt: now, Expires: now.Add(-time.Second)},
		{Session: "s", User: "u", Role: RoleEditor, IssuedAt: now, Expires: now.Add(time.Minute), Nonce: nonce},
		{Session: "\xff", User: "u", Role: RoleEditor, IssuedAt: now, Expires: now.Add(time.Minute)},
		{Session: "s", User: "a\nb", Role: RoleEditor, IssuedAt: now, Expires: now.Add(time.Minute)},
	} {
		if _, _, err := MintToken(secret, bad, maxTTL); err == nil {
			t.Errorf("minted %+v", bad)
		}
	}
}

// mustMint mints c again (a fresh nonce) with another secret.
func mustMint(t *testing.T, secret []byte, c TokenClaims) string {
	t.Helper()
	c.Nonce = ""
	tok, _, err := MintToken(secret, c, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// The close codes hold in ringlb.v1 as in raw mode, plus 1008 for a join
// of the other mode.
func TestV1Closes(t *testing.T) {
	parallel(t)
	e := startEdge(t, configs.Edge{MaxParticipants: 2, MaxMessageBytes: 1024}, nil)
	a := e.joinV1(t, "c", "", nil)
	b := e.joinV1(t, "c", "", nil)
	a.readType(t, "join")

	// 1008: full.
	full, _, err := e.dialV1(t, "c", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if code := closeCode(t, full); code != websocket.ClosePolicyViolation {
		t.Fatalf("full: %d", code)
	}
	// 1008: raw client into a v1 session, and v1 into a raw one.
	raw, _ := e.dial(t, "c")
	if code := closeCode(t, raw); code != websocket.ClosePolicyViolation {
		t.Fatalf("raw into v1: %d", code)
	}
	e.join(t, "raw")
	v1raw, _, err := e.dialV1(t, "raw", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if code := closeCode(t, v1raw); code != websocket.ClosePolicyViolation {
		t.Fatalf("v1 into raw: %d", code)
	}
	// 1009: over max_message_bytes; the other stays.
	a.msg(t, strings.Repeat("x", 1100))
	if code := closeCode(t, a.Conn); code != websocket.CloseMessageTooBig {
		t.Fatalf("too big: %d", code)
	}
	if l := b.readType(t, "leave"); l.Participant != a.welcome.Participant {
		t.Fatalf("%+v", l)
	}
	// 1012: drain timeout.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := e.s.Drain(ctx); err == nil {
		t.Fatal("Drain with a done ctx and a live session returned nil")
	}
	if code := closeCode(t, b.Conn); code != websocket.CloseServiceRestart {
		t.Fatalf("drain: %d", code)
	}
}

// A ringlb.v1 participant that does not read is closed with 1013 and the
// others keep receiving.
func TestV1SlowConsumer1013(t *testing.T) {
	const frames, size = 512, 32 << 10
	e := startEdge(t, configs.Edge{SendQueue: 2, History: configs.History{Messages: 1, Bytes: 1 << 20}}, func(s *Server) {
		s.writeWait = time.Minute
	})
	sender := e.joinV1(t, "s", "", nil)
	fast := e.joinV1(t, "s", "", nil)
	sender.readType(t, "join")
	d := websocket.Dialer{HandshakeTimeout: testDeadline, Subprotocols: []string{protocolV1}, NetDial: func(network, addr string) (net.Conn, error) {
		c, err := net.Dial(network, addr)
		if err == nil {
			err = c.(*net.TCPConn).SetReadBuffer(256 << 10)
		}
		return c, err
	}}
	slow, _, err := d.Dial("ws://"+e.data+"/ws", http.Header{"Ctstickiness": {"s"}})
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	e.waitJoined(t)
	data := strings.Repeat("y", size)
	for i := range frames {
		sender.msg(t, data)
		if m := sender.readType(t, "ack"); m.Seq != uint64(i+1) {
			t.Fatalf("ack %+v", m)
		}
		if m := fast.readType(t, "msg"); m.Seq != uint64(i+1) {
			t.Fatalf("fast got %+v", m)
		}
	}
	_ = slow.SetReadDeadline(time.Now().Add(testDeadline))
	if code := closeCode(t, slow); code != websocket.CloseTryAgainLater {
		t.Fatalf("slow consumer close code %d, want 1013", code)
	}
}

// Drain refuses new v1 sessions and returns once the live ones end.
func TestDrainEndsWhenSessionsEnd(t *testing.T) {
	e := startEdge(t, configs.Edge{}, nil)
	a := e.joinV1(t, "d", "", nil)
	done := make(chan error, 1)
	go func() { done <- e.s.Drain(context.Background()) }()
	<-e.s.Draining()
	if _, resp, err := e.dialV1(t, "new", "", nil); err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("new session while draining: %v %v", resp, err)
	}
	if resp, _ := e.get(t, e.admin, "/healthz"); resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("healthz %d", resp.StatusCode)
	}
	a.leave(t)
	if err := <-done; err != nil {
		t.Fatalf("Drain: %v", err)
	}
}

// A replay longer than the send queue is not a slow consumer: it takes
// one queue slot.
func TestV1ReplayLongerThanQueue(t *testing.T) {
	e := startEdge(t, configs.Edge{SendQueue: 4}, nil)
	a := e.joinV1(t, "long", "", nil)
	for i := range 200 {
		a.msg(t, i)
		a.readType(t, "ack")
	}
	b := e.joinV1(t, "long", "resume=0&epoch="+a.welcome.Epoch, nil)
	for want := uint64(1); want <= 200; want++ {
		if m := b.read(t); m.Type != "msg" || m.Seq != want {
			t.Fatalf("replay: %+v, want seq %d", m, want)
		}
	}
}
