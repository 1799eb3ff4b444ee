package health

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// cutTransport is a node's gossip transport behind a network that loses
// everything the node sends while cut is set: its packets, its dials, and
// its answers on streams others open to it (those streams are closed on
// arrival). What the others send it by packet still arrives unless deaf is
// set too: cut alone is the one-way cut memberlist's probes cannot tell
// from a crash. While noUDP is set its packets are lost both ways and its
// streams go through: a firewall that drops UDP only.
type cutTransport struct {
	memberlist.NodeAwareTransport
	cut, deaf, noUDP atomic.Bool
	in               chan net.Conn
	packets          chan *memberlist.Packet
	stop             chan struct{}
	done             sync.WaitGroup
}

func newCutTransport(t *testing.T, inner memberlist.NodeAwareTransport) *cutTransport {
	c := &cutTransport{NodeAwareTransport: inner, in: make(chan net.Conn), packets: make(chan *memberlist.Packet), stop: make(chan struct{})}
	c.done.Add(2)
	go passUnless(c, inner.StreamCh(), c.in, c.cut.Load, func(conn net.Conn) { conn.Close() })
	go passUnless(c, inner.PacketCh(), c.packets, func() bool { return c.deaf.Load() || c.noUDP.Load() }, func(*memberlist.Packet) {})
	t.Cleanup(func() {
		close(c.stop)
		c.done.Wait()
	})
	return c
}

var errCut = errors.New("cut off (test)")

func (c *cutTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	if c.cut.Load() || c.noUDP.Load() {
		return time.Now(), nil // lost on the way, as UDP is
	}
	return c.NodeAwareTransport.WriteTo(b, addr)
}

func (c *cutTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	if c.cut.Load() || c.noUDP.Load() {
		return time.Now(), nil
	}
	return c.NodeAwareTransport.WriteToAddress(b, a)
}

func (c *cutTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	if c.cut.Load() {
		return nil, errCut
	}
	return c.NodeAwareTransport.DialTimeout(addr, timeout)
}

func (c *cutTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	if c.cut.Load() {
		return nil, errCut
	}
	return c.NodeAwareTransport.DialAddressTimeout(a, timeout)
}

func (c *cutTransport) StreamCh() <-chan net.Conn { return c.in }

func (c *cutTransport) PacketCh() <-chan *memberlist.Packet { return c.packets }

// passUnless hands what arrives on in to out until stop, dropping (and
// ending with drop) what arrives while lost says so.
func passUnless[T any](c *cutTransport, in <-chan T, out chan<- T, lost func() bool, drop func(T)) {
	defer c.done.Done()
	for {
		select {
		case <-c.stop:
			return
		case v := <-in:
			if lost() {
				drop(v)
				continue
			}
			select {
			case out <- v:
			case <-c.stop:
				drop(v)
				return
			}
		}
	}
}

// A node the others lose the packets of, while it hears theirs, refutes
// their suspicion while still cut off — a refutation lost with the rest of
// what it sends. The others drop it, it drops them (its probes go
// unanswered), and once the network heals it is back in their rings
// (through its seed check here; its next push/pull or metadata update
// otherwise) without hearing anything more of its death: its refutation
// had raised its incarnation past the one they hold it dead at. Had
// BackAt stayed at that refutation, the node would take itself for one
// long settled when balancers route to it again — as new to them as an
// edge that just joined (sessions: TestEdgeBackFromTheDeadSplitsNoSession).
// So its probes going unanswered for as long as the others take to drop
// it is a return too, and it is away until one is answered: BackAt is
// not before the network healed.
func TestCutOffNodeIsBackOnceAnswered(t *testing.T) {
	// Cut both ways it hears nothing, refutes nothing while cut off, and
	// knows only by its probes going unanswered.
	for _, deaf := range []bool{false, true} {
		name := map[bool]string{false: "one way", true: "both ways"}[deaf]
		t.Run(name, func(t *testing.T) { cutOffAndBack(t, deaf) })
	}
}

// cutWhenStarted has the node named name, once started, use a
// cutTransport, which the returned function gives (nil before).
func cutWhenStarted(t *testing.T, name string, setup ...func(*cutTransport)) func() *cutTransport {
	var cut *cutTransport
	testHookTransport = func(n string, tr memberlist.NodeAwareTransport) memberlist.NodeAwareTransport {
		if n != name {
			return tr
		}
		cut = newCutTransport(t, tr)
		for _, f := range setup {
			f(cut) // before its first packet
		}
		return cut
	}
	t.Cleanup(func() { testHookTransport = nil })
	return func() *cutTransport { return cut }
}

func cutOffAndBack(t *testing.T, deaf bool) {
	cutOf := cutWhenStarted(t, "node-2")
	nodes, _ := startCluster(t, 3)
	cut := cutOf()
	others, cutOff := nodes[:2], nodes[2]

	cut.deaf.Store(deaf)
	cut.cut.Store(true)
	waitAll(t, others, func(ns []Node) bool { return !hasMember("node-2")(ns) })
	waitAll(t, []*Membership{cutOff}, func(ns []Node) bool { return len(ns) == 1 })
	healed := time.Now()
	cut.deaf.Store(false)
	cut.cut.Store(false)
	waitAll(t, others, hasMember("node-2"))
	if back := cutOff.BackAt(); back.Before(healed) {
		t.Fatalf("node-2 is in the others' rings again, BackAt %v: before the network healed at %v (%v before)", back, healed, healed.Sub(back))
	}
	// Its probes went unanswered either way; one way it heard the others'
	// suspicion too, and refuted it — memberlist's line for that, which
	// the log writer reads, from memberlist itself (a release of
	// memberlist that words it otherwise fails here).
	if n := cutOff.backs[backUnanswered].Load(); n < 1 {
		t.Errorf("ringlb_gossip_back_total{reason=\"unanswered\"} %d, want 1 or more", n)
	}
	if n := cutOff.backs[backRefuted].Load(); !deaf && n < 1 {
		t.Errorf("ringlb_gossip_back_total{reason=\"refuted\"} %d cut off one way, want 1 or more", n)
	}
}
