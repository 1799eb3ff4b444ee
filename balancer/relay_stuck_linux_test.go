package balancer

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health/healthtest"
)

// stuckEdge is a backend that answers one upgrade and hands the test its
// connection, reading nothing more unless the test does.
func stuckEdge(t *testing.T) (string, <-chan net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	conns := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
			c.Close()
			return
		}
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "+wsSampleAccept+"\r\n\r\n")
		conns <- c
	}()
	return "http://" + ln.Addr().String(), conns
}

// fillWrites writes to c until a write blocks: the relay holds bytes for a
// peer that does not read.
func fillWrites(t *testing.T, c net.Conn) int {
	t.Helper()
	buf := make([]byte, 64<<10)
	total := 0
	for {
		c.SetWriteDeadline(time.Now().Add(300 * time.Millisecond))
		n, err := c.Write(buf)
		total += n
		if err != nil {
			c.SetWriteDeadline(time.Time{})
			return total
		}
	}
}

// relayEvents is how many readiness events b's relay loops have served.
func relayEvents(b *Balancer) uint64 {
	var n uint64
	for _, l := range b.relay.loops {
		l.mu.Lock()
		n += l.served
		l.mu.Unlock()
	}
	return n
}

// A client that resets its tunnel while the relay holds its bytes for an
// edge that does not read ends the tunnel. Before, the relay asked epoll
// for nothing on the client's socket while it held them, but epoll reports
// an error on every wait whatever is asked: the loop served the same event
// again and again, a core busy for as long as the edge did not read
// (forever, for an edge that never does), and each event counted as
// activity, so the idle sweep never closed the tunnel either.
func TestClientResetEndsATunnelItsEdgeDoesNotRead(t *testing.T) {
	url, edges := stuckEdge(t)
	b, addr := startBalancerFor(t, configs.Balancer{}, url) // the default tunnel idle timeout: 10m
	c, _ := openRawTunnel(t, addr)
	edge := <-edges
	defer edge.Close()
	wrote := fillWrites(t, c)
	before := relayEvents(b)
	c.(*net.TCPConn).SetLinger(0)
	c.Close() // a reset
	healthtest.WaitUntil(t, "the reset tunnel closed", func() bool { return b.Tunnels() == 0 })
	t.Logf("the client wrote %d bytes before blocking; the relay served %d events after its reset", wrote, relayEvents(b)-before)
}

// An edge that sends its last bytes and closes after the client half-closed
// (its socket shut both ways, epoll reporting a hang-up on every wait)
// while the client does not read yet: the relay waits without serving the
// hang-up again, and the client still gets every byte and the end when it
// reads. Before, the loop served the hang-up without end until the client
// read — a client that never did kept a core busy until the idle timeout.
func TestEdgeHangUpWhileTheClientDoesNotRead(t *testing.T) {
	url, edges := stuckEdge(t)
	b, addr := startBalancerFor(t, configs.Balancer{}, url)
	c, br := openRawTunnel(t, addr)
	defer c.Close()
	edge := <-edges
	defer edge.Close()
	// The client is done sending; the relay passes its FIN on.
	c.(*net.TCPConn).CloseWrite()
	if n, err := edge.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("the edge read %d, %v, want the client's end", n, err)
	}
	// The edge sends until the relay holds bytes for the client and has
	// stopped reading the edge (its socket from the edge keeps what
	// arrives), then its end, which arrives behind them.
	chunk := bytes.Repeat([]byte("0123456789abcdef"), 1<<10)
	sent, last := 0, 0
	for {
		edge.SetWriteDeadline(time.Now().Add(30 * time.Second))
		n, err := edge.Write(chunk)
		sent += n
		if err != nil {
			t.Fatalf("the edge wrote %d bytes: %v", sent, err)
		}
		time.Sleep(5 * time.Millisecond)
		rx, _ := tcpQueues(t, edge.RemoteAddr(), edge.LocalAddr())
		_, tx := tcpQueues(t, edge.LocalAddr(), edge.RemoteAddr())
		if last > 0 && rx >= last && tx == 0 {
			// Unread and not read from: the relay stopped reading, and
			// all the edge sent is there, so its end will be too.
			break
		}
		last = rx
	}
	// The edge's socket (it had the client's end) is gone once the
	// balancer's side acknowledged its end: the hang-up is there.
	edgeLocal, edgeRemote := edge.LocalAddr(), edge.RemoteAddr()
	edge.Close()
	healthtest.WaitUntil(t, "the edge's end acknowledged", func() bool { return tcpSocketGone(t, edgeLocal, edgeRemote) })
	// The relay has the edge's hang-up with bytes for the client held: it
	// serves it once, not on every wait.
	before := relayEvents(b)
	time.Sleep(time.Second)
	served := relayEvents(b) - before
	t.Logf("events served in a second with the edge hung up and the client not reading: %d", served)
	if served > 100 {
		t.Errorf("the relay served %d events in a second of nothing to do: it spins on the edge's hang-up", served)
	}
	c.SetReadDeadline(time.Now().Add(60 * time.Second))
	got, err := io.Copy(io.Discard, br)
	if err != nil || int(got) != sent {
		t.Errorf("the client read %d bytes (%v), the edge sent %d", got, err, sent)
	}
	healthtest.WaitUntil(t, "the tunnel closed", func() bool { return b.Tunnels() == 0 })
}

