// Command wsrelay is a third-party WebSocket backend: not ringlb's edge,
// nothing of ringlb's wire contract beyond the stickiness header. ringlb's
// end-to-end tests run it behind the balancers (TestThirdPartySessionsNeverSplit)
// and bench/peers/ws-compare.sh measures the fronts in front of it
// (BACKEND=relay). Every connection with the same ctstickiness header is one
// session; each text or binary frame a connection sends is relayed, with its
// type, to the others of its session, in order and never dropped (a full
// queue slows the sender down instead). It knows nothing of rings, pins or
// claims, so a front that sends one session's participants to two relays
// splits it.
//
//	GET /ws      WebSocket; the first frame the relay sends is
//	             "<name> <instance>" (instance: this process's start, so a
//	             restarted relay is told from the one that was killed)
//	GET /keys    {"<key>": <connections>, ...}: the sessions it hosts
//	GET /health  200 ok
//
// Usage: wsrelay -name relay-1 -listen 127.0.0.1:17001 [-cert F -key F]
package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/valyala/fasthttp"
)

// relay is the sessions of one process.
type relay struct {
	name, instance string

	mu       sync.Mutex
	sessions map[string]*session
}

// session is the connections of one key. Its member list is replaced under
// relay.mu, never changed in place, so a reader relays to a snapshot of it
// without holding a lock while it waits for a slow member.
type session struct {
	members atomic.Pointer[[]*member]
}

// member is one connection; its writer goroutine owns the socket's writes.
type member struct {
	out chan frame
	// gone is closed when the writer stops: nothing more is taken from out,
	// so a reader waiting to hand it a frame gives up.
	gone chan struct{}
}

// frame is one relayed message, sent on with the type it came with.
type frame struct {
	kind int
	data []byte
}

// sendQueue is how many frames wait for one connection's writer. When it is
// full, the reader relaying to it waits (and so, through TCP, does its
// sender): a slow connection slows its session down and never loses a
// frame, which is what a benchmark going through this relay counts on. A
// connection that takes nothing for writeTimeout is closed. A frame is at
// most maxMessage bytes, so a connection's queue holds a bounded amount.
const (
	sendQueue    = 256
	writeTimeout = 10 * time.Second
	maxMessage   = 1 << 20
)

func main() {
	name := flag.String("name", "", "the relay's name (its first frame)")
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	cert := flag.String("cert", "", "TLS certificate (PEM); with -key, serve HTTPS")
	key := flag.String("key", "", "TLS key (PEM)")
	clientCA := flag.String("client-ca", "", "require client certificates signed by this CA (PEM)")
	flag.Parse()
	if *name == "" {
		log.Fatal("-name is required")
	}
	r := newRelay(*name)
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	if *cert != "" {
		pair, err := tls.LoadX509KeyPair(*cert, *key)
		if err != nil {
			log.Fatal(err)
		}
		cfg := &tls.Config{Certificates: []tls.Certificate{pair}, NextProtos: []string{"http/1.1"}}
		if *clientCA != "" {
			pool, err := loadPool(*clientCA)
			if err != nil {
				log.Fatal(err)
			}
			cfg.ClientCAs, cfg.ClientAuth = pool, tls.RequireAndVerifyClientCert
		}
		ln = tls.NewListener(ln, cfg)
	}
	// The test reads the address it listens on from this line.
	fmt.Fprintf(os.Stdout, "listening %s %s\n", ln.Addr(), r.instance)
	srv := &fasthttp.Server{Handler: r.serve, ReadTimeout: time.Minute, IdleTimeout: time.Minute}
	log.Fatal(srv.Serve(ln))
}

func newRelay(name string) *relay {
	return &relay{name: name, instance: strconv.FormatInt(time.Now().UnixNano(), 36), sessions: map[string]*session{}}
}

var upgrader = websocket.FastHTTPUpgrader{CheckOrigin: func(*fasthttp.RequestCtx) bool { return true }}

func (r *relay) serve(ctx *fasthttp.RequestCtx) {
	switch string(ctx.Path()) {
	case "/health":
		ctx.SetBodyString("ok\n")
	case "/keys":
		r.mu.Lock()
		out := make(map[string]int, len(r.sessions))
		for k, s := range r.sessions {
			out[k] = len(*s.members.Load())
		}
		r.mu.Unlock()
		b, _ := json.Marshal(out)
		ctx.SetContentType("application/json")
		ctx.SetBody(b)
	default:
		key := string(ctx.Request.Header.Peek("ctstickiness"))
		if key == "" {
			ctx.Error("no ctstickiness header\n", fasthttp.StatusBadRequest)
			return
		}
		// The member joins its session before the 101 goes out: a client
		// that has its 101 is in the session, so a message another
		// participant sends right then reaches it (queued until its writer
		// runs). The greeting is queued first, before anyone's frame.
		m := &member{out: make(chan frame, sendQueue), gone: make(chan struct{})}
		m.out <- frame{websocket.TextMessage, []byte(r.name + " " + r.instance)}
		s := r.join(key, m)
		if err := upgrader.Upgrade(ctx, func(c *websocket.Conn) { r.session(key, s, m, c) }); err != nil {
			r.leave(key, s, m)
			close(m.gone)
		}
	}
}

// session runs member m's connection c in session s (key's) until it ends.
func (r *relay) session(key string, s *session, m *member, c *websocket.Conn) {
	defer r.leave(key, s, m)
	// The writer owns the socket's writes; it is done before the handler
	// returns (fasthttp releases the connection then).
	done := make(chan struct{})
	defer func() {
		close(done)
		c.Close()
		<-m.gone
	}()
	go func() {
		defer close(m.gone)
		// A failed write closes the connection, which ends the reader.
		defer c.Close()
		for {
			select {
			case f := <-m.out:
				c.SetWriteDeadline(time.Now().Add(writeTimeout))
				if err := c.WriteMessage(f.kind, f.data); err != nil {
					return
				}
			case <-done:
				return
			}
		}
	}()
	c.SetReadLimit(maxMessage) // a bigger frame ends the connection
	for {
		c.SetReadDeadline(time.Now().Add(5 * time.Minute))
		kind, data, err := c.ReadMessage()
		if err != nil {
			return
		}
		for _, o := range *s.members.Load() {
			if o == m {
				continue
			}
			select {
			case o.out <- frame{kind, data}:
			case <-o.gone:
			case <-m.gone:
				return
			}
		}
	}
}

// join adds m to key's session, creating it.
func (r *relay) join(key string, m *member) *session {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.sessions[key]
	if s == nil {
		s = &session{}
		s.members.Store(&[]*member{})
		r.sessions[key] = s
	}
	old := *s.members.Load()
	next := append(old[:len(old):len(old)], m)
	s.members.Store(&next)
	return s
}

// leave takes m out of its session, and the session away once empty.
func (r *relay) leave(key string, s *session, m *member) {
	r.mu.Lock()
	defer r.mu.Unlock()
	old := *s.members.Load()
	next := make([]*member, 0, len(old))
	for _, o := range old {
		if o != m {
			next = append(next, o)
		}
	}
	s.members.Store(&next)
	if len(next) == 0 && r.sessions[key] == s {
		delete(r.sessions, key)
	}
}

func loadPool(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no certificate", file)
	}
	return pool, nil
}
