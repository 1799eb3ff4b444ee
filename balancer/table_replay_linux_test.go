//go:build linux

package balancer

import (
	"encoding/binary"
	"errors"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health/healthtest"
)

// udpCapture records the UDP datagrams that reach a port on loopback, as
// someone on the path sees them: the gossip's encrypted bytes, which
// memberlist takes again whenever they come (it keeps no record of what it
// has taken). AF_PACKET needs CAP_NET_RAW: without it the test that needs
// one is skipped.
type udpCapture struct {
	fd   int
	port uint16
	stop chan struct{}
	done chan struct{}

	mu       sync.Mutex
	captured [][]byte
	drops    uint32 // what the socket's queue dropped, read at close
}

// captureUDP starts recording what reaches 127.0.0.1:port until stopped:
// that address only — a datagram to another loopback address with the
// same port number (a DNS answer to a load client on 127.0.0.2 whose
// ephemeral port is bal-1's gossip port, beside the end-to-end tests) is
// someone else's.
func captureUDP(t *testing.T, port int) *udpCapture {
	t.Helper()
	ethIP := int(htons(unix.ETH_P_IP))
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, ethIP)
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
		t.Skipf("capturing gossip packets needs CAP_NET_RAW: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IP), Ifindex: lo.Index}); err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	// Only UDP to 127.0.0.1:port is queued: the socket sees all of lo's
	// traffic, and with its default buffer the 100,000-entry table going
	// over TCP, or the other packages' tests beside it, overflowed the
	// queue and an ask was missing from the capture (the replay then
	// carried no ask, and bal-1 neither answered nor refused one).
	if err := filterUDPTo(fd, port); err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	// A read returns at least this often, so stop is seen.
	tv := unix.NsecToTimeval(int64(50 * time.Millisecond))
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	c := &udpCapture{fd: fd, port: uint16(port), stop: make(chan struct{}), done: make(chan struct{})}
	go c.run()
	t.Cleanup(c.close)
	return c
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// udpToFilter is a classic BPF program passing only unfragmented IPv4 UDP
// datagrams to 127.0.0.1:port, for a packet socket whose packets begin at
// the IP header. A jump skips that many instructions: every refusal lands
// on the last.
func udpToFilter(port int) []bpf.Instruction {
	return []bpf.Instruction{
		bpf.LoadAbsolute{Off: 9, Size: 1}, // protocol
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: unix.IPPROTO_UDP, SkipTrue: 8},
		bpf.LoadAbsolute{Off: 16, Size: 4}, // destination address
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: 0x7f000001, SkipTrue: 6},
		bpf.LoadAbsolute{Off: 6, Size: 2}, // flags and fragment offset
		bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: 0x1fff, SkipTrue: 4},
		bpf.LoadMemShift{Off: 0},          // X = the IP header's length
		bpf.LoadIndirect{Off: 2, Size: 2}, // UDP destination port
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: uint32(port), SkipTrue: 1},
		bpf.RetConstant{Val: 0xffff},
		bpf.RetConstant{Val: 0},
	}
}

// filterUDPTo attaches udpToFilter(port) to the packet socket fd.
func filterUDPTo(fd, port int) error {
	prog, err := bpf.Assemble(udpToFilter(port))
	if err != nil {
		return err
	}
	filter := make([]unix.SockFilter, len(prog))
	for i, ins := range prog {
		filter[i] = unix.SockFilter{Code: ins.Op, Jt: ins.Jt, Jf: ins.Jf, K: ins.K}
	}
	return unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]})
}

