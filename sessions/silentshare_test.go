package sessions

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health"
	"github.com/ringlb/ringlb/health/healthtest"
)

// A connection that carries no participant holds a slot of max_connections
// too: before a request arrives (the request timeout is 30 s), while its
// head trickles in, and idle between requests (a minute). Anyone reaches the
// data port, so one address could hold all of them and refuse the
// balancers' clients — again and again, as each connection times out. A
// connection counts against its address's share (edge.max_direct_per_ip)
// whenever it carries no request and nothing a member signed. Idle after an
// answer beyond the share it is closed; before its request beyond the
// share it is admitted while the edge has room (a balancer's burst of
// upgrades from one address is not refused), and ended to make room for
// the next connection once the edge has none: the attack keeps its share,
// and every balancer client joins.
func TestIdleConnectionsCannotShutBalancerClientsOut(t *testing.T) {
	for _, tt := range []struct {
		name string
		// hold opens one connection the way the attack does, and says
		// whether the edge took it.
		hold func(t *testing.T, c net.Conn) bool
		// kept is how many of the attack's connections the edge keeps
		// while it has room.
		kept int
		// answered: the connections the edge ends are answered 503 (a
		// request had begun), not closed (they sent nothing, or idle and
		// answered).
		answered bool
	}{
		{"silent", func(t *testing.T, c net.Conn) bool { return true }, shareMaxConns, false},
		{"a head trickling in", func(t *testing.T, c net.Conn) bool {
			_, err := io.WriteString(c, "GET /whoami HTTP/1.1\r\n")
			return err == nil
		}, shareMaxConns, true},
		{"idle after an answer", func(t *testing.T, c net.Conn) bool {
			code, err := getWhoami(c, bufio.NewReader(c))
			return err == nil && code == http.StatusOK
		}, shareDirect, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e, bal := startShareEdgeWithBalancer(t)

			// The attack: one address (not the balancer's) fills the data
			// port.
			attack := make([]net.Conn, shareMaxConns)
			for i := range attack {
				attack[i] = dialFrom(t, e.data, 2)
				tt.hold(t, attack[i])
			}
			held := dataOpen(e)
			defer func() {
				if t.Failed() {
					t.Logf("the edge holds %d of the attack's %d connections", held, shareMaxConns)
				}
			}()
			waitFor(t, "the edge keeping what it keeps while it has room", func() bool {
				held = dataOpen(e)
				return held == tt.kept
			})
			// The test reads each of the attack's connections to its end
			// (or the deadline): ended gets the first line of each the
			// edge ended ("" for none).
			ended := make(chan string, shareMaxConns)
			for _, c := range attack {
				go func() {
					br := bufio.NewReader(c)
					line, _ := br.ReadString('\n')
					if _, err := io.Copy(io.Discard, br); err == nil || !errors.Is(err, os.ErrDeadlineExceeded) {
						ended <- line
					}
				}()
			}

			// Each joins at once: the edge ends one of the attack's
			// connections beyond its share for each, whether or not it has
			// read the bytes waiting on it yet (a busy machine leaves the
			// half-sent heads unread for a while; kept for them, the
			// balancer's clients were refused 503).
			want := shareMaxConns - shareDirect
			via, refusal := openJoins(t, e, "via", want, func(key string) http.Header { return signedUpgrade(bal, "bal-1", "edge-a", key) })
			t.Logf("one address opened %d connections %s: the edge kept %d with room to spare; then %d of %d balancer clients joined (refusal %d)",
				shareMaxConns, tt.name, held, len(via), want, refusal)
			if len(via) != want {
				t.Errorf("%d balancer clients joined, then %d; want %d (max_connections %d less the attack's share %d)", len(via), refusal, want, shareMaxConns, shareDirect)
			}
			for i := range want {
				select {
				case line := <-ended:
					// A request begun is answered as at the cap (closed
					// unanswered, a balancer took the edge for dying and
					// sent the session to its next edge).
					if got := strings.HasPrefix(line, "HTTP/1.1 503 "); got != tt.answered {
						t.Errorf("an ended connection read %q first; answered 503: %v, want %v", line, got, tt.answered)
					}
				case <-time.After(testDeadline):
					t.Fatalf("the edge ended %d of the attack's connections, want %d (all beyond its share)", i, want)
				}
			}
			// Ended by the edge's own rule, not on an error: its server
			// takes the end for its own close (before: a connection error
			// counted and logged for each ended with a head half read).
			if got := metricValue(t, e.s, "ringlb_edge_connection_errors_total"); got != 0 {
				t.Errorf("ringlb_edge_connection_errors_total = %v after the edge ended the attack's connections, want 0", got)
			}
			closeAll(via)
		})
	}
}

