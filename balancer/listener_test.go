package balancer

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"

	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health/healthtest"
)

// proxiedRequest sends a request on a fresh connection, after prefix (a PROXY
// header), and returns the response.
func proxiedRequest(t *testing.T, addr string, prefix []byte, key string) (*http.Response, []byte) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write(prefix)
	io.WriteString(c, "GET /whoami HTTP/1.1\r\nHost: x\r\nctstickiness: "+key+"\r\nConnection: close\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return nil, nil
	}
	body, _ := io.ReadAll(resp.Body)
	return resp, body
}

func TestProxyProtocol(t *testing.T) {
	h := newHarness(t, configs.Balancer{ProxyProtocol: configs.ProxyProtocol{Enabled: true}})
	tests := []struct {
		name   string
		header *proxyproto.Header
	}{
		{"v1", &proxyproto.Header{Version: 1, Command: proxyproto.PROXY, TransportProtocol: proxyproto.TCPv4,
			SourceAddr: &net.TCPAddr{IP: net.ParseIP("203.0.113.7"), Port: 5555}, DestinationAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 80}}},
		{"v2", &proxyproto.Header{Version: 2, Command: proxyproto.PROXY, TransportProtocol: proxyproto.TCPv4,
			SourceAddr: &net.TCPAddr{IP: net.ParseIP("198.51.100.9"), Port: 4444}, DestinationAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 80}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hdr, err := tt.header.Format()
			if err != nil {
				t.Fatal(err)
			}
			resp, body := proxiedRequest(t, h.addr, hdr, "pp-key")
			if resp == nil || resp.StatusCode != 200 {
				t.Fatalf("response %v %s", resp, body)
			}
			var w whoami
			json.Unmarshal(body, &w)
			if want := tt.header.SourceAddr.(*net.TCPAddr).IP.String(); w.XFF != want {
				t.Errorf("X-Forwarded-For %q, want the PROXY source %s", w.XFF, want)
			}
		})
	}
	// Without a header the connection is refused: PROXY is required.
	if resp, _ := proxiedRequest(t, h.addr, nil, "pp-key"); resp != nil && resp.StatusCode == 200 {
		t.Error("a request without a PROXY header was served")
	}
	// A WebSocket through PROXY v2 reaches the relay and echoes.
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	hdr, _ := tests[1].header.Format()
	c.Write(hdr)
	io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nctstickiness: pp-ws\r\n\r\n")
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade through PROXY v2: %v %v", resp, err)
	}
	if h.bal.Tunnels() != 1 {
		t.Errorf("tunnels = %d, want 1", h.bal.Tunnels())
	}
}

func TestProxyProtocolUntrustedSource(t *testing.T) {
	h := newHarness(t, configs.Balancer{ProxyProtocol: configs.ProxyProtocol{Enabled: true, TrustedFrom: []string{"10.0.0.0/8"}}})
	hdr, _ := (&proxyproto.Header{Version: 1, Command: proxyproto.PROXY, TransportProtocol: proxyproto.TCPv4,
		SourceAddr: &net.TCPAddr{IP: net.ParseIP("203.0.113.7"), Port: 1}, DestinationAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 80}}).Format()
	if resp, _ := proxiedRequest(t, h.addr, hdr, "k"); resp != nil {
		t.Fatalf("a PROXY header from an untrusted source was served: %d", resp.StatusCode)
	}
	// Without a header, the untrusted source is an ordinary client.
	resp, body := proxiedRequest(t, h.addr, nil, "k")
	var w whoami
	json.Unmarshal(body, &w)
	if resp == nil || resp.StatusCode != 200 || w.XFF != "127.0.0.1" {
		t.Fatalf("plain request from an untrusted source: %v %s", resp, body)
	}
}

func TestMaxConnections(t *testing.T) {
	h := newHarness(t, configs.Balancer{Limits: configs.Limits{MaxConnections: 2}})
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", h.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held = append(held, c)
	}
	// Both are accepted once a request on each is answered.
	for _, c := range held {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, "GET /_ringlb/health HTTP/1.1\r\nHost: x\r\n\r\n")
		if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil || resp.StatusCode != 200 {
			t.Fatalf("held connection: %v %v", resp, err)
		}
	}
	resp, body := proxiedRequest(t, h.addr, nil, "k")
	if resp == nil || resp.StatusCode != 503 || !strings.Contains(string(body), "too many connections") || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("third connection: %v %q, want 503 with Retry-After", resp, body)
	}
	if v := h.metric(t, "ringlb_balancer_rejected_connections_total", map[string]string{"reason": "max_connections"}); v != 1 {
		t.Errorf("rejected max_connections = %v", v)
	}
	// Closing one frees a slot.
	held[0].Close()
	healthtest.WaitUntil(t, "a slot freed after a connection closed", func() bool {
		resp, _ := proxiedRequest(t, h.addr, nil, "k")
		return resp != nil && resp.StatusCode == 200
	})
	// A reload lowers the limit for the next connections: with one held,
	// a limit of 1 refuses the next.
	next := h.bal.current.Load().cfg
	next.Limits.MaxConnections = 1
	if err := h.bal.Reload(provision(next)); err != nil {
		t.Fatal(err)
	}
	if resp, _ := proxiedRequest(t, h.addr, nil, "k"); resp == nil || resp.StatusCode != 503 {
		t.Fatalf("connection over the reloaded limit: %v, want 503", resp)
	}
}

