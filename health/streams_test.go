package health

import (
	"encoding/binary"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ringlb/ringlb/configs"
)

// Anyone who reaches the gossip port can open TCP streams to it. memberlist
// buffers an encrypted stream whole before it can check its MAC — up to the
// 20 MB its length prefix may announce — and takes any number of streams at
// once. The attack: streams from one address that each announce and send
// 20 MB of garbage, all at once, while the heap is sampled.
func TestGossipStreamFloodBounded(t *testing.T) {
	cfg := testCluster("target")
	// memberlist's LAN profile: a stream may take 10 s (the local
	// profile's 1 s cut slow streams, under -race, before they reached
	// the byte budget).
	cfg.Profile = ""
	cfg.SecretKeyFile = writeKey(t, 32)
	m := startNode(t, cfg, edgeMeta(0))

	const (
		streams  = 48
		announce = 20<<20 - 1 // memberlist's own limit is 20 MiB
	)
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	var peak atomic.Uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()

	var sent atomic.Int64
	local := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 9)}
	// A round's streams reach the byte budget in milliseconds on a quiet
	// machine; one stalled for seconds may see them all cut by memberlist's
	// stream timeout first, so the flood goes again (a liveness bound, not
	// a measure): what is asserted is that the budget cuts them.
	rounds := 0
	for ; rounds < 6 && m.streams.refused[refusedBytes].Load() == 0; rounds++ {
		flood(m.Addr(), local, streams, announce, &sent)
	}
	close(stop)
	<-sampled
	grew := int64(peak.Load()) - int64(before.HeapInuse)
	t.Logf("%d streams of %d MiB from one address, %d round(s): sent %d MiB, heap grew %d MiB at most", streams, announce>>20, rounds, sent.Load()>>20, grew>>20)

	// Whatever it took, the node still lets a member join.
	waitPeerJoins(t, m, cfg.SecretKeyFile)
	// Unbounded, the heap holds what every stream sent (600 MiB for 24
	// streams); bounded, one address's share (twice over while a buffer
	// grows, and garbage until the collector runs), whatever the count.
	if limit := int64(256 << 20); grew > limit {
		t.Errorf("the heap grew %d MiB for one address's streams; want at most %d MiB", grew>>20, limit>>20)
	}
	if m.streams.refused[refusedBytes].Load() == 0 {
		t.Error("no stream was cut at the byte budget")
	}
}

// waitPeerJoins starts a member holding the key in keyFile that joins
// through m, and waits until both see two members: what m went through
// left it able to take a member in.
func waitPeerJoins(t *testing.T, m *Membership, keyFile string) {
	t.Helper()
	pcfg := testCluster("peer", m.Addr())
	pcfg.SecretKeyFile = keyFile
	peer := startNode(t, pcfg, edgeMeta(1))
	waitAll(t, []*Membership{m, peer}, func(ns []Node) bool { return len(ns) == 2 })
}

// flood opens that many (streams) encrypted gossip streams to addr from
// local, each announcing size bytes and sending all but the last, held
// open until the server lets go; sent counts what the server took.
func flood(addr string, local *net.TCPAddr, streams, size int, sent *atomic.Int64) {
	var wg sync.WaitGroup
	for range streams {
		wg.Go(func() {
			d := net.Dialer{LocalAddr: local, Timeout: 10 * time.Second}
			c, err := d.Dial("tcp", addr)
			if err != nil {
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(60 * time.Second))
			head := []byte{10, 0, 0, 0, 0} // encryptMsg, length
			binary.BigEndian.PutUint32(head[1:], uint32(size))
			if _, err := c.Write(head); err != nil {
				return
			}
			chunk := make([]byte, 64<<10)
			for left := size - 1; left > 0; left -= len(chunk) {
				n, err := c.Write(chunk[:min(len(chunk), left)])
				sent.Add(int64(n))
				if err != nil {
					return
				}
			}
			// Held open (the last byte never comes) until the server lets go.
			c.Read(make([]byte, 1))
		})
	}
	wg.Wait()
}

