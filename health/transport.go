package health

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/go-sockaddr"
	"github.com/hashicorp/memberlist"
)

// GossipSockets are the gossip port's two sockets: TCP for streams (joins,
// push/pull) and UDP for probes and gossip, on the same port. A node binds
// them at its first start; an upgrade hands them to the new process, so the
// port is never free for another user of the host to take between the old
// process leaving and the new one joining.
type GossipSockets struct {
	TCP *net.TCPListener
	UDP *net.UDPConn
}

// ListenGossip binds the gossip sockets at addr:port; port 0 picks a port
// free for both protocols.
func ListenGossip(addr string, port int) (GossipSockets, error) {
	ip, err := netip.ParseAddr(addr)
	if err != nil {
		return GossipSockets{}, fmt.Errorf("gossip bind %q is not an IP address", addr)
	}
	tries := 1
	if port == 0 {
		// A free TCP port may be taken for UDP: try another.
		tries = 10
	}
	for range tries {
		var tcp *net.TCPListener
		if tcp, err = net.ListenTCP("tcp", net.TCPAddrFromAddrPort(netip.AddrPortFrom(ip, uint16(port)))); err != nil {
			return GossipSockets{}, err
		}
		var udp *net.UDPConn
		bound := tcp.Addr().(*net.TCPAddr).AddrPort()
		if udp, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(bound)); err == nil {
			return GossipSockets{TCP: tcp, UDP: udp}, nil
		}
		tcp.Close()
	}
	return GossipSockets{}, err
}

// Port is the port both sockets are bound to.
func (s GossipSockets) Port() int { return s.TCP.Addr().(*net.TCPAddr).Port }

// check says whether s are a gossip port's sockets at addr:port (port 0:
// any port): an upgrade's new config may name another.
func (s GossipSockets) check(addr string, port int) error {
	want, err := netip.ParseAddr(addr)
	if err != nil {
		return fmt.Errorf("gossip bind %q is not an IP address", addr)
	}
	for _, got := range []netip.AddrPort{s.TCP.Addr().(*net.TCPAddr).AddrPort(), s.UDP.LocalAddr().(*net.UDPAddr).AddrPort()} {
		if got.Addr().Unmap() != want.Unmap() || (port != 0 && int(got.Port()) != port) {
			return fmt.Errorf("the inherited gossip sockets are bound to %s, the config says %s", got, net.JoinHostPort(addr, strconv.Itoa(port)))
		}
	}
	if s.Port() != int(s.UDP.LocalAddr().(*net.UDPAddr).Port) {
		return errors.New("the inherited gossip sockets are on two ports")
	}
	return nil
}

// Close closes both sockets.
func (s GossipSockets) Close() {
	s.TCP.Close()
	s.UDP.Close()
}

const (
	// maxGossipPacket is the largest UDP datagram.
	maxGossipPacket = 65536
	// gossipRecvBuffer is the UDP receive buffer asked for (halved until
	// the kernel takes it), as memberlist's own transport does.
	gossipRecvBuffer = 2 << 20
	// acceptBackoffMax bounds the pause after a failed accept or read
	// (pause): the loop waits, doubling from 5ms, instead of spinning.
	acceptBackoffMax = time.Second
)

// socketTransport is memberlist's transport over sockets given to it (bound
// here or inherited): memberlist's own binds its sockets itself. Each
// packet is copied out of one read buffer at its size, so a flood of small
// datagrams does not hold 64 KiB each until memberlist has read them.
type socketTransport struct {
	socks   GossipSockets
	bindAll bool // bound to every interface: advertise a private address
	// dials ends the dials in flight, and the streams they opened, when
	// the membership stops, before it leaves: a seed whose host is gone
	// drops SYNs, and the seed check's join of it (keepSeeds) held
	// Shutdown for memberlist's TCPTimeout (10 s on a LAN, each such seed
	// in turn).
	dials    context.Context
	packets  chan *memberlist.Packet
	streams  chan net.Conn
	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
	log      *slog.Logger
}

func newSocketTransport(socks GossipSockets, dials context.Context, logger *slog.Logger) *socketTransport {
	for size := gossipRecvBuffer; size > 0; size /= 2 {
		if socks.UDP.SetReadBuffer(size) == nil {
			break
		}
	}
	t := &socketTransport{socks: socks, bindAll: socks.TCP.Addr().(*net.TCPAddr).IP.IsUnspecified(), dials: dials,
		packets: make(chan *memberlist.Packet), streams: make(chan net.Conn), stop: make(chan struct{}), log: logger}
	t.wg.Add(2)
	go t.readPackets()
	go t.accept()
	return t
}

