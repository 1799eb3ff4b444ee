package balancer

import (
	"bufio"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"golang.org/x/sys/unix"

	"github.com/ringlb/ringlb/balancer/ring"
	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health/healthtest"
)

// namedRawEdge is a backend that answers every upgrade with a 101 naming
// itself and holds the connection.
func namedRawEdge(t *testing.T, name string) string {
	t.Helper()
	return "http://" + serveRaw(t, namedUpgrade(name)).String()
}

// namedUpgrade answers a connection's request with a 101 naming the edge
// name, then reads the tunnel to its end.
func namedUpgrade(name string) func(c net.Conn) {
	return func(c net.Conn) {
		if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "+wsSampleAccept+"\r\nX-Ringlb-Edge: "+name+"\r\n\r\n")
		io.Copy(io.Discard, c)
	}
}

// upgradeStatus sends a WebSocket upgrade for key on c and returns the
// answer's status line and the edge it names.
func upgradeStatus(t *testing.T, c net.Conn, key string) (string, string) {
	t.Helper()
	status, edge, err := upgradeAnswer(c, key)
	if err != nil {
		t.Fatalf("upgrade of %s: %v", key, err)
	}
	return status, edge
}

// upgradeAnswer is upgradeStatus for a goroutine other than the test's:
// the error is returned.
func upgradeAnswer(c net.Conn, key string) (status, edge string, err error) {
	c.SetDeadline(time.Now().Add(30 * time.Second))
	io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nctstickiness: "+key+"\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return "", "", err
	}
	return resp.Status, resp.Header.Get("X-Ringlb-Edge"), nil
}

// A dial to an edge that fails in this process — out of descriptors, here;
// of memory or local ports alike — is answered 503, and the edge is not
// blamed: not taken for suspect, its session's next participant not sent
// elsewhere. Before, EMFILE was taken for the edge being unreachable: 502,
// the live session's owner suspect for 5 s, and its next participants
// placed on a fallback edge with a skip while the earlier ones stayed on
// the owner — a split any client could bring about by holding connections
// until the balancer ran out of descriptors.
func TestLocalDialFailureBlamesNoEdge(t *testing.T) {
	for attempt := 1; !localDialFailureBlamesNoEdge(t); attempt++ {
		if attempt == 3 {
			t.Fatalf("in %d attempts no dial counted as this process's shortage (backend_errors_total kind local): the dial found a descriptor each time, or EMFILE is taken for the edge's fault", attempt)
		}
	}
}

// localDialFailureBlamesNoEdge runs the test once. It reports false when
// it could not: a descriptor closed meanwhile elsewhere in the process (an
// earlier test's connection, its close deferred to the goroutine reading
// it: seen under the race detector) let the balancer's dial through, and
// the edge, in this process, then failed to accept it for want of one.
func localDialFailureBlamesNoEdge(t *testing.T) bool {
	b, addr := startBalancerFor(t, configs.Balancer{}, namedRawEdge(t, "e1"))
	b.ring.Update([]ring.Member{{Name: "e1", URL: namedRawEdge(t, "e1"), Weight: 1}, {Name: "e2", URL: namedRawEdge(t, "e2"), Weight: 1}})
	const key = "live-session"
	first, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	status, owner := upgradeStatus(t, first, key)
	if !strings.HasPrefix(status, "101") || owner == "" {
		t.Fatalf("first participant: %s from %q", status, owner)
	}

	// The next participant's connection is accepted; then the process
	// may open no descriptor more while the balancer dials for it.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Accepted and waiting for its request (the first one's is its tunnel's).
	healthtest.WaitUntil(t, "the connection accepted", func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return len(b.conns) == 1
	})
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	free := 3
	for ; free < int(lim.Cur); free++ {
		if _, err := unix.FcntlInt(uintptr(free), unix.F_GETFD, 0); err == syscall.EBADF {
			break
		}
	}
	low := lim
	low.Cur = uint64(free)
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nctstickiness: "+key+"\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	local := 0.0
	for _, name := range []string{"e1", "e2"} {
		var m dto.Metric
		if err := b.metrics.backendErrorsTotal.WithLabelValues(name, errorKindLocal).Write(&m); err != nil {
			t.Fatal(err)
		}
		local += m.GetCounter().GetValue()
	}
	if local == 0 {
		t.Logf("the balancer's dial found a descriptor (answer %v, %v): again", resp, err)
		return false
	}
	if err != nil {
		t.Fatalf("the participant without descriptors: %v", err)
	}
	t.Logf("the participant while the balancer had no descriptor: %s", resp.Status)
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("answered %s, want 503 Service Unavailable", resp.Status)
	}
	if b.isSuspect(owner) {
		t.Errorf("the owner %s is taken for suspect for the balancer's own shortage", owner)
	}

	third, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer third.Close()
	if status, edge := upgradeStatus(t, third, key); !strings.HasPrefix(status, "101") || edge != owner {
		t.Errorf("the session's next participant: %s from %q, its first is on %s: split", status, edge, owner)
	}
	return true
}

// panickingEdge is a Go net/http WebSocket backend named name whose
// handler panics on /boom: net/http then closes the connection without a
// byte of answer. Any other request is upgraded and held.
func panickingEdge(t *testing.T, name string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		ErrorLog: log.New(io.Discard, "", 0),
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/boom" {
				panic("a query of death")
			}
			c, brw, err := w.(http.Hijacker).Hijack()
			if err != nil {
				return
			}
			defer c.Close()
			brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + wsSampleAccept + "\r\nX-Ringlb-Edge: " + name + "\r\n\r\n")
			brw.Flush()
			io.Copy(io.Discard, brw)
		}),
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}