// An idle connection is counted again after each answer; beyond the share
// then (here: the share lowered by a reload while silent connections hold
// the rest) it is closed once its answer is out, and the answer is whole.
// Its socket was closed under the HTTP server, whose next step failed on
// it: each such close was also a connection error, logged and counted
// (ringlb_edge_connection_errors_total 1 here); now its read side is shut
// and the server ends it as a client's close (0).
func TestIdleConnectionBeyondTheShareClosed(t *testing.T) {
	e, _ := startShareEdgeWithBalancer(t)
	dial := func() net.Conn { return dialFrom(t, e.data, 2) }
	get := func(c net.Conn, br *bufio.Reader) int {
		code, err := getWhoami(c, br)
		if err != nil {
			t.Fatalf("whoami (the answer whole): %v", err)
		}
		return code
	}
	a := dial()
	br := bufio.NewReader(a)
	if code := get(a, br); code != http.StatusOK {
		t.Fatalf("whoami: %d", code)
	}
	for range shareDirect - 1 { // the rest of the share, silent
		dial()
	}
	waitFor(t, "the share held", func() bool { return dataOpen(e) == shareDirect })

	cfg := e.s.cfg
	cfg.MaxDirectPerIP = 2
	if err := e.s.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	if code := get(a, br); code != http.StatusOK {
		t.Fatalf("whoami again: %d", code)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("after its answer the idle connection beyond the share read %v, want EOF (closed)", err)
	}
	if got := labelledValue(t, e.s, "ringlb_edge_rejected_connections_total", reasonDirectShare); got != 1 {
		t.Errorf("ringlb_edge_rejected_connections_total{reason=direct_per_ip} = %v, want 1", got)
	}
	// Closed by the edge's own rule, not on an error: no connection error
	// is counted or logged for it (the server closes it as a client's
	// close, after the point where it would have).
	waitFor(t, "the idle connection's slot given back", func() bool { return dataOpen(e) == shareDirect-1 })
	if got := metricValue(t, e.s, "ringlb_edge_connection_errors_total"); got != 0 {
		t.Errorf("ringlb_edge_connection_errors_total = %v after an idle connection closed beyond its share, want 0", got)
	}
}

