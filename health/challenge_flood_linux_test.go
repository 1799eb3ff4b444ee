package health

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"fmt"
	"net"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/ringlb/ringlb/configs"
)

// dialWatch counts a node's dials to one address, and the most in flight.
type dialWatch struct {
	memberlist.NodeAwareTransport
	to                     string
	total, now, mostAtOnce atomic.Int64
}

func (d *dialWatch) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	if a.Addr != d.to {
		return d.NodeAwareTransport.DialAddressTimeout(a, timeout)
	}
	d.total.Add(1)
	n := d.now.Add(1)
	for m := d.mostAtOnce.Load(); n > m && !d.mostAtOnce.CompareAndSwap(m, n); m = d.mostAtOnce.Load() {
	}
	defer d.now.Add(-1)
	return d.NodeAwareTransport.DialAddressTimeout(a, timeout)
}

// A member holding the key can tell the cluster of as many nodes as it
// likes, each at any address: memberlist takes them in (it keeps what it is
// told, docs/SECURITY.md), and each is pending here until it answers a
// challenge — after an unanswered UDP one, over the stream too, a TCP dial
// that waits memberlist's TCPTimeout on an address that drops SYNs. One
// dial in flight per pending member, and none across them: 120 made-up
// members at one address had every node hold 120 dials to it at once, a
// descriptor each (a push/pull's worth, tens of thousands, exhausts them,
// and points every node's dials at any host). Stream sends in flight are
// bounded together; the UDP challenges go on.
func TestMadeUpMembersHoldFewStreamDials(t *testing.T) {
	key := writeKey(t, 32)
	sink := fullQueueTarget(t)
	var watch *dialWatch
	target := startTargetThrough(t, key, func(tr memberlist.NodeAwareTransport) memberlist.NodeAwareTransport {
		watch = &dialWatch{NodeAwareTransport: tr, to: sink}
		return watch
	})

	host, p, _ := net.SplitHostPort(sink)
	port, _ := strconv.Atoi(p)
	const made = 120
	tellOfMadeUp(t, key, target, net.ParseIP(host).To4(), uint16(port), made, 0)
	waitFor(t, "the target dials the made-up members' address as often as there are", func() bool {
		return watch.total.Load() >= made
	})
	t.Logf("%d dials to the made-up members' address, at most %d at once", watch.total.Load(), watch.mostAtOnce.Load())
	// Beside the challenges, memberlist's own dials there: its probe's
	// TCP fallback and its push/pull, a few at a time.
	const memberlistOwn = 4
	if most := watch.mostAtOnce.Load(); most > maxStreamSends+memberlistOwn {
		t.Errorf("%d dials at once to the address of %d made-up members, want at most %d", most, made, maxStreamSends+memberlistOwn)
	}
}

// aliveMsg is memberlist's alive message (net.go: aliveMsg, then its
// struct alive as a MessagePack map), incarnation 1, protocol versions
// 1–5 (2 spoken).
func aliveMsg(name string, ip net.IP, port uint16, meta []byte) []byte {
	str := func(b []byte, s []byte) []byte {
		if len(s) < 32 {
			return append(append(b, 0xa0|byte(len(s))), s...)
		}
		return append(binary.BigEndian.AppendUint16(append(b, 0xda), uint16(len(s))), s...)
	}
	b := []byte{4, 0x86} // aliveMsg; a map of 6
	b = append(str(b, []byte("Incarnation")), 1)
	b = str(str(b, []byte("Node")), []byte(name))
	b = str(str(b, []byte("Addr")), ip)
	b = binary.BigEndian.AppendUint16(append(str(b, []byte("Port")), 0xcd), port)
	b = str(str(b, []byte("Meta")), meta)
	return str(str(b, []byte("Vsn")), []byte{1, 5, 2, 0, 0, 0})
}