// Idle streams from one address beyond its share are closed at once, and
// another address still gets its streams.
func TestGossipStreamsCappedPerAddress(t *testing.T) {
	cfg := testCluster("target")
	cfg.Profile = "" // memberlist's LAN profile: streams may idle for 10 s
	cfg.SecretKeyFile = writeKey(t, 32)
	m := startNode(t, cfg, edgeMeta(0))

	dial := func(from byte) net.Conn {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, from)}, Timeout: 10 * time.Second}
		c, err := d.Dial("tcp", m.Addr())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	const extra = 4
	for range maxGossipStreamsPerAddr + extra {
		dial(9)
	}
	deadline := time.Now().Add(30 * time.Second)
	for m.streams.refused[refusedStreams].Load() < extra && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := m.streams.refused[refusedStreams].Load(); got != extra {
		t.Fatalf("refused %d of %d idle streams from one address; want the %d beyond its share of %d", got, maxGossipStreamsPerAddr+extra, extra, maxGossipStreamsPerAddr)
	}
	// Another address is not refused: the guard admits its stream beside
	// the first address's share (an event to wait for, not a silence).
	dial(10)
	admitted := func() bool {
		m.streams.mu.Lock()
		defer m.streams.mu.Unlock()
		return m.streams.pools[poolStrangers].open == maxGossipStreamsPerAddr+1
	}
	for deadline := time.Now().Add(30 * time.Second); !admitted() && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if !admitted() {
		t.Errorf("another address's stream was not admitted beside the first's %d", maxGossipStreamsPerAddr)
	}
	if got := m.streams.refused[refusedStreams].Load(); got != extra {
		t.Errorf("refused %d after another address's stream, want %d", got, extra)
	}
}

// holdStreams keeps per streams open from each of the addresses 127.0.0.from
// onwards, sending nothing, and opens another whenever the node closes one,
// until the test ends: the slow stranger who holds the gossip port's
// stream slots from many addresses.
func holdStreams(t *testing.T, target string, from byte, addrs, per int) {
	t.Helper()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	t.Cleanup(func() {
		close(stop)
		wg.Wait()
	})
	for a := range addrs {
		local := &net.TCPAddr{IP: net.IPv4(127, 0, 0, from+byte(a))}
		for range per {
			wg.Go(func() {
				d := net.Dialer{LocalAddr: local, Timeout: 10 * time.Second}
				for {
					select {
					case <-stop:
						return
					default:
					}
					c, err := d.Dial("tcp", target)
					if err != nil {
						select {
						case <-stop:
							return
						case <-time.After(50 * time.Millisecond):
						}
						continue
					}
					closed := make(chan struct{})
					go func() {
						c.SetReadDeadline(time.Now().Add(60 * time.Second))
						c.Read(make([]byte, 1))
						close(closed)
					}()
					select {
					case <-stop:
						c.Close()
						<-closed
						return
					case <-closed:
						c.Close()
					}
				}
			})
		}
	}
}

// waitStreams waits until the guard holds want streams from strangers.
func waitStreams(t *testing.T, m *Membership, want int) {
	t.Helper()
	held := func() int {
		m.streams.mu.Lock()
		defer m.streams.mu.Unlock()
		return m.streams.pools[poolStrangers].open
	}
	for deadline := time.Now().Add(30 * time.Second); held() < want && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if got := held(); got < want {
		t.Fatalf("the flood holds %d stream slots, want %d", got, want)
	}
}

// Streams that send nothing, from enough addresses to stay within each
// address's share, hold every stream slot until memberlist's stream
// timeout (10 s on a LAN), and the flood opens them again at once: a node
// joining meanwhile is refused, and so is a member's push/pull. The
// node's oldest stranger stream now makes room for a new one, and streams
// from members' addresses have slots of their own.
func TestGossipStreamSlotsHeldFromManyAddresses(t *testing.T) {
	cfg := testCluster("target")
	cfg.Profile = "" // memberlist's LAN profile: streams may idle for 10 s
	cfg.SecretKeyFile = writeKey(t, 32)
	m := startNode(t, cfg, edgeMeta(0))
	holdStreams(t, m.Addr(), 11, configs.MaxGossipStreams/maxGossipStreamsPerAddr, maxGossipStreamsPerAddr)
	waitStreams(t, m, configs.MaxGossipStreams)

	// A new node joins while every slot is held. It dials from 127.0.0.1,
	// no member's address yet: a stranger like the flood.
	start := time.Now()
	pcfg := testCluster("joiner", m.Addr())
	pcfg.Profile = ""
	pcfg.SecretKeyFile = cfg.SecretKeyFile
	joiner := startNode(t, pcfg, edgeMeta(1))
	waitAll(t, []*Membership{m, joiner}, func(ns []Node) bool { return len(ns) == 2 })
	t.Logf("a node joined in %s while strangers held all %d stream slots", time.Since(start).Round(time.Millisecond), configs.MaxGossipStreams)
	if m.streams.refused[refusedEvicted].Load() == 0 {
		t.Error("the joiner got in without a stranger's stream making room: the flood did not hold the slots")
	}

	// A member's push/pull while the flood holds the slots again: from a
	// member's address it takes a slot of the members' own, and no
	// stranger's stream is closed for it.
	waitStreams(t, m, configs.MaxGossipStreams)
	evicted := m.streams.refused[refusedEvicted].Load()
	if _, err := joiner.ml.Join([]string{m.Addr()}); err != nil {
		t.Errorf("a member's push/pull while strangers hold every slot: %v", err)
	}
	if got := m.streams.refused[refusedEvicted].Load(); got != evicted {
		t.Errorf("a member's push/pull closed %d strangers' streams; want it in the members' slots", got-evicted)
	}
}