// Left 0, the limit is derived from the process's open-file limit.
func TestMaxConnectionsDerived(t *testing.T) {
	h := newHarness(t, configs.Balancer{})
	if got, want := h.bal.current.Load().cfg.Limits.MaxConnections, configs.DefaultBalancerMaxConnections(configs.DefaultAdminMaxConnections); got != want || got <= 0 {
		t.Fatalf("max_connections %d, want the derived %d", got, want)
	}
}

func TestPerIPLimits(t *testing.T) {
	t.Run("open connections", func(t *testing.T) {
		h := newHarness(t, configs.Balancer{Limits: configs.Limits{MaxConnectionsPerIP: 1}})
		c, err := net.Dial("tcp", h.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, "GET /_ringlb/health HTTP/1.1\r\nHost: x\r\n\r\n")
		if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil || resp.StatusCode != 200 {
			t.Fatalf("first connection: %v %v", resp, err)
		}
		resp, body := proxiedRequest(t, h.addr, nil, "k")
		if resp == nil || resp.StatusCode != 429 || !strings.Contains(string(body), "open connections") {
			t.Fatalf("second connection: %v %q, want 429", resp, body)
		}
		// Another source address has its own allowance.
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
		c2, err := d.Dial("tcp", h.addr)
		if err != nil {
			t.Skipf("no 127.0.0.2 here: %v", err)
		}
		defer c2.Close()
		c2.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c2, "GET /_ringlb/health HTTP/1.1\r\nHost: x\r\n\r\n")
		if resp, err := http.ReadResponse(bufio.NewReader(c2), nil); err != nil || resp.StatusCode != 200 {
			t.Fatalf("connection from 127.0.0.2: %v %v", resp, err)
		}
	})
	t.Run("new connection rate", func(t *testing.T) {
		// One new connection per 100 s with a burst of 2: the third in a row is refused.
		h := newHarness(t, configs.Balancer{Limits: configs.Limits{NewConnectionsPerIP: 0.01, NewConnectionsBurst: 2}})
		for i := range 2 {
			if resp, _ := proxiedRequest(t, h.addr, nil, "k"); resp == nil || resp.StatusCode != 200 {
				t.Fatalf("connection %d: %v", i, resp)
			}
		}
		resp, body := proxiedRequest(t, h.addr, nil, "k")
		if resp == nil || resp.StatusCode != 429 || !strings.Contains(string(body), "too many new connections") {
			t.Fatalf("third connection: %v %q, want 429", resp, body)
		}
		if v := h.metric(t, "ringlb_balancer_rejected_connections_total", map[string]string{"reason": "new_connections_per_ip"}); v != 1 {
			t.Errorf("rejected new_connections_per_ip = %v", v)
		}
	})
}

