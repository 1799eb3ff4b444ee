package gslb

import (
	"encoding/binary"
	"fmt"
	"net"
	"time"

	"github.com/miekg/dns"

	"github.com/ringlb/ringlb/balancer/acceptguard"
)

// DNS over TCP is open to anyone, and a connection costs the server a
// descriptor, a goroutine and what it buffers until the connection ends.
// miekg/dns bounds a connection's reads (ReadTimeout for the first query,
// IdleTimeout between queries), but not its writes: it never applies Server.WriteTimeout. So each write gets
// its own deadline here. It also allocates the whole length a query's
// prefix announces (up to 64 KiB) before reading a byte of it: queryReader
// ends a connection announcing more than a query can be. And the number of
// connections is capped (gslb.max_tcp_connections, acceptguard), and so is
// one client's share of them (max_tcp_connections_per_ip), or one address
// could hold every slot until its connections' deadlines, and open them
// again.
const (
	tcpReadTimeout = 5 * time.Second
	tcpIdleTimeout = 10 * time.Second
	// tcpWriteTimeout bounds one write of an answer (one message of a zone
	// transfer): a client that pipelines queries and never reads its
	// answers blocks the server's write once the socket's buffers are full,
	// and without a deadline holds the connection for ever — and Shutdown
	// too, which unblocks only reads.
	tcpWriteTimeout = 5 * time.Second
	// tcpWriteStall: a write that has waited this long on a client that
	// does not read makes its connection wait on the client as an idle one
	// does: at max_tcp_connections it may be ended to make room
	// (acceptguard's EndStalledWrites). Without it a flood that pipelines
	// queries for big answers, never reads, and reconnects each connection
	// as soon as its write deadline closes it held every slot: another
	// client's TCP queries answered 0 of 8. A client reading its answers
	// takes a 64 KiB answer from the kernel's buffers in far less.
	tcpWriteStall = 500 * time.Millisecond
	// tcpMaxQueries: no cap on the queries of a connection (miekg/dns's
	// default closes it after 128). A close with queries still unread
	// resets the connection, and the client's kernel drops the answers it
	// had received but not read: a resolver pipelining 200 read 34 of the
	// 128 answered. The cap bounded nothing an attacker needs either —
	// reconnecting is cheap — the connection caps and deadlines bound what
	// a connection holds, as NSD and Knot do (no query cap by default).
	tcpMaxQueries = -1
)

// writeDeadlineListener gives every connection it accepts a deadline on
// each write, and closes it when a write fails.
type writeDeadlineListener struct {
	net.Listener
	timeout time.Duration
}

func (l writeDeadlineListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &writeDeadlineConn{Conn: c, timeout: l.timeout}, nil
}

type writeDeadlineConn struct {
	net.Conn
	timeout time.Duration
}

func (c *writeDeadlineConn) Write(b []byte) (int, error) {
	if err := c.Conn.SetWriteDeadline(time.Now().Add(c.timeout)); err != nil {
		return 0, err
	}
	n, err := c.Conn.Write(b)
	if err != nil {
		// miekg/dns goes on reading after a failed write, and a client
		// that pipelined its queries has more waiting: each would wait out
		// the deadline in turn. A failed (maybe partial) write ends the
		// connection instead; the stream is out of step anyway.
		c.Conn.Close()
	}
	return n, err
}

// maxQueryBytes bounds a query: a question is at most 260 bytes, EDNS
// options (a cookie, Client Subnet, padding) and a TSIG a few hundred more.
// The UDP loop reads no more (udpQueryBytes); over TCP a longer one ends
// the connection before anything is buffered for it.
const maxQueryBytes = 4096

// errQueryTooLong: a TCP message's length prefix says more than maxQueryBytes.
var errQueryTooLong = fmt.Errorf("DNS query over TCP longer than %d bytes", maxQueryBytes)

// queryReader is miekg/dns's reader (which keeps its deadlines, and their
// interplay with Shutdown) reading through a connection that refuses a
// length prefix over maxQueryBytes.
type queryReader struct{ dns.Reader }

func (r queryReader) ReadTCP(conn net.Conn, timeout time.Duration) ([]byte, error) {
	// The connection waits for a query (acceptguard's EndWaiting: at the
	// cap, the one waiting the longest makes room) until one is read
	// whole: not from its first byte, or a query trickled a byte at a time
	// would hold the connection; and again from here on whatever became of
	// the last one — a message ignored (a response, one shorter than a
	// header) is answered with nothing, and would leave it busy for ever.
	gc, _ := conn.(*writeDeadlineConn)
	var guarded *acceptguard.Conn
	if gc != nil {
		guarded, _ = gc.Conn.(*acceptguard.Conn)
	}
	if guarded != nil {
		guarded.Waiting()
	}
	m, err := r.Reader.ReadTCP(&lengthCheck{Conn: conn}, timeout)
	if err == nil && guarded != nil {
		guarded.Serving()
	}
	if err != nil {
		return m, err
	}
	if at, short := rawFaults(m); at > 0 || short || new(dns.Msg).Unpack(m) != nil {
		// miekg/dns answers a query that does not unpack itself, with the
		// query's flags (TC, RA, AD, CD: things of an answer we did not
		// make) and what it read of the question; and it takes a query
		// shorter than its header's counts, or with a Client Subnet option
		// it would pad or cut to its family's size (server.go), for a whole
		// one. Each is handed on as a header whose question does not
		// unpack (a label type no name has, 0b01, historic since RFC 6891
		// 5), which it answers with the bytes the UDP loop sends
		// (formErrFor), counted as those are; or as nothing it answers.
		if formErrFor(m) == nil {
			return m[:0], nil
		}
		m = append(m[:4], 0, 1, 0, 0, 0, 0, 0, 0, 0x40)
		m[2], m[3] = 0, 0
	}
	return m, nil
}

// lengthCheck is a connection for reading one message: it fails the read
// that completes the 2-byte length prefix when the length is too long.
type lengthCheck struct {
	net.Conn
	prefix [2]byte
	n      int // bytes of the prefix read
}

func (c *lengthCheck) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if c.n < len(c.prefix) {
		c.n += copy(c.prefix[c.n:], b[:n])
		if c.n == len(c.prefix) && binary.BigEndian.Uint16(c.prefix[:]) > maxQueryBytes {
			// 0 bytes: io.ReadFull drops an error that comes with
			// all it asked for.
			return 0, errQueryTooLong
		}
	}
	return n, err
}