// An upgrade a live backend closes unanswered — any client's request that
// makes its handler panic — blames the backend for nothing. Before, the
// balancer tried it once more, then took the backend for unreachable as
// after a refused dial: suspect for 5 s, so every live session on it had
// its next participants placed on another backend with a skip while its
// earlier ones stayed: a split any client could renew with two requests
// every 5 s. Now a backend that accepts the connection again is alive: the
// client gets 502, and nothing moves.
func TestUpgradeClosedUnansweredByALiveBackendSplitsNothing(t *testing.T) {
	b, addr := startBalancerFor(t, configs.Balancer{}, panickingEdge(t, "e1"))
	b.ring.Update([]ring.Member{{Name: "e1", URL: panickingEdge(t, "e1"), Weight: 1}, {Name: "e2", URL: panickingEdge(t, "e2"), Weight: 1}})
	snap := b.ring.Snapshot()
	keyOn := func(edge, not string) string {
		for i := 0; ; i++ {
			k := fmt.Sprintf("key-%d", i)
			if o, _ := snap.Locate([]byte(k)); o.Name == edge && k != not {
				return k
			}
		}
	}
	key := keyOn("e1", "")
	attackKey := keyOn("e1", key)
	first, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	if status, owner := upgradeStatus(t, first, key); !strings.HasPrefix(status, "101") || owner != "e1" {
		t.Fatalf("first participant: %s from %q, want 101 from e1", status, owner)
	}

	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	io.WriteString(c, "GET /boom HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nctstickiness: "+attackKey+"\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("the upgrade its backend closes unanswered: %v", err)
	}
	if resp.StatusCode != http.StatusBadGateway || resp.Header.Get("X-Ringlb-Edge") != "" {
		t.Errorf("the upgrade its backend closes unanswered: %s from %q, want 502 from the balancer", resp.Status, resp.Header.Get("X-Ringlb-Edge"))
	}
	if b.isSuspect("e1") {
		t.Errorf("e1, alive, taken for suspect after one client's request")
	}

	second, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	if status, edge := upgradeStatus(t, second, key); !strings.HasPrefix(status, "101") || edge != "e1" {
		t.Errorf("the session's next participant: %s from %q, its first is on e1: split", status, edge)
	}
}

// slowPlainEdge answers plain requests after 200 ms on kept-alive
// connections (so that concurrent requests each take a pool connection)
// and upgrades with a 101, holding the tunnel.
func slowPlainEdge(t *testing.T) (string, *net.TCPAddr) {
	t.Helper()
	addr := serveRaw(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			if req.Header.Get("Upgrade") != "" {
				io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "+wsSampleAccept+"\r\n\r\n")
				io.Copy(io.Discard, c)
				return
			}
			time.Sleep(200 * time.Millisecond)
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	return "http://" + addr.String(), addr
}

// establishedTo counts this host's established IPv4 TCP sockets connected
// to addr (the balancer's side of its connections to an edge).
func establishedTo(t *testing.T, addr *net.TCPAddr) int {
	t.Helper()
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	ip := addr.AddrPort().Addr().As4()
	want := fmt.Sprintf("%02X%02X%02X%02X:%04X", ip[3], ip[2], ip[1], ip[0], addr.Port)
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 3 && f[2] == want && f[3] == "01" {
			n++
		}
	}
	return n
}

// The keep-alive pool's idle connections to edges share the descriptors
// the connection limit is sized for (two a client connection: its own and
// its edge's). A burst of plain requests leaves as many idle pool
// connections; tunnels opened after it close them to make room, so the
// balancer's connections to edges stay within max_connections. Before, the
// idle ones stayed beside the tunnels' for fasthttp's 10 s: three
// descriptors a client connection, past the budget the default limit
// derives from the open-file limit, and into EMFILE.
func TestIdleEdgeConnectionsStayWithinTheConnectionBudget(t *testing.T) {
	const max = 20
	url, edgeAddr := slowPlainEdge(t)
	_, addr := startBalancerFor(t, configs.Balancer{Limits: configs.Limits{MaxConnections: max}}, url)
	// A burst of plain requests, each on its own client connection, which
	// closes after its answer: the pool keeps their edge connections.
	done := make(chan error, max)
	for i := range max {
		go func() {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				done <- err
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(30 * time.Second))
			fmt.Fprintf(c, "GET /file HTTP/1.1\r\nHost: x\r\nctstickiness: k%d\r\n\r\n", i)
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err == nil {
				resp.Body.Close()
			}
			done <- err
		}()
	}
	for range max {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("after the burst: %d connections to the edge", establishedTo(t, edgeAddr))
	var tunnels []net.Conn
	defer func() {
		for _, c := range tunnels {
			c.Close()
		}
	}()
	for range max {
		c, _ := openRawTunnel(t, addr)
		tunnels = append(tunnels, c)
	}
	n := establishedTo(t, edgeAddr)
	t.Logf("with %d tunnels open: %d connections to the edge", max, n)
	if n > max {
		t.Errorf("%d connections to the edge with max_connections %d: the pool's idle ones stayed beside the tunnels'", n, max)
	}
}