// A balancer's keep-alive pool of the plain requests it forwards idles on
// the edge between requests, from the balancer's address. A balancer signs
// each such request (SignForwarded) and the edge counts its connection
// idle against nothing; one of an earlier release (peer_signing below
// PeerSigningForwarded) signs none, and its pool filled its own share: every
// upgrade it forwarded next, a new connection from that address, was
// refused 429. While such a balancer is a member no idle connection is
// counted; once it has upgraded they are again.
func TestIdleNotCountedWhileAnEarlierBalancerIsAMember(t *testing.T) {
	cl := healthtest.New(t)
	old := cl.Join("bal-old", health.Meta{Role: health.RoleBalancer, State: health.StateAlive})
	e := startShareEdge(t, cl)
	announce := func(level int) { healthtest.AnnouncePeerSigning(t, old, e.m, level) }
	// get sends an unsigned plain request on c, as the earlier balancer's
	// pool does, and reads its answer.
	get := func(c net.Conn, br *bufio.Reader) error {
		_, err := getWhoami(c, br)
		return err
	}
	announce(health.PeerSigningUpgrade)
	pool := make([]net.Conn, shareDirect)
	readers := make([]*bufio.Reader, shareDirect)
	for i := range pool {
		c, err := net.Dial("tcp", e.data)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		_ = c.SetDeadline(time.Now().Add(testDeadline))
		pool[i], readers[i] = c, bufio.NewReader(c)
		if err := get(c, readers[i]); err != nil {
			t.Fatalf("a pooled request: %v", err)
		}
	}
	via, refusal := openJoins(t, e, "via", shareDirect, func(key string) http.Header { return signedUpgrade(old, "bal-old", "edge-a", key) })
	if len(via) != shareDirect {
		t.Errorf("an earlier balancer's pool of %d idle connections: %d of its %d upgrades joined, then %d; want all", shareDirect, len(via), shareDirect, refusal)
	}
	closeAll(via)

	announce(health.PeerSigningForwarded)
	for i, c := range pool {
		if err := get(c, readers[i]); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the unsigned idle connections counted again", func() bool {
		e.s.idleShare.mu.Lock()
		defer e.s.idleShare.mu.Unlock()
		return len(e.s.idleShare.idle) == shareDirect
	})
	// Counted: one more unsigned connection from that address is beyond
	// its share once idle, closed after its answer.
	c, err := net.Dial("tcp", e.data)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(testDeadline))
	br := bufio.NewReader(c)
	if err := get(c, br); err != nil {
		t.Fatal(err)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("every balancer signing its plain requests, an address holding %d unsigned idle connections: one more idle read %v, want EOF (closed beyond the share)", shareDirect, err)
	}
}

// getWhoami sends an unsigned GET /whoami on c and reads its answer whole
// (through br): the status, or what cut it short.
func getWhoami(c net.Conn, br *bufio.Reader) (int, error) {
	if _, err := io.WriteString(c, "GET /whoami HTTP/1.1\r\nHost: e\r\n\r\n"); err != nil {
		return 0, err
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return 0, err
	}
	return resp.StatusCode, nil
}

// A balancer dials an edge and then writes its upgrade: the edge may accept
// the connection, beyond the balancer address's share, before the head
// arrives. Ended to make room in that moment, the connection read nothing,
// and the HTTP server closed it without a word — the head, arriving a
// moment later, was dropped and the balancer read the end of the stream:
// closed unanswered, which it takes for the edge dying (502; with another
// edge, the session tried there). Its request is answered as at the cap
// instead: 503, to retry.
func TestUpgradeArrivingAfterItsConnectionWasEnded(t *testing.T) {
	e, bal := startShareEdgeWithBalancer(t)

	// The balancer's address fills the edge with connections whose heads
	// have not arrived yet: its share, then connections beyond it.
	conns := make([]net.Conn, shareMaxConns)
	for i := range conns {
		conns[i] = dialFrom(t, e.data, 3)
		waitFor(t, "the connection accepted", func() bool { return dataOpen(e) == i+1 })
	}
	// One more connection, at the cap: the oldest beyond the share makes
	// room.
	dialFrom(t, e.data, 4)
	waitFor(t, "a connection ended to make room", func() bool {
		return labelledValue(t, e.s, "ringlb_edge_rejected_connections_total", reasonDirectShare) == 1
	})

	// Its head arrives now.
	c := conns[shareDirect]
	head := "GET /ws HTTP/1.1\r\nHost: edge-a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: " + protocolV1 + "\r\n" +
		configs.HeaderKey + ": late\r\n" + configs.HeaderPeer + ": " + bal.Keyring().SignUpgrade("bal-1", "edge-a", "/ws", []byte("late")) + "\r\n\r\n"
	if _, err := io.WriteString(c, head); err != nil {
		t.Fatalf("the upgrade's head: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("an upgrade arriving on a connection ended to make room read %v, want 503 (closed unanswered, a balancer takes the edge for dying)", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("an upgrade arriving on a connection ended to make room: %d, want 503", resp.StatusCode)
	}
}

// dialFrom opens a connection to addr from 127.0.0.last (an address of its
// own), closed when the test ends, its deadlines testDeadline away.
func dialFrom(t *testing.T, addr string, last byte) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, last)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(testDeadline))
	return c
}
