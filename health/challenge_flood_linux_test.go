package health

import (
	"encoding/binary"
	"fmt"
	"net"
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
	testHookTransport = func(name string, tr memberlist.NodeAwareTransport) memberlist.NodeAwareTransport {
		watch = &dialWatch{NodeAwareTransport: tr, to: sink}
		return watch
	}
	cfg := testCluster("target")
	cfg.SecretKeyFile = key
	target, err := joinOn(t.Context(), cfg, Meta{Role: RoleBalancer, Region: "east", State: StateAlive}, nil, nil, tuning{})
	testHookTransport = nil
	if err != nil {
		t.Fatal(err)
	}
	stopAtCleanup(t, target)

	// mallory holds the key and takes plain packets in: what it is told,
	// it gossips to the target encrypted.
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
	host, p, _ := net.SplitHostPort(sink)
	port, _ := strconv.Atoi(p)
	to, err := net.Dial("udp", mallory.LocalNode().Address())
	if err != nil {
		t.Fatal(err)
	}
	defer to.Close()
	const made = 120
	for i := range made {
		alive := aliveMsg(fmt.Sprintf("made-up-%d", i), net.ParseIP(host).To4(), uint16(port), meta)
		if _, err := to.Write(alive); err != nil {
			t.Fatal(err)
		}
	}
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