// The capture's filter passes what reaches 127.0.0.1:port over UDP and
// nothing else: its first version's jumps landed one short, on the pass,
// so every TCP segment on loopback was queued and the ask could be dropped
// from a full queue.
func TestCaptureFilterPassesOnlyUDPTo(t *testing.T) {
	vm, err := bpf.NewVM(udpToFilter(7946))
	if err != nil {
		t.Fatal(err)
	}
	packet := func(proto byte, dst [4]byte, frag uint16, port uint16) []byte {
		p := make([]byte, 28)
		p[0] = 0x45 // IPv4, a 20-byte header
		p[9] = proto
		binary.BigEndian.PutUint16(p[6:], frag)
		copy(p[12:], []byte{127, 0, 0, 1})
		copy(p[16:], dst[:])
		binary.BigEndian.PutUint16(p[22:], port)
		return p
	}
	lo, other := [4]byte{127, 0, 0, 1}, [4]byte{127, 0, 0, 2}
	for _, c := range []struct {
		name   string
		packet []byte
		pass   bool
	}{
		{"UDP to 127.0.0.1:port", packet(unix.IPPROTO_UDP, lo, 0, 7946), true},
		{"UDP, don't fragment set", packet(unix.IPPROTO_UDP, lo, 0x4000, 7946), true},
		{"TCP to 127.0.0.1:port", packet(unix.IPPROTO_TCP, lo, 0, 7946), false},
		{"UDP to another port", packet(unix.IPPROTO_UDP, lo, 0, 7947), false},
		{"UDP to 127.0.0.2:port", packet(unix.IPPROTO_UDP, other, 0, 7946), false},
		{"a later fragment", packet(unix.IPPROTO_UDP, lo, 185, 7946), false},
	} {
		n, err := vm.Run(c.packet)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if pass := n > 0; pass != c.pass {
			t.Errorf("%s: passed %v, want %v", c.name, pass, c.pass)
		}
	}
}

func (c *udpCapture) run() {
	defer close(c.done)
	buf := make([]byte, 65536)
	for {
		select {
		case <-c.stop:
			return
		default:
		}
		n, from, err := unix.Recvfrom(c.fd, buf, 0)
		if err != nil {
			continue // the read timeout, or an interrupted read
		}
		// Loopback shows each packet twice: as sent and as received.
		if ll, ok := from.(*unix.SockaddrLinklayer); !ok || ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		p := buf[:n]
		if len(p) < 20 || p[0]>>4 != 4 || p[9] != unix.IPPROTO_UDP || !net.IP(p[16:20]).Equal(net.IPv4(127, 0, 0, 1)) {
			continue
		}
		ihl := int(p[0]&0x0f) * 4
		if len(p) < ihl+8 || binary.BigEndian.Uint16(p[ihl+2:]) != c.port {
			continue
		}
		c.mu.Lock()
		c.captured = append(c.captured, append([]byte(nil), p[ihl+8:]...))
		c.mu.Unlock()
	}
}

// close stops recording; what was captured stays, and how many packets
// the socket's queue dropped is read.
func (c *udpCapture) close() {
	select {
	case <-c.stop:
		return
	default:
	}
	close(c.stop)
	<-c.done
	if st, err := unix.GetsockoptTpacketStats(c.fd, unix.SOL_PACKET, unix.PACKET_STATISTICS); err == nil {
		c.mu.Lock()
		c.drops = st.Drops
		c.mu.Unlock()
	}
	unix.Close(c.fd)
}

func (c *udpCapture) dropped() uint32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.drops
}

func (c *udpCapture) datagrams() [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([][]byte(nil), c.captured...)
}