// A stream without the key announcing 4 GiB: memberlist refuses a length
// over its 20 MB push/pull limit before it reads or allocates any of it,
// and closes the stream; the node takes the next member's join as ever.
func TestGossipStreamHugeLengthReadNoFurther(t *testing.T) {
	cfg := testCluster("target")
	cfg.SecretKeyFile = writeKey(t, 32)
	m := startNode(t, cfg, edgeMeta(0))
	c, err := net.DialTimeout("tcp", m.Addr(), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.Write([]byte{10, 0xff, 0xff, 0xff, 0xff}); err != nil { // encryptMsg, 4 GiB
		t.Fatal(err)
	}
	// The node answers (an encrypted error) and closes: reading ends
	// without the attacker sending another byte.
	buf := make([]byte, 4096)
	var got int
	for {
		n, err := c.Read(buf)
		got += n
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatalf("the node held a stream announcing 4 GiB open, waiting for it (%d bytes answered)", got)
			}
			break
		}
	}
	t.Logf("a stream announcing 4 GiB: answered (%d bytes) and closed on its 5-byte head", got)
	waitPeerJoins(t, m, cfg.SecretKeyFile)
}

// streamPoolOf says the pool the guard counts streams from addr in.
func streamPoolOf(m *Membership, addr netip.Addr) int {
	m.streams.mu.Lock()
	defer m.streams.mu.Unlock()
	if m.streams.memberAt[addr] > 0 {
		return poolMembers
	}
	return poolStrangers
}

// A member holding the key whose metadata this node does not trust is
// ignored: not one this node routes to, votes with or calls. Its address
// gets no slots of the members' own either — a key holder's made-up or
// misconfigured members would otherwise hold them, at its join and at
// every update of its metadata.
func TestIgnoredMemberStreamsAreStrangers(t *testing.T) {
	keyed := keyedClusters(t)
	cfg := func(name string, bind string, join ...string) configs.Cluster {
		c := keyed(name, join...)
		c.Bind = bind
		c.AllowedNetworks = []string{"127.0.0.0/8"}
		return c
	}
	m := startNode(t, cfg("target", "127.0.0.1:0"), Meta{Role: RoleBalancer, Region: "east", State: StateAlive})
	heavy := edgeMeta(1)
	heavy.Weight = 100
	liar := startNode(t, cfg("liar", "127.0.0.17:0", m.Addr()), heavy)
	at := netip.MustParseAddr("127.0.0.17")
	first := waitIgnored(t, m, "liar")
	if streamPoolOf(m, at) == poolMembers {
		t.Errorf("an ignored member's address (%s) has members' stream slots after its join", first)
	}
	// An update of its metadata, still untrusted (another reason).
	if err := liar.UpdateMeta(t.Context(), func(mt *Meta) { mt.Role = "root"; mt.Weight = 1 }); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); waitIgnored(t, m, "liar") == first && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	second := waitIgnored(t, m, "liar")
	if second == first {
		t.Fatal("the liar's update never reached the target")
	}
	if streamPoolOf(m, at) == poolMembers {
		t.Errorf("an ignored member's address (%s) has members' stream slots after an update", second)
	}
	// Trusted again, it has them.
	if err := liar.UpdateMeta(t.Context(), func(mt *Meta) { *mt = edgeMeta(1) }); err != nil {
		t.Fatal(err)
	}
	waitAll(t, []*Membership{m}, func(ns []Node) bool { return len(ns) == 2 })
	if streamPoolOf(m, at) != poolMembers {
		t.Error("a member trusted again has no members' stream slots")
	}
}