// tellOfMadeUp has a member holding the key (mallory, a plain memberlist
// that takes plain packets in and gossips what it is told to the target,
// encrypted) tell the target of made members at ip:port that do not exist
// (the first earlier of them of an earlier release, which the target pings),
// and returns it once it holds them all.
func tellOfMadeUp(t *testing.T, key string, target *Membership, ip net.IP, port uint16, made, earlier int) *memberlist.Memberlist {
	t.Helper()
	keys, err := configs.ReadKeyring(key)
	if err != nil {
		t.Fatal(err)
	}
	kr, err := memberlist.NewKeyring(keys, keys[0])
	if err != nil {
		t.Fatal(err)
	}
	mc := memberlist.DefaultLocalConfig()
	mc.Name, mc.BindAddr, mc.BindPort = "mallory", "127.0.0.1", 0
	mc.Keyring, mc.GossipVerifyIncoming, mc.GossipVerifyOutgoing = kr, false, true
	mc.PushPullInterval = 200 * time.Millisecond
	mc.ProbeInterval = time.Hour // it probes none of the made-up members away
	mc.LogOutput = discard{}
	mallory, err := memberlist.Create(mc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mallory.Shutdown() })
	if _, err := mallory.Join([]string{target.Addr()}); err != nil {
		t.Fatal(err)
	}

	meta, err := Meta{Role: RoleEdge, Region: "east", URL: "http://127.0.0.1:7101", Weight: 1, State: StateAlive, PeerSigning: PeerSigningTableAsk}.Encode()
	if err != nil {
		t.Fatal(err)
	}
	metaEarlier, err := Meta{Role: RoleEdge, Region: "east", URL: "http://127.0.0.1:7101", Weight: 1, State: StateAlive, PeerSigning: PeerSigningLive - 1}.Encode()
	if err != nil {
		t.Fatal(err)
	}
	to, err := net.Dial("udp", mallory.LocalNode().Address())
	if err != nil {
		t.Fatal(err)
	}
	defer to.Close()
	// In batches, each sent again until mallory holds it: its socket's
	// buffer drops what it has no room for.
	const batch = 200
	for from := 0; from < made; from += batch {
		upTo := min(from+batch, made)
		for held := false; !held; {
			for i := from; i < upTo; i++ {
				m := meta
				if i < earlier {
					m = metaEarlier
				}
				if _, err := to.Write(aliveMsg(fmt.Sprintf("made-up-%d", i), ip, port, m)); err != nil {
					t.Fatal(err)
				}
			}
			for range 50 {
				if held = mallory.NumMembers() >= 2+upTo; held {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
		}
	}
	// All of them in one push/pull: its own gossip reaches the target
	// only now and then, sent to members picked at random.
	if _, err := mallory.Join([]string{target.Addr()}); err != nil {
		t.Fatal(err)
	}
	return mallory
}

// challengeWatch counts the liveness challenges a node sends by UDP to
// one address (it decrypts them with the cluster's key) and the packets
// it sends there in all.
type challengeWatch struct {
	memberlist.NodeAwareTransport
	to               string
	key              []byte
	challenges, sent atomic.Int64
}

func (w *challengeWatch) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	if a.Addr == w.to {
		w.sent.Add(1)
		if msg := w.open(b); len(msg) >= 3 && msg[0] == 8 && msg[1] == msgLive && msg[2] == liveChallenge { // memberlist's userMsg
			w.challenges.Add(1)
		}
	}
	return w.NodeAwareTransport.WriteToAddress(b, a)
}