// With PROXY protocol on, a source outside trusted_from is its own client:
// its address is the socket's and no header will change it. Its
// connections were counted under max_connections_per_ip only once the
// PROXY header had been looked for — up to 5 s for one that sends nothing —
// so one address reaching the port directly held every slot of
// max_connections with idle connections, opened again as each ended, and
// everyone else was refused. The header wait of a connection opened before
// them is the clock: their refusals must come before it ends.
func TestUntrustedSourceHeldToPerIPLimitsWithoutWaitingForAHeader(t *testing.T) {
	const max, perIP = 20, 2
	h := newHarness(t, configs.Balancer{
		ProxyProtocol: configs.ProxyProtocol{Enabled: true, TrustedFrom: []string{"192.0.2.0/24"}},
		Limits:        configs.Limits{MaxConnections: max, MaxConnectionsPerIP: perIP},
	})
	// The clock, from another address: the start of a PROXY v2 signature
	// keeps the balancer looking for the rest until the header wait ends;
	// then it reads the bytes as a request, and answers 400.
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
	clock, err := d.Dial("tcp", h.addr)
	if err != nil {
		t.Skipf("no 127.0.0.2 here: %v", err)
	}
	defer clock.Close()
	io.WriteString(clock, "\r\n\r\n\x00\r\nQ")
	waitEnded := make(chan struct{})
	go func() {
		defer close(waitEnded)
		_ = clock.SetReadDeadline(time.Now().Add(healthtest.Patience))
		_, _ = clock.Read(make([]byte, 1))
	}()

	// Every slot the clock leaves, from one address.
	const flood = max - 1
	start := time.Now()
	refused := make(chan bool, flood)
	for range flood {
		c, err := net.Dial("tcp", h.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		go func() {
			// A refusal is answered and closed; an admitted connection
			// waits for a request that never comes.
			_ = c.SetReadDeadline(time.Now().Add(healthtest.Patience))
			got, _ := io.ReadAll(c)
			refused <- strings.HasPrefix(string(got), "HTTP/1.1 429 ")
		}()
	}
	n := 0
	for got := 0; got < flood && n < flood-perIP; got++ {
		select {
		case r := <-refused:
			if r {
				n++
			}
		case <-waitEnded:
			t.Fatalf("%d of %d idle connections from one untrusted address refused when the header wait ended, %v after they opened; want %d before it", n, flood, time.Since(start).Round(time.Millisecond), flood-perIP)
		}
	}
	t.Logf("idle connections from one untrusted address: %d of %d refused at max_connections_per_ip %d, in %v", n, flood, perIP, time.Since(start).Round(time.Millisecond))
	if n != flood-perIP {
		t.Fatalf("%d of %d idle connections refused, want %d", n, flood, flood-perIP)
	}
	// Their slots are free for others once the refused connections close.
	healthtest.WaitUntil(t, "another client served while one address holds its share", func() bool {
		c, err := d.Dial("tcp", h.addr)
		if err != nil {
			return false
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(healthtest.Patience))
		io.WriteString(c, "GET /_ringlb/health HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		return err == nil && resp.StatusCode == 200
	})
}

// A PROXY v2 header may name a client that has no IP address: HAProxy
// sends AF_UNIX for a client of a unix-socket frontend. Such a client was
// counted under no address (the per-address limits passed every one of
// them), and went on as 0.0.0.0 — in X-Forwarded-For to the backend, as
// the one key of no_key: source_ip, the session table's budget. It is the
// proxy's own connection then, as a LOCAL header's is (and as nginx takes
// a family it does not read): the proxy's address, held to its limits.
func TestProxyHeaderNamingNoIPClientIsTheProxys(t *testing.T) {
	h := newHarness(t, configs.Balancer{
		ProxyProtocol: configs.ProxyProtocol{Enabled: true},
		Limits:        configs.Limits{MaxConnectionsPerIP: 1},
	})
	unixHeader := func(t *testing.T, client string) []byte {
		t.Helper()
		hdr, err := (&proxyproto.Header{Version: 2, Command: proxyproto.PROXY, TransportProtocol: proxyproto.UnixStream,
			SourceAddr: &net.UnixAddr{Net: "unix", Name: client}, DestinationAddr: &net.UnixAddr{Net: "unix", Name: "/run/front.sock"}}).Format()
		if err != nil {
			t.Fatal(err)
		}
		return hdr
	}
	resp, body := proxiedRequest(t, h.addr, unixHeader(t, "/run/a.sock"), "unix-key")
	if resp == nil || resp.StatusCode != 200 {
		t.Fatalf("request behind an AF_UNIX PROXY header: %v %s", resp, body)
	}
	var w whoami
	json.Unmarshal(body, &w)
	t.Logf("X-Forwarded-For behind an AF_UNIX PROXY header: %q", w.XFF)
	if w.XFF != "127.0.0.1" {
		t.Errorf("X-Forwarded-For %q, want the proxy's address 127.0.0.1", w.XFF)
	}

	// One held under the proxy's address (once the first has been
	// released), the next is beyond max_connections_per_ip 1.
	var held net.Conn
	healthtest.WaitUntil(t, "a connection behind an AF_UNIX header held", func() bool {
		c, err := net.Dial("tcp", h.addr)
		if err != nil {
			return false
		}
		c.SetDeadline(time.Now().Add(healthtest.Patience))
		c.Write(unixHeader(t, "/run/b.sock"))
		io.WriteString(c, "GET /_ringlb/health HTTP/1.1\r\nHost: x\r\n\r\n")
		if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil || resp.StatusCode != 200 {
			c.Close()
			return false
		}
		held = c
		return true
	})
	defer held.Close()
	resp, body = proxiedRequest(t, h.addr, unixHeader(t, "/run/c.sock"), "unix-key")
	if resp == nil {
		t.Fatal("no answer to the second connection")
	}
	t.Logf("second AF_UNIX client while one is held, at max_connections_per_ip 1: %d", resp.StatusCode)
	if resp.StatusCode != 429 {
		t.Fatalf("second connection: %d %q, want 429: counted under the proxy's address", resp.StatusCode, body)
	}
}