// FinalAdvertiseAddr is the address other members reach this one at: the
// one configured, else the bound one (a private address when bound to
// every interface), as memberlist's own transport decides.
func (t *socketTransport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	if ip != "" {
		a := net.ParseIP(ip)
		if a == nil {
			return nil, 0, fmt.Errorf("advertise address %q is not an IP address", ip)
		}
		if a4 := a.To4(); a4 != nil {
			a = a4
		}
		return a, port, nil
	}
	a := t.socks.TCP.Addr().(*net.TCPAddr).IP
	if t.bindAll {
		private, err := sockaddr.GetPrivateIP()
		if err != nil {
			return nil, 0, fmt.Errorf("find a private address to advertise: %w", err)
		}
		if a = net.ParseIP(private); a == nil {
			return nil, 0, errors.New("no private address to advertise: set cluster.advertise")
		}
	}
	return a, t.socks.Port(), nil
}

func (t *socketTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	return t.WriteToAddress(b, memberlist.Address{Addr: addr})
}

func (t *socketTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	to, err := net.ResolveUDPAddr("udp", a.Addr)
	if err != nil {
		return time.Time{}, err
	}
	_, err = t.socks.UDP.WriteTo(b, to)
	return time.Now(), err
}

func (t *socketTransport) PacketCh() <-chan *memberlist.Packet { return t.packets }

func (t *socketTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return t.DialAddressTimeout(memberlist.Address{Addr: addr}, timeout)
}

func (t *socketTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	c, err := d.DialContext(t.dials, "tcp", a.Addr)
	if err != nil {
		return nil, err
	}
	// The stream ends with the membership too: a peer that takes it and
	// answers nothing (a seed's host now someone else's) held a seed
	// check's push/pull, and so Shutdown, for the TCPTimeout.
	return &dialedStream{Conn: c, stop: context.AfterFunc(t.dials, func() { c.Close() })}, nil
}

// dialedStream is a stream this node dialed, closed when the membership
// stops.
type dialedStream struct {
	net.Conn
	stop func() bool
}

func (s *dialedStream) Close() error {
	s.stop()
	return s.Conn.Close()
}

func (t *socketTransport) StreamCh() <-chan net.Conn { return t.streams }

// Shutdown closes the sockets and waits for the loops reading them. The
// sockets' copies an upgrade handed on stay open in the new process.
func (t *socketTransport) Shutdown() error {
	t.stopOnce.Do(func() {
		close(t.stop)
		t.socks.Close()
	})
	t.wg.Wait()
	return nil
}

func (t *socketTransport) stopped() bool {
	select {
	case <-t.stop:
		return true
	default:
		return false
	}
}

func (t *socketTransport) readPackets() {
	defer t.wg.Done()
	buf := make([]byte, maxGossipPacket)
	var pause time.Duration
	for {
		n, from, err := t.socks.UDP.ReadFrom(buf)
		at := time.Now()
		if err != nil {
			if t.stopped() || !t.pause(&pause, "reading a packet", err) {
				return
			}
			continue
		}
		pause = 0
		if n == 0 {
			continue // memberlist's messages are at least a type byte
		}
		select {
		case t.packets <- &memberlist.Packet{Buf: append([]byte(nil), buf[:n]...), From: from, Timestamp: at}:
		case <-t.stop:
			return
		}
	}
}

// pause waits after a failed read or accept (out of descriptors, EMFILE,
// or of kernel memory), doubling from 5ms up to acceptBackoffMax, so the
// loop neither spins nor ends while the failure lasts: the port stays
// open. It reports false when the transport stopped meanwhile.
func (t *socketTransport) pause(d *time.Duration, what string, err error) bool {
	*d = min(max(2**d, 5*time.Millisecond), acceptBackoffMax)
	t.log.Warn("gossip: "+what+" failed; pausing", "err", err, "pause", *d)
	select {
	case <-time.After(*d):
		return true
	case <-t.stop:
		return false
	}
}

func (t *socketTransport) accept() {
	defer t.wg.Done()
	var pause time.Duration
	for {
		c, err := t.socks.TCP.AcceptTCP()
		if err != nil {
			if t.stopped() || !t.pause(&pause, "accepting a stream", err) {
				return
			}
			continue
		}
		pause = 0
		select {
		case t.streams <- c:
		case <-t.stop:
			c.Close()
			return
		}
	}
}