// open is b decrypted (memberlist's version 1: version, nonce, sealed;
// no label) without its CRC header, or nil.
func (w *challengeWatch) open(b []byte) []byte {
	block, err := aes.NewCipher(w.key)
	if err != nil {
		return nil
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil || len(b) < 1+gcm.NonceSize() || b[0] != 1 {
		return nil
	}
	msg, err := gcm.Open(nil, b[1:1+gcm.NonceSize()], b[1+gcm.NonceSize():], nil)
	if err != nil {
		return nil
	}
	if len(msg) >= 5 && msg[0] == 12 { // memberlist's hasCrcMsg
		msg = msg[5:]
	}
	return msg
}

// A member holding the key can tell every node of any number of made-up
// members in one push/pull. Each is pending until it answers a challenge
// (or, announcing an earlier release, a ping), which it never does: it
// must cost a node little memory, no goroutine of its own, and challenges
// at a bounded rate in all, however many there are.
func TestMadeUpMembersAreConfirmedBounded(t *testing.T) {
	key := writeKey(t, 32)
	sink, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	keys, err := configs.ReadKeyring(key)
	if err != nil {
		t.Fatal(err)
	}
	var watch *challengeWatch
	target := startTargetThrough(t, key, func(tr memberlist.NodeAwareTransport) memberlist.NodeAwareTransport {
		watch = &challengeWatch{NodeAwareTransport: tr, to: sink.LocalAddr().String(), key: keys[0]}
		return watch
	})
	runtime.GC()
	before := runtime.NumGoroutine()
	var mem0 runtime.MemStats
	runtime.ReadMemStats(&mem0)

	const made = 4000
	addr := sink.LocalAddr().(*net.UDPAddr)
	start := time.Now()
	tellOfMadeUp(t, key, target, addr.IP.To4(), uint16(addr.Port), made, made/4)
	pending := func() int {
		target.mu.Lock()
		defer target.mu.Unlock()
		return len(target.pending)
	}
	// memberlist's probes take a few for dead meanwhile (one a probe
	// interval), dropped unanswered: the rest are pending.
	waitFor(t, "the target takes every made-up member in", func() bool {
		return pending()+int(target.joinsUnconfirmed.Load()) >= made
	})
	held := pending()
	runtime.GC()
	goroutines := runtime.NumGoroutine() - before
	var mem runtime.MemStats
	runtime.ReadMemStats(&mem)
	t.Logf("%d made-up members pending %s after they were first told; %d goroutines more than before, heap %d KiB more (%d B a member, memberlist's own included)",
		held, time.Since(start).Round(time.Millisecond), goroutines, (int64(mem.HeapAlloc)-int64(mem0.HeapAlloc))>>10, (int64(mem.HeapAlloc)-int64(mem0.HeapAlloc))/int64(held))

	// Challenges over a window of probe intervals, against the budget
	// over as many (the window's length read back, not asserted).
	const window = 20
	c0, s0, w0 := watch.challenges.Load(), watch.sent.Load(), time.Now()
	time.Sleep(window * target.probeInterval)
	challenges, sent, took := watch.challenges.Load()-c0, watch.sent.Load()-s0, time.Since(w0)
	intervals := float64(took) / float64(target.probeInterval)
	t.Logf("%d UDP challenges to the made-up members' address in %s (%.0f a probe interval), %d packets there in all", challenges, took.Round(time.Millisecond), float64(challenges)/intervals, sent)

	// A member joining meanwhile is believed all the same: it challenges
	// the target, which asks it next, ahead of the made-up members.
	joinedAt := time.Now()
	real := testCluster("real", target.Addr())
	real.SecretKeyFile = key
	believed := make(chan time.Time, 1)
	go func() {
		for !hasMember("real")(target.Members()) {
			time.Sleep(5 * time.Millisecond)
		}
		believed <- time.Now()
	}()
	startNode(t, real, edgeMeta(1))
	started := time.Now()
	select {
	case at := <-believed:
		t.Logf("a real member joining was believed %s after it started (its Join returned %s after it started)", at.Sub(joinedAt).Round(time.Millisecond), started.Sub(joinedAt).Round(time.Millisecond))
	case <-time.After(30 * time.Second):
		t.Fatal("the target did not believe a real member joining it within 30 s")
	}

	// A goroutine each would be held pending: a few in flight at most.
	if most := maxConfirmPings + maxStreamSends + 16; goroutines > most {
		t.Errorf("%d goroutines more with %d made-up members pending, want at most %d", goroutines, held, most)
	}
	if most := int64((intervals + 1) * maxConfirmSends); challenges > most {
		t.Errorf("%d challenges in %.1f probe intervals to %d made-up members, want at most %d (%d a probe interval)", challenges, intervals, held, most, maxConfirmSends)
	}
}

// startTargetThrough starts a keyed balancer node ("target", key) whose
// memberlist transport is wrap's of its own, stopped as the test ends.
func startTargetThrough(t *testing.T, key string, wrap func(memberlist.NodeAwareTransport) memberlist.NodeAwareTransport) *Membership {
	t.Helper()
	testHookTransport = func(_ string, tr memberlist.NodeAwareTransport) memberlist.NodeAwareTransport { return wrap(tr) }
	cfg := testCluster("target")
	cfg.SecretKeyFile = key
	target, err := joinOn(t.Context(), cfg, Meta{Role: RoleBalancer, Region: "east", State: StateAlive}, nil, nil, tuning{})
	testHookTransport = nil
	if err != nil {
		t.Fatal(err)
	}
	stopAtCleanup(t, target)
	return target
}
