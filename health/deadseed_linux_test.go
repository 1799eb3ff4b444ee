package health

import (
	"context"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// seedDials passes a node's dials on, and tells when each to one address
// begins and how it ends.
type seedDials struct {
	memberlist.NodeAwareTransport
	to    string
	n     atomic.Int64
	began chan int64
	ended chan error
}

func (d *seedDials) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	if a.Addr != d.to {
		return d.NodeAwareTransport.DialAddressTimeout(a, timeout)
	}
	d.began <- d.n.Add(1)
	c, err := d.NodeAwareTransport.DialAddressTimeout(a, timeout)
	d.ended <- err
	return c, err
}

// A seed whose host is gone drops SYNs (no RST), and every seed check
// joins it again (keepSeeds): a dial waiting memberlist's TCPTimeout, 10 s
// on a LAN, each such seed in turn. Shutdown waited for that dial before
// it even left, whatever its ctx: the node stayed in every view meanwhile,
// its relay already closed, and a stop or an upgrade took that much
// longer. The dial ends when Shutdown begins.
func TestShutdownIsNotHeldByADeadSeedsDial(t *testing.T) {
	sink := fullQueueTarget(t)
	seed := startNode(t, testCluster("seed"), edgeMeta(0))
	watch := &seedDials{to: sink, began: make(chan int64, 64), ended: make(chan error, 64)}
	testHookTransport = func(_ string, tr memberlist.NodeAwareTransport) memberlist.NodeAwareTransport {
		watch.NodeAwareTransport = tr
		return watch
	}
	leaver, err := joinOn(t.Context(), testCluster("leaver", seed.Addr(), sink), edgeMeta(1), nil, nil, tuning{})
	testHookTransport = nil
	if err != nil {
		t.Fatal(err)
	}
	stopAtCleanup(t, leaver)
	patience := time.After(30 * time.Second)
	// Join's own dial, then a seed check's.
	for n := int64(0); n < 2; {
		select {
		case n = <-watch.began:
		case <-patience:
			t.Fatal("the node never joined its dead seed again")
		}
	}
	took := timedShutdown(t, leaver)
	var last error
	for range 2 {
		select {
		case last = <-watch.ended:
		case <-patience:
			t.Fatal("the dial to the dead seed never ended")
		}
	}
	t.Logf("Shutdown with a dial to a dead seed under way: %v (TCPTimeout %v); the dial ended with: %v", took.Round(time.Millisecond), memberlist.DefaultLocalConfig().TCPTimeout, last)
	if ne := (net.Error)(nil); errors.As(last, &ne) && ne.Timeout() {
		t.Errorf("the dial to the dead seed under way when Shutdown began ran to its timeout: Shutdown waited for it (%v)", last)
	}
}

// silentStreams wraps a node's dials to one address, and tells when a
// read on such a stream begins and how it ends.
type silentStreams struct {
	memberlist.NodeAwareTransport
	to    string
	began chan struct{}
	ended chan error
}

func (d *silentStreams) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	c, err := d.NodeAwareTransport.DialAddressTimeout(a, timeout)
	if err != nil || a.Addr != d.to {
		return c, err
	}
	return &watchedStream{Conn: c, d: d}, nil
}

type watchedStream struct {
	net.Conn
	d *silentStreams
}

func (w *watchedStream) Read(p []byte) (int, error) {
	select {
	case w.d.began <- struct{}{}:
	default:
	}
	n, err := w.Conn.Read(p)
	if err != nil {
		select {
		case w.d.ended <- err:
		default:
		}
	}
	return n, err
}

// silentSeed listens on loopback and closes the first stream it takes —
// a node's Join goes on without it — then takes each later one and never
// answers: a seed's host taken over by a process that accepts and stays
// silent.
func silentSeed(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var held []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for first := true; ; first = false {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if first {
				c.Close()
				continue
			}
			held = append(held, c)
			go io.Copy(io.Discard, c)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		for _, c := range held {
			c.Close()
		}
	})
	return ln.Addr().String()
}

// A seed that takes the connection and answers nothing holds the seed
// check's push/pull until memberlist's TCPTimeout (10 s on a LAN); only
// dials ended when Shutdown began, so it waited for that read before it
// even left. Streams in flight end as Shutdown begins too.
func TestShutdownIsNotHeldByASilentSeed(t *testing.T) {
	silent := silentSeed(t)
	seed := startNode(t, testCluster("seed"), edgeMeta(0))
	watch := &silentStreams{to: silent, began: make(chan struct{}, 1), ended: make(chan error, 16)}
	testHookTransport = func(_ string, tr memberlist.NodeAwareTransport) memberlist.NodeAwareTransport {
		watch.NodeAwareTransport = tr
		return watch
	}
	// A TCPTimeout far beyond the test's patience: a read that ends by it
	// is the fault, however slow the machine.
	leaver, err := joinOn(t.Context(), testCluster("leaver", seed.Addr(), silent), edgeMeta(1), nil, nil, tuning{tcpTimeout: 20 * time.Second})
	testHookTransport = nil
	if err != nil {
		t.Fatal(err)
	}
	stopAtCleanup(t, leaver)
	// Join's own stream was closed by the seed (Join has returned); a
	// seed check's is held. Forget Join's, then wait for the held one's
	// read.
	for drained := false; !drained; {
		select {
		case <-watch.ended:
		case <-watch.began:
		default:
			drained = true
		}
	}
	select {
	case <-watch.began:
	case <-time.After(30 * time.Second):
		t.Fatal("the node never pushed its state to the silent seed again")
	}
	took := timedShutdown(t, leaver)
	var last error
	select {
	case last = <-watch.ended:
	case <-time.After(60 * time.Second):
		t.Fatal("the stream to the silent seed never ended")
	}
	t.Logf("Shutdown with a push/pull to a silent seed under way: %v; its read ended with: %v", took.Round(time.Millisecond), last)
	if ne := (net.Error)(nil); errors.As(last, &ne) && ne.Timeout() {
		t.Errorf("the read from the silent seed under way when Shutdown began ran to its timeout: Shutdown waited for it (%v)", last)
	}
}

// timedShutdown shuts m down, its leave given 2 s, and says how long that
// took: reported, never asserted.
func timedShutdown(t *testing.T, m *Membership) time.Duration {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	began := time.Now()
	m.Shutdown(ctx)
	return time.Since(began)
}
