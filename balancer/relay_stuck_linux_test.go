package balancer

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health/healthtest"
)

// stuckEdge is a backend that answers one upgrade and hands the test its
// connection, reading nothing more unless the test does.
func stuckEdge(t *testing.T) (string, <-chan net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	conns := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
			c.Close()
			return
		}
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "+wsSampleAccept+"\r\n\r\n")
		conns <- c
	}()
	return "http://" + ln.Addr().String(), conns
}

// fillWrites writes to c until a write blocks: the relay holds bytes for a
// peer that does not read.
func fillWrites(t *testing.T, c net.Conn) int {
	t.Helper()
	buf := make([]byte, 64<<10)
	total := 0
	for {
		c.SetWriteDeadline(time.Now().Add(300 * time.Millisecond))
		n, err := c.Write(buf)
		total += n
		if err != nil {
			c.SetWriteDeadline(time.Time{})
			return total
		}
	}
}

// relayEvents is how many readiness events b's relay loops have served.
func relayEvents(b *Balancer) uint64 {
	var n uint64
	for _, l := range b.relay.loops {
		l.mu.Lock()
		n += l.served
		l.mu.Unlock()
	}
	return n
}

// A client that resets its tunnel while the relay holds its bytes for an
// edge that does not read ends the tunnel. Before, the relay asked epoll
// for nothing on the client's socket while it held them, but epoll reports
// an error on every wait whatever is asked: the loop served the same event
// again and again, a core busy for as long as the edge did not read
// (forever, for an edge that never does), and each event counted as
// activity, so the idle sweep never closed the tunnel either.
func TestClientResetEndsATunnelItsEdgeDoesNotRead(t *testing.T) {
	url, edges := stuckEdge(t)
	b, addr := startBalancerFor(t, configs.Balancer{}, url) // the default tunnel idle timeout: 10m
	c, _ := openRawTunnel(t, addr)
	edge := <-edges
	defer edge.Close()
	wrote := fillWrites(t, c)
	before := relayEvents(b)
	c.(*net.TCPConn).SetLinger(0)
	c.Close() // a reset
	healthtest.WaitUntil(t, "the reset tunnel closed", func() bool { return b.Tunnels() == 0 })
	t.Logf("the client wrote %d bytes before blocking; the relay served %d events after its reset", wrote, relayEvents(b)-before)
}

// An edge that sends its last bytes and closes after the client half-closed
// (its socket shut both ways, epoll reporting a hang-up on every wait)
// while the client does not read yet: the relay waits without serving the
// hang-up again, and the client still gets every byte and the end when it
// reads. Before, the loop served the hang-up without end until the client
// read — a client that never did kept a core busy until the idle timeout.
func TestEdgeHangUpWhileTheClientDoesNotRead(t *testing.T) {
	url, edges := stuckEdge(t)
	b, addr := startBalancerFor(t, configs.Balancer{}, url)
	c, br := openRawTunnel(t, addr)
	defer c.Close()
	edge := <-edges
	defer edge.Close()
	// The client is done sending; the relay passes its FIN on.
	c.(*net.TCPConn).CloseWrite()
	if n, err := edge.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("the edge read %d, %v, want the client's end", n, err)
	}
	// The edge sends until the relay holds bytes for the client and has
	// stopped reading the edge (its socket from the edge keeps what
	// arrives), then its end, which arrives behind them.
	chunk := bytes.Repeat([]byte("0123456789abcdef"), 1<<10)
	sent, last := 0, 0
	for {
		edge.SetWriteDeadline(time.Now().Add(30 * time.Second))
		n, err := edge.Write(chunk)
		sent += n
		if err != nil {
			t.Fatalf("the edge wrote %d bytes: %v", sent, err)
		}
		time.Sleep(5 * time.Millisecond)
		rx, _ := tcpQueues(t, edge.RemoteAddr(), edge.LocalAddr())
		_, tx := tcpQueues(t, edge.LocalAddr(), edge.RemoteAddr())
		if last > 0 && rx >= last && tx == 0 {
			// Unread and not read from: the relay stopped reading, and
			// all the edge sent is there, so its end will be too.
			break
		}
		last = rx
	}
	edge.Close()
	time.Sleep(200 * time.Millisecond)
	// The relay has the edge's hang-up with bytes for the client held: it
	// serves it once, not on every wait.
	before := relayEvents(b)
	time.Sleep(time.Second)
	served := relayEvents(b) - before
	t.Logf("events served in a second with the edge hung up and the client not reading: %d", served)
	if served > 100 {
		t.Errorf("the relay served %d events in a second of nothing to do: it spins on the edge's hang-up", served)
	}
	c.SetReadDeadline(time.Now().Add(60 * time.Second))
	got, err := io.Copy(io.Discard, br)
	if err != nil || int(got) != sent {
		t.Errorf("the client read %d bytes (%v), the edge sent %d", got, err, sent)
	}
	healthtest.WaitUntil(t, "the tunnel closed", func() bool { return b.Tunnels() == 0 })
}

// tcpQueues are the bytes waiting unread in the socket at local connected to
// remote, and those it sent not yet acknowledged, from the kernel's table
// of TCP sockets (IPv4).
func tcpQueues(t *testing.T, local, remote net.Addr) (rx, tx int) {
	t.Helper()
	hex := func(a net.Addr) string {
		ap := a.(*net.TCPAddr).AddrPort()
		ip := ap.Addr().As4()
		return fmt.Sprintf("%02X%02X%02X%02X:%04X", ip[3], ip[2], ip[1], ip[0], ap.Port())
	}
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	l, r := hex(local), hex(remote)
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && f[1] == l && f[2] == r {
			txs, rxs, _ := strings.Cut(f[4], ":")
			txn, err1 := strconv.ParseInt(txs, 16, 64)
			rxn, err2 := strconv.ParseInt(rxs, 16, 64)
			if err1 != nil || err2 != nil {
				t.Fatalf("/proc/net/tcp: %q", line)
			}
			return int(rxn), int(txn)
		}
	}
	return 0, 0
}