// tcpQueues are the bytes waiting unread in the socket at local connected to
// remote, and those it sent not yet acknowledged (IPv4), as the kernel's
// table of TCP sockets has them: the one socket's entry, asked for over
// sock_diag. (Reading /proc/net/tcp, the whole table, took 0.2 s a read
// on a machine whose other tests held 12,000 sockets, and the test reads
// them for every 16 KiB it writes.)
func tcpQueues(t *testing.T, local, remote net.Addr) (rx, tx int) {
	t.Helper()
	m, ok := tcpDiag(t, local, remote)
	if !ok {
		return 0, 0
	}
	return int(binary.NativeEndian.Uint32(m[56:])), int(binary.NativeEndian.Uint32(m[60:]))
}

// tcpSocketGone reports whether the kernel has no TCP socket at local
// connected to remote any more.
func tcpSocketGone(t *testing.T, local, remote net.Addr) bool {
	t.Helper()
	_, ok := tcpDiag(t, local, remote)
	return !ok
}

// tcpDiag asks the kernel (NETLINK_SOCK_DIAG, an exact lookup) for the
// IPv4 TCP socket at local connected to remote and returns its
// inet_diag_msg; ok is false when there is none.
func tcpDiag(t *testing.T, local, remote net.Addr) (msg []byte, ok bool) {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_NETLINK, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, syscall.NETLINK_INET_DIAG)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	const sockDiagByFamily = 20 // SOCK_DIAG_BY_FAMILY
	// nlmsghdr (16 bytes), then inet_diag_req_v2 (56).
	req := make([]byte, 16+56)
	binary.NativeEndian.PutUint32(req[0:], uint32(len(req)))
	binary.NativeEndian.PutUint16(req[4:], sockDiagByFamily)
	binary.NativeEndian.PutUint16(req[6:], syscall.NLM_F_REQUEST)
	binary.NativeEndian.PutUint32(req[8:], 1)
	r := req[16:]
	r[0], r[1] = syscall.AF_INET, syscall.IPPROTO_TCP
	binary.NativeEndian.PutUint32(r[4:], 0xffffffff) // every state
	la, ra := local.(*net.TCPAddr).AddrPort(), remote.(*net.TCPAddr).AddrPort()
	binary.BigEndian.PutUint16(r[8:], la.Port())
	binary.BigEndian.PutUint16(r[10:], ra.Port())
	l4, r4 := la.Addr().As4(), ra.Addr().As4()
	copy(r[12:], l4[:])
	copy(r[28:], r4[:])
	binary.NativeEndian.PutUint32(r[48:], 0xffffffff) // INET_DIAG_NOCOOKIE
	binary.NativeEndian.PutUint32(r[52:], 0xffffffff)
	if err := syscall.Sendto(fd, req, 0, &syscall.SockaddrNetlink{Family: syscall.AF_NETLINK}); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 8192)
	n, _, err := syscall.Recvfrom(fd, buf, 0)
	if err != nil {
		t.Fatal(err)
	}
	buf = buf[:n]
	if len(buf) < 16 {
		t.Fatalf("sock_diag: a %d-byte answer", len(buf))
	}
	switch typ := binary.NativeEndian.Uint16(buf[4:]); typ {
	case sockDiagByFamily:
		if len(buf) < 16+72 {
			t.Fatalf("sock_diag: a %d-byte answer", len(buf))
		}
		m := buf[16 : 16+72]
		// With no connected socket the lookup finds the listener on
		// local's port, if there is one: not the socket asked for.
		if binary.BigEndian.Uint16(m[6:]) != ra.Port() {
			return nil, false
		}
		return m, true
	case syscall.NLMSG_ERROR:
		if errno := syscall.Errno(-int32(binary.NativeEndian.Uint32(buf[16:]))); errno != syscall.ENOENT {
			t.Fatalf("sock_diag: %v", errno)
		}
		return nil, false
	default:
		t.Fatalf("sock_diag: answer of type %d", typ)
		return nil, false
	}
}
