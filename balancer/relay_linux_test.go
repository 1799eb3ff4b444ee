//go:build linux

package balancer

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health/healthtest"
)

// A relayed tunnel keeps no Go side of its sockets (the loop owns
// duplicates): the wrappers that count the client connection hold a
// placeholder, the edge's end nothing. The connection stays counted while
// the tunnel lives — a limit of one refuses the next — and its slot is
// free once the tunnel ends.
func TestRelayedTunnelHoldsNoSocket(t *testing.T) {
	b, addr := startRawBalancer(t, configs.Balancer{Limits: configs.Limits{MaxConnections: 1}})
	c, _ := openRawTunnel(t, addr)
	waitTunnels(t, b, 1)
	p := relayedPair(t, b, func(tun *tunnel) {
		if tun.conn != nil || tun.client != nil {
			t.Errorf("the relayed tunnel still holds its connections: %T %T", tun.conn, tun.client)
		}
	})
	p.t.loop.mu.Lock()
	clientEnd, edgeEnd := p.client.conn, p.edge.conn
	p.t.loop.mu.Unlock()
	if edgeEnd != nil {
		t.Errorf("edge end holds %T, want nothing (a bare socket has nothing to count)", edgeEnd)
	}
	inner := unwrapConn(clientEnd.(net.Conn))
	if _, ok := inner.(relayOwned); !ok {
		t.Errorf("the counting wrappers hold %T, want the placeholder", inner)
	}

	if resp, body := proxiedRequest(t, addr, nil, "k"); resp == nil || resp.StatusCode != 503 || !strings.Contains(string(body), "too many connections") {
		t.Fatalf("a second connection while the tunnel lives: %v %q, want 503", resp, body)
	}
	c.Close()
	waitTunnels(t, b, 0)
	healthtest.WaitUntil(t, "the slot freed once the tunnel ended", func() bool {
		c2, err := net.Dial("tcp", addr)
		if err != nil {
			return false
		}
		defer c2.Close()
		c2.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c2, "GET /_ringlb/health HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c2), nil)
		return err == nil && resp.StatusCode != http.StatusServiceUnavailable
	})
}

// A relay loop starved past its sweep's deadline (a busy machine: it woke
// for the sweep and waited its turn) serves what became ready meanwhile
// before it closes anything for idleness: a tunnel whose bytes arrived
// while the loop waited is not closed as idle. Before, the sweep ran on
// the wake-up's empty list of events and closed it, its bytes unsent.
func TestStarvedRelayLoopClosesNoTunnelWithBytesWaiting(t *testing.T) {
	idle := 200 * time.Millisecond
	b, addr := startRawBalancer(t, configs.Balancer{TunnelIdleTimeout: configs.Duration(idle)})
	c, br := openRawTunnel(t, addr)
	defer c.Close()
	p := relayedPair(t, b, nil)
	l := p.t.loop
	// Starve the loop: it wakes for its sweep and waits for its lock
	// (released however this block ends: a failed wait must not leave the
	// balancer's shutdown waiting on it).
	func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		time.Sleep(2 * sweepInterval(idle))
		if _, err := io.WriteString(c, "late"); err != nil {
			t.Fatal(err)
		}
		fd := p.client.fd
		healthtest.WaitUntil(t, "the bytes waiting in the relay's socket", func() bool {
			n, err := unix.IoctlGetInt(fd, unix.SIOCINQ)
			return err == nil && n > 0
		})
		// Past the idle timeout since the tunnel last moved a byte.
		time.Sleep(idle)
	}()

	_ = c.SetReadDeadline(time.Now().Add(healthtest.Patience))
	got := make([]byte, len("late"))
	if _, err := io.ReadFull(br, got); err != nil || string(got) != "late" {
		t.Fatalf("the tunnel gave %q, %v; want the edge's echo of the bytes that waited (closed as idle?)", got, err)
	}
	if n := b.Tunnels(); n != 1 {
		t.Errorf("%d tunnels after the starved sweep, want the one still open", n)
	}
}

// relayedPair waits until b's one tunnel is in a relay loop and returns its
// pair; check (unless nil) looks at the tunnel then, under its lock.
func relayedPair(t *testing.T, b *Balancer, check func(*tunnel)) *relayPair {
	t.Helper()
	var p *relayPair
	healthtest.WaitUntil(t, "the tunnel in the relay", func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		for tun := range b.tunnels {
			tun.mu.Lock()
			p = tun.pair
			if p != nil && check != nil {
				check(tun)
			}
			tun.mu.Unlock()
		}
		return p != nil
	})
	return p
}
