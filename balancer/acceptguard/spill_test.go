package acceptguard

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"
)

// spillClientAddr is the i-th of many clients.
func spillClientAddr(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
}

// The spill ends, for each room, the oldest connection of the client holding
// the most (passing over those with a request on its way in, which
// connections without a socket never have). Checked against a plain model
// over a random run of admissions, services (ReleaseClient, Close) and
// ends.
func TestSpillEndsTheOldestOfTheClientHoldingTheMost(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	l := &Listener{}
	s := &spill{}
	model := map[netip.Addr][]*Conn{} // oldest first
	keys := map[*Conn]netip.Addr{}
	var all []*Conn
	for step := range 20000 {
		switch op := rng.IntN(10); {
		case op < 5: // a connection admitted beyond its client's share
			k := spillClientAddr(rng.IntN(12))
			c := &Conn{l: l, Conn: socketless{}}
			s.add(k, c)
			keys[c] = k
			model[k] = append(model[k], c)
			all = append(all, c)
		case op < 8 && len(all) > 0: // one served or closed
			i := rng.IntN(len(all))
			c := all[i]
			all = slices.Delete(all, i, i+1)
			if s.leave(c) {
				t.Fatalf("step %d: a connection never ended reported ended", step)
			}
			k := keys[c]
			model[k] = slices.DeleteFunc(model[k], func(x *Conn) bool { return x == c })
			if len(model[k]) == 0 {
				delete(model, k)
			}
		default: // at the cap
			most := 0
			for _, cs := range model {
				most = max(most, len(cs))
			}
			c, k := s.evict()
			if most == 0 {
				if c != nil {
					t.Fatalf("step %d: ended a connection with none spilled", step)
				}
				continue
			}
			if c == nil {
				t.Fatalf("step %d: ended none, %d spilled", step, len(all))
			}
			if k != keys[c] {
				t.Fatalf("step %d: ended a connection of %v, said %v", step, keys[c], k)
			}
			if cs := model[k]; len(cs) != most || cs[0] != c {
				t.Fatalf("step %d: ended a connection of a client holding %d (its oldest: %v), want the oldest of one holding %d", step, len(cs), len(cs) > 0 && cs[0] == c, most)
			}
			model[k] = model[k][1:]
			if len(model[k]) == 0 {
				delete(model, k)
			}
			all = slices.DeleteFunc(all, func(x *Conn) bool { return x == c })
		}
		if n := len(all); s.Len() != n {
			t.Fatalf("step %d: spill holds %d, want %d", step, s.Len(), n)
		}
		if err := s.tiersHold(); err != nil {
			t.Fatalf("step %d: %v", step, err)
		}
	}
}

// tiersHold checks the tiers: from the top down, fewer each, none empty,
// each client in the one of what it holds, every client in one.
func (s *spill) tiersHold() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	seen := 0
	var last *spillTier
	for t := s.top; t != nil; last, t = t, t.lower {
		if t.higher != last || (last != nil && t.n >= last.n) || t.clients.Len() == 0 {
			return fmt.Errorf("tier of %d out of order or empty", t.n)
		}
		for e := t.clients.Front(); e != nil; e = e.Next() {
			if sc := e.Value.(*spillClient); sc.tier != t || sc.at != e || sc.conns.Len() != t.n {
				return fmt.Errorf("a client holding %d in the tier of %d", sc.conns.Len(), t.n)
			}
			seen++
		}
	}
	if last != s.bottom || seen != len(s.by) {
		return fmt.Errorf("%d clients in tiers, %d spilled; bottom %v", seen, len(s.by), last == s.bottom)
	}
	return nil
}

// At the cap each new connection looks for one to end, under the lock that
// every spilled connection's ReleaseClient and Close take. The look copied
// and sorted every client holding a spilled connection, each time: with a
// share of 1 and many addresses (an IPv6 /64 each), every accept at the cap
// cost time in the number of clients. It takes the client holding the most
// without going through the others, and allocates nothing.
func TestSpillEndsWithoutGoingThroughEveryClient(t *testing.T) {
	const clients = 20000
	l := &Listener{}
	s := &spill{}
	for i := range clients {
		s.add(spillClientAddr(i), &Conn{l: l, Conn: socketless{}})
	}
	allocs := testing.AllocsPerRun(1000, func() {
		if c, _ := s.evict(); c == nil {
			t.Fatal("none ended")
		}
	})
	t.Logf("ending one connection of %d clients' allocates %v", clients, allocs)
	if allocs != 0 {
		t.Errorf("ending a spilled connection among %d clients' allocates %v, want 0", clients, allocs)
	}
}

func BenchmarkSpillEnd(b *testing.B) {
	for _, clients := range []int{16, 1000, 20000} {
		b.Run(fmt.Sprint(clients), func(b *testing.B) {
			l := &Listener{}
			s := &spill{}
			for i := range clients {
				s.add(spillClientAddr(i), &Conn{l: l, Conn: socketless{}})
			}
			b.ReportAllocs()
			for b.Loop() {
				c, k := s.evict()
				c.state.Store(0)
				s.add(k, c)
			}
		})
	}
}

// socketless stands in for the socket of a connection the spill's model
// tests admit: ending one sets a read deadline, nothing else is done.
type socketless struct{ net.Conn }

func (socketless) SetReadDeadline(time.Time) error { return nil }
