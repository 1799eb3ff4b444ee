package health

import (
	"context"
	"errors"
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
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	began := time.Now()
	leaver.Shutdown(ctx)
	took := time.Since(began)
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
