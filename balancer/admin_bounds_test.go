package balancer

import (
	"bufio"
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/crypto/bcrypt"

	"github.com/ringlb/ringlb/balancer/ring"
	"github.com/ringlb/ringlb/configs"
)

// connCounter counts the connections a server accepted and has not closed.
type connCounter struct {
	net.Listener
	open, peak atomic.Int64
}

func (l *connCounter) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	n := l.open.Add(1)
	for p := l.peak.Load(); n > p && !l.peak.CompareAndSwap(p, n); p = l.peak.Load() {
	}
	return &countedConn{Conn: c, l: l}, nil
}

type countedConn struct {
	net.Conn
	l    *connCounter
	once sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() { c.l.open.Add(-1) })
	return c.Conn.Close()
}

// serveAdminCounted serves a balancer's admin port (cfg provisioned) on a
// loopback listener whose connections are counted.
func serveAdminCounted(t *testing.T, cfg configs.Balancer) (string, *connCounter) {
	t.Helper()
	cfg.Provision()
	bal, err := New(cfg, "bal-test", ring.New(ring.DefaultConfig()), slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	counted := &connCounter{Listener: ln}
	served := make(chan error, 1)
	go func() { served <- bal.ServeAdmin(counted) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = bal.Shutdown(ctx)
		if err := <-served; err != nil && !errors.Is(err, ErrClosed) {
			t.Errorf("serve admin: %v", err)
		}
	})
	return ln.Addr().String(), counted
}

// A flood of connections to the admin port, each holding a request it
// never finishes (slowloris): every one the server accepts holds a
// descriptor of the process the data port shares. The admin port keeps at
// most admin.max_connections; the rest wait in the kernel's backlog.
func TestAdminConnectionFloodBounded(t *testing.T) {
	const flood = 300
	addr, counted := serveAdminCounted(t, configs.Balancer{})
	conns := make([]net.Conn, 0, flood)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range flood {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Logf("dial stopped after %d: %v", len(conns), err)
			break
		}
		conns = append(conns, c)
		_, _ = c.Write([]byte("POST /login HTTP/1.1\r\nHost: " + addr + "\r\nContent-Length: 4000\r\n\r\nuser="))
	}
	// Wait for the server to have taken what it takes: the count stops
	// changing (bounded polls).
	last := int64(-1)
	for range 100 {
		time.Sleep(50 * time.Millisecond)
		if n := counted.open.Load(); n == last && n > 0 {
			break
		} else {
			last = n
		}
	}
	t.Logf("%d connections each holding an unfinished request: the admin port accepted %d (peak %d)", len(conns), counted.open.Load(), counted.peak.Load())
	if got, limit := counted.peak.Load(), int64(configs.DefaultAdminMaxConnections); got > limit {
		t.Errorf("the admin port accepted %d connections at once, want at most admin.max_connections (%d)", got, limit)
	}
}

// A request whose body trickles in, a byte now and then, must not hold its
// connection (and the server's goroutine and descriptor) for ever:
// admin.request_timeout bounds reading a whole request, body included.
func TestAdminSlowBodyCut(t *testing.T) {
	// A user, so that POST /login reads its form.
	hash, err := bcrypt.GenerateFromPassword([]byte("a password"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	users := filepath.Join(t.TempDir(), "users")
	if err := os.WriteFile(users, []byte("alice:"+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := configs.Balancer{}
	cfg.Admin.UsersFile = users
	cfg.Admin.RequestTimeout = configs.Duration(time.Second)
	addr, counted := serveAdminCounted(t, cfg)
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("POST /login HTTP/1.1\r\nHost: " + addr + "\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 4000\r\n\r\nuser=")); err != nil {
		t.Fatal(err)
	}
	closed := make(chan string, 1)
	go func() {
		line, err := bufio.NewReader(c).ReadString('\n')
		closed <- strings.TrimSpace(line) + " " + errString(err)
	}()
	start := time.Now()
	// One byte every 200 ms, for at most 60 s: well inside every timeout
	// between two bytes, far beyond any whole-request bound.
	for i := 0; i < 300; i++ {
		select {
		case how := <-closed:
			t.Logf("the server ended the slow request after %v and %d body bytes: %q", time.Since(start).Round(100*time.Millisecond), 5+i, how)
			return
		case <-time.After(200 * time.Millisecond):
		}
		if _, err := c.Write([]byte("a")); err != nil {
			t.Logf("the server closed the slow request after %v: %v", time.Since(start).Round(100*time.Millisecond), err)
			return
		}
	}
	t.Errorf("a body trickled for %v is still being read (open admin connections: %d)", time.Since(start).Round(time.Second), counted.open.Load())
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
