// Command wsrelay is a third-party WebSocket backend for ringlb's end-to-end
// tests: not ringlb's edge, nothing of ringlb's wire contract beyond the
// stickiness header. Every connection with the same ctstickiness header is
// one session; each text or binary frame a connection sends is relayed to
// the others of its session. It knows nothing of rings, pins or claims, so a
// front that sends one session's participants to two relays splits it.
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
	"time"

	"github.com/fasthttp/websocket"
	"github.com/valyala/fasthttp"
)

// relay is the sessions of one process.
type relay struct {
	name, instance string

	mu       sync.Mutex
	sessions map[string]map[*member]struct{}
}

// member is one connection; its writer goroutine owns the socket's writes.
type member struct {
	out chan []byte
}

// sendQueue bounds what one slow connection holds: beyond it frames to it
// are dropped (a test relay, not a product).
const sendQueue = 256

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
	r := &relay{name: *name, instance: strconv.FormatInt(time.Now().UnixNano(), 36), sessions: map[string]map[*member]struct{}{}}
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

var upgrader = websocket.FastHTTPUpgrader{CheckOrigin: func(*fasthttp.RequestCtx) bool { return true }}

func (r *relay) serve(ctx *fasthttp.RequestCtx) {
	switch string(ctx.Path()) {
	case "/health":
		ctx.SetBodyString("ok\n")
	case "/keys":
		r.mu.Lock()
		out := make(map[string]int, len(r.sessions))
		for k, s := range r.sessions {
			out[k] = len(s)
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
		if err := upgrader.Upgrade(ctx, func(c *websocket.Conn) { r.session(key, c) }); err != nil {
			return
		}
	}
}

// session runs one connection of the session key until it ends.
func (r *relay) session(key string, c *websocket.Conn) {
	m := &member{out: make(chan []byte, sendQueue)}
	// The greeting first: no other member's frame can be queued before it.
	m.out <- []byte(r.name + " " + r.instance)
	r.mu.Lock()
	s := r.sessions[key]
	if s == nil {
		s = map[*member]struct{}{}
		r.sessions[key] = s
	}
	s[m] = struct{}{}
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(s, m)
		if len(s) == 0 {
			delete(r.sessions, key)
		}
		r.mu.Unlock()
	}()
	// The writer owns the socket's writes; it is done before the handler
	// returns (fasthttp releases the connection then).
	done, wrote := make(chan struct{}), make(chan struct{})
	defer func() {
		close(done)
		c.Close()
		<-wrote
	}()
	go func() {
		defer close(wrote)
		for {
			select {
			case msg := <-m.out:
				c.SetWriteDeadline(time.Now().Add(10 * time.Second))
				if err := c.WriteMessage(websocket.TextMessage, msg); err != nil {
					return
				}
			case <-done:
				return
			}
		}
	}()
	for {
		c.SetReadDeadline(time.Now().Add(5 * time.Minute))
		_, msg, err := c.ReadMessage()
		if err != nil {
			return
		}
		r.mu.Lock()
		for o := range r.sessions[key] {
			if o != m {
				select {
				case o.out <- msg:
				default:
				}
			}
		}
		r.mu.Unlock()
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