// A starting balancer's ask for the table, captured on the wire and sent
// again by someone without the cluster's key, costs the asked balancer
// nothing: memberlist takes a replayed encrypted packet as it took the
// original, and the ask carries no more than a sender's name and an id.
// Before, an ask was refused only while the same one was queued or being
// answered: every copy sent later was a new job, and the whole table went to
// the asker again, which took it as its own answer (its id was fixed for
// its process's life) — 8 datagrams captured at a balancer's start, 6,245
// bytes, sent again 5 s later made its peer send 14.5 MB, its table of
// 100,000 entries 5 times over. Now each round of asks has its own id and
// time, a copy out of its time or of an ask answered is refused, one peer is
// answered at most once a second, and an answer to an ask the asker is not
// waiting for is ignored.
func TestReplayedTableAskSendsNoTable(t *testing.T) {
	if testing.Short() {
		// Under the race detector (-short) on a loaded machine the
		// 100,000-entry table took longer than the 30 s liveness wait.
		t.Skip("sends a table of 100,000 entries")
	}
	const n = 100000
	cl, cfg, b1 := balancerWithTable(t, n, 0)

	_, portS, _ := net.SplitHostPort(b1.m.Addr())
	port, _ := strconv.Atoi(portS)
	capture := captureUDP(t, port)
	cfg2 := cfg
	cfg2.SessionTable.StartupWait = configs.Duration(healthtest.Patience)
	b2 := startClusterBalancer(t, cl, "bal-2", cfg2)
	healthtest.WaitUntil(t, "bal-2 has bal-1's table", func() bool { return b2.bal.table.routable() && b2.bal.table.len() == n })
	sy := b1.bal.table.sync.Load()
	idle := func() bool {
		sy.mu.Lock()
		defer sy.mu.Unlock()
		return len(sy.answers) == 0 && len(sy.answering) == 0
	}
	healthtest.WaitUntil(t, "bal-1 answered every ask", idle)
	capture.close()
	packets := capture.datagrams()
	answered := func() float64 {
		return b1.metric(t, "ringlb_balancer_session_table_sync_bytes_total", map[string]string{"kind": "answer"})
	}
	// A copy is refused as one (replayed), or, while bal-1 does not take
	// bal-2 for a member (gossip on a loaded machine took it for dead for
	// a moment), as from no balancer (not_a_balancer): either way no
	// table goes.
	refused := func() float64 {
		return b1.metric(t, "ringlb_balancer_session_table_ignored_total", map[string]string{"reason": ignoredReplay}) +
			b1.metric(t, "ringlb_balancer_session_table_ignored_total", map[string]string{"reason": ignoredSender})
	}
	before, refusedBefore := answered(), refused()
	table := float64(n * recordSize)
	t.Logf("bal-1 sent its table %.2f times for bal-2's start; %d datagrams to its gossip port captured (%d packets dropped by the capture)", before/table, len(packets), capture.dropped())

	// Sent again from a socket of no member, without the key.
	replayer, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer replayer.Close()
	to := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}
	bytes, rounds := 0, 0
	var last time.Time
	replay := func() {
		bytes = 0
		for _, p := range packets {
			if _, err := replayer.WriteToUDP(p, to); err != nil {
				t.Fatal(err)
			}
			bytes += len(p)
		}
		rounds++
		last = time.Now()
	}
	replay()
	// bal-1 either answers a copy (the table goes out again) or refuses
	// it. UDP on a loaded loopback loses datagrams — bal-1's socket
	// buffer fills while its reader waits — so the copies go again each
	// second until one is taken, as an attacker would send them. In full
	// runs beside the end-to-end package, about one run in five, no copy
	// reached bal-1's table at all: the capture's filter passed loopback's
	// TCP too (its jumps landed one short), the package's traffic filled
	// its queue, and the ask was not among the datagrams captured. A run
	// whose capture still dropped packets cannot judge the refusal, and
	// says so; one whose capture is whole and whose copies never count
	// fails.
	deadline := time.Now().Add(healthtest.Patience)
	for answered()-before < table && refused() <= refusedBefore {
		if time.Now().After(deadline) {
			if sent := answered() - before; sent > 0 {
				t.Fatalf("bal-1 sent %.0f bytes of answers after the replay", sent)
			}
			if d := capture.dropped(); d > 0 {
				t.Skipf("the capture dropped %d packets and no copy of the %d captured datagrams reached bal-1's table in %d rounds: the ask may not be among them, the refusal is not judged in this run", d, len(packets), rounds)
			}
			t.Fatalf("no copy of the %d captured datagrams reached bal-1's table in %d rounds (nothing answered, nothing refused), the capture whole", len(packets), rounds)
		}
		if time.Since(last) >= time.Second {
			replay()
		}
		time.Sleep(10 * time.Millisecond)
	}
	healthtest.WaitUntil(t, "bal-1 answered every ask", idle)
	sent := answered() - before
	t.Logf("%d datagrams (%d bytes) replayed %d times: bal-1 sent %.0f bytes of answers (%.2f tables), refused %.0f asks or messages (as copies %.0f in all, as from no balancer %.0f in all)", len(packets), bytes, rounds, sent, sent/table, refused()-refusedBefore,
		b1.metric(t, "ringlb_balancer_session_table_ignored_total", map[string]string{"reason": ignoredReplay}),
		b1.metric(t, "ringlb_balancer_session_table_ignored_total", map[string]string{"reason": ignoredSender}))
	if sent >= table {
		t.Errorf("a replay of %d bytes made bal-1 send %.0f bytes, its table %.2f times; want none", bytes, sent, sent/table)
	}
}
