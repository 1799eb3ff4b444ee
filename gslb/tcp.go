package gslb

import (
	"net"
	"time"
)

// DNS over TCP is open to anyone, and a connection costs the server a
// descriptor, a goroutine and what it buffers until the connection ends.
// miekg/dns bounds a connection's reads (ReadTimeout for the first query,
// IdleTimeout between queries) and its queries (128, then it closes), but
// not its writes: it never applies Server.WriteTimeout. So each write gets
// its own deadline here.
const (
	tcpReadTimeout = 5 * time.Second
	tcpIdleTimeout = 10 * time.Second
	// tcpWriteTimeout bounds one write of an answer (one message of a zone
	// transfer): a client that pipelines queries and never reads its
	// answers blocks the server's write once the socket's buffers are full,
	// and without a deadline holds the connection for ever — and Shutdown
	// too, which unblocks only reads.
	tcpWriteTimeout = 5 * time.Second
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
