package balancer

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/ringlb/ringlb/balancer/ring"
	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health/healthtest"
)

// pattern is deterministic content of n bytes, so any lost, duplicated or
// reordered byte changes its digest.
func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*31 + i/251)
	}
	return b
}

// A tunnel carrying more than the socket buffers hold, to a client that reads
// slowly at first, delivers every byte in order: the relay keeps what the
// client cannot take yet and stops reading the edge meanwhile.
func TestRelayBackpressure(t *testing.T) {
	const size = 16 << 20
	want := sha256.Sum256(pattern(size))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "+wsSampleAccept+"\r\n\r\n")
		c.Write(pattern(size)) // blocks until the client has read most of it
	}()
	b, addr := startBalancerTo(t, "http://"+ln.Addr().String())
	c, br := openRawTunnel(t, addr)
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	// Read slowly at first so the edge → balancer → client path fills up.
	small := make([]byte, 512)
	h := sha256.New()
	for range 64 {
		n, err := br.Read(small)
		if err != nil {
			t.Fatal(err)
		}
		h.Write(small[:n])
		time.Sleep(time.Millisecond)
	}
	if _, err := io.Copy(h, br); err != nil {
		t.Fatal(err)
	}
	if got := h.Sum(nil); !bytes.Equal(got, want[:]) {
		t.Fatal("bytes through the relay differ from what the edge sent")
	}
	// The edge's FIN reached the client (io.Copy ended); the tunnel ends
	// when the client's side does too.
	c.Close()
	waitTunnels(t, b, 0)
}

// Many tunnels at once, each echoing its own content, lose and mix nothing.
func TestRelayManyTunnels(t *testing.T) {
	b, addr := startRawBalancer(t, configs.Balancer{})
	const tunnels = 64
	var wg sync.WaitGroup
	errs := make(chan error, tunnels)
	for i := range tunnels {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, br := openRawTunnel(t, addr)
			defer c.Close()
			c.SetDeadline(time.Now().Add(30 * time.Second))
			data := pattern(100_000 + i*997)
			go c.Write(data)
			got := make([]byte, len(data))
			if _, err := io.ReadFull(br, got); err != nil {
				errs <- fmt.Errorf("tunnel %d: %v", i, err)
				return
			}
			if !bytes.Equal(got, data) {
				errs <- fmt.Errorf("tunnel %d: echo differs", i)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	waitTunnels(t, b, 0)
}

// The relay's idle sweep closes a silent tunnel, and Shutdown closes the
// tunnels it still carries.
func TestRelayIdleAndShutdown(t *testing.T) {
	b, addr := startRawBalancer(t, configs.Balancer{TunnelIdleTimeout: configs.Duration(50 * time.Millisecond)})
	c, br := openRawTunnel(t, addr)
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("idle tunnel: read %v, want EOF", err)
	}
	waitTunnels(t, b, 0)
}

func startBalancerTo(t *testing.T, edgeURL string) (*Balancer, string) {
	t.Helper()
	b, addr := startRawBalancer(t, configs.Balancer{})
	b.ring.Update([]ring.Member{{Name: "slow", URL: edgeURL}})
	return b, addr
}

func waitTunnels(t *testing.T, b *Balancer, n int) {
	t.Helper()
	healthtest.WaitUntil(t, fmt.Sprintf("%d tunnels open", n), func() bool { return b.Tunnels() == n })
}
