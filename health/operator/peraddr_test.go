package operator

import (
	"bufio"
	"context"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ringlb/ringlb/configs"
)

// openListener counts the connections the server accepted and has not
// closed.
type openListener struct {
	net.Listener
	open *atomic.Int64
}

func (l openListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.open.Add(1)
	return &openConn{Conn: c, open: l.open}, nil
}

type openConn struct {
	net.Conn
	open *atomic.Int64
	once sync.Once
}

func (c *openConn) Close() error {
	c.once.Do(func() { c.open.Add(-1) })
	return c.Conn.Close()
}

// One client address holding admin.max_connections connections, each with
// a request it never finishes, took every slot of the admin port: another
// client's GET /healthz waited in the kernel's backlog until one of the
// flood's requests timed out (admin.request_timeout), and a flood reopens
// them at once. With admin.max_connections_per_ip, one address holds its
// share; the connections beyond it get a 429 at once, and the others find
// room.
func TestAdminOneClientCannotTakeEverySlot(t *testing.T) {
	// The defaults but for the request timeout, beyond the test: the flood
	// holds its connections for as long as the test runs.
	admin := configs.Admin{RequestTimeout: configs.Duration(5 * time.Minute)}
	maxConns, perIP := configs.DefaultAdminMaxConnections, configs.DefaultAdminMaxConnectionsPerIP
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	var open atomic.Int64
	srv := NewServer(mux, admin, nil)
	reg := prometheus.NewRegistry()
	go srv.Serve(Listener(openListener{ln, &open}, admin, slog.New(slog.DiscardHandler), reg))
	t.Cleanup(func() { srv.Close() })

	// The flood, from 127.0.0.2: each connection sends half a request head
	// and waits; a reader per connection notes a refusal.
	flood := maxConns
	var refused atomic.Int64
	var readers sync.WaitGroup
	conns := make([]net.Conn, 0, flood)
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
		readers.Wait()
	})
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
	for range flood {
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("flood: after %d connections: %v", len(conns), err)
		}
		conns = append(conns, c)
		c.SetDeadline(time.Now().Add(2 * time.Minute))
		if _, err := c.Write([]byte("GET /healthz HTTP/1.1\r\nHost: " + addr + "\r\n")); err != nil {
			t.Fatalf("flood: %v", err)
		}
		readers.Go(func() {
			line, _ := bufio.NewReader(c).ReadString('\n')
			if strings.HasPrefix(line, "HTTP/1.1 429") {
				refused.Add(1)
			}
		})
	}
	// Wait until the server has taken or refused every one it will.
	for deadline := time.Now().Add(30 * time.Second); open.Load()+refused.Load() < int64(flood) && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("127.0.0.2 opened %d connections holding unfinished requests: the admin port holds %d, refused %d with 429", flood, open.Load(), refused.Load())

	// Another client, from 127.0.0.3.
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: (&net.Dialer{Timeout: 30 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.3")}}).DialContext,
	}}
	defer client.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/healthz", nil)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("127.0.0.3's GET /healthz while 127.0.0.2 holds its connections: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("127.0.0.3's GET /healthz: %s", resp.Status)
	}
	if held := open.Load(); held > int64(perIP)+1 {
		t.Errorf("the admin port holds %d connections, want at most 127.0.0.2's share %d (and 127.0.0.3's)", held, perIP)
	}
	if got, want := refused.Load(), int64(flood-perIP); got != want {
		t.Errorf("%d of the flood's connections refused with 429, want %d", got, want)
	}
	var m dto.Metric
	if err := refusedCounter(reg).Write(&m); err != nil {
		t.Fatal(err)
	}
	if got := m.GetCounter().GetValue(); got != float64(refused.Load()) {
		t.Errorf("ringlb_admin_refused_connections_total = %v, want the %d refused", got, refused.Load())
	}
}
