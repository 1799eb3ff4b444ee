package health_test

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health"
	"github.com/ringlb/ringlb/health/healthtest"
)

// hostileMember is a pool member (a gslb pool's balancer address, a
// balancer's static edge) that answers every health check with answer: a
// raw listener on 127.0.0.1, counting the bytes each check was sent before
// the prober closed its connection.
func hostileMember(t *testing.T, answer []byte) (addr string, written *atomic.Int64) {
	t.Helper()
	written = new(atomic.Int64)
	addr = hostileServer(t, func(c net.Conn) {
		c.SetWriteDeadline(time.Now().Add(10 * time.Second))
		n, _ := c.Write(answer)
		written.Add(int64(n))
	})
	return addr, written
}

// hostileServer is a raw listener on 127.0.0.1 that reads each check's
// request head and then hands its connection to answer (closed after).
func hostileServer(t *testing.T, answer func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for { // the request's head
					line, err := br.ReadString('\n')
					if err != nil {
						return
					}
					if line == "\r\n" {
						break
					}
				}
				answer(c)
			}()
		}
	}()
	return ln.Addr().String()
}

func hostileMonitor() configs.Monitor {
	return configs.Monitor{Type: configs.MonitorHTTP, Path: configs.PathHealth, ExpectStatus: 200,
		Interval: configs.Duration(50 * time.Millisecond), Timeout: configs.Duration(5 * time.Second), Rise: 1, Fall: 1}
}

func runHostileProber(t *testing.T, target string) *health.Prober {
	t.Helper()
	p := health.NewProber(hostileMonitor(), target, nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); p.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return p
}

// A member answers its health check with a 1 MiB line that is no status
// line. The prober's error quoted the line whole, and that error is the
// member's "why": kept by the prober, written to the log on the state
// change, shown by /api/pools and the dashboard, and repeated in the gslb's
// agreed reason. What a member answers must not make any of them grow.
func TestHostileMemberCannotFillTheReason(t *testing.T) {
	// One line within the head's bound, one far beyond it.
	for _, size := range []int{60 << 10, 1 << 20} {
		junk := strings.Repeat("A", size)
		addr, _ := hostileMember(t, []byte("NOTHTTP "+junk+"\r\n\r\n"))
		p := runHostileProber(t, addr)
		healthtest.WaitUntil(t, "the prober takes the member down", func() bool { up, _ := p.Up(); return !up })
		_, why := p.Up()
		t.Logf("a line of %d bytes: why of %d bytes: %.100s", size, len(why), why)
		if len(why) > health.MaxReason {
			t.Errorf("the member's answer made its reason %d bytes, want at most %d", len(why), health.MaxReason)
		}
		if strings.Contains(why, strings.Repeat("A", health.MaxReason)) {
			t.Errorf("the reason quotes the member's answer at length")
		}
	}
}

// A member answers 200 with a head of 8 MiB. Every check read it whole
// (net/http's default limit is 10 MiB) and counted the member up: each
// check of each such member cost megabytes. A head beyond what any health
// endpoint sends is a failed check, read no further.
func TestHostileMemberHugeHeadIsAFailedCheck(t *testing.T) {
	var head strings.Builder
	head.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n")
	for head.Len() < 8<<20 {
		head.WriteString("X-Padding: " + strings.Repeat("p", 1000) + "\r\n")
	}
	head.WriteString("\r\n")
	addr, written := hostileMember(t, []byte(head.String()))
	p := runHostileProber(t, addr)
	healthtest.WaitUntil(t, "a check has run", func() bool { _, why := p.Up(); return why != "not checked yet" })
	up, why := p.Up()
	t.Logf("up %v (%.60s); %d bytes sent to the prober", up, why, written.Load())
	if up {
		t.Errorf("a member answering an 8 MiB head is up: the prober read it all")
	}
}

// Honest members' checks are unchanged: a 200 with an ordinary head and a
// body the prober does not read.
func TestOrdinaryMemberStaysUp(t *testing.T) {
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Set-Cookie", "a="+strings.Repeat("c", 4000))
		io.WriteString(w, strings.Repeat("ok\n", 10000))
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	p := runHostileProber(t, ln.Addr().String())
	healthtest.WaitUntil(t, "a check has run", func() bool { _, why := p.Up(); return why != "not checked yet" })
	if up, why := p.Up(); !up {
		t.Errorf("an ordinary member is down: %s", why)
	}
}

// A member that answers a byte at a time, or not at all, holds a check for
// its timeout's worth of waiting and no more: the check fails as timed out
// (an HTTP check on Linux counts the time spent waiting on the member, not
// the wall clock: a trickle still spends it).
func TestSlowMemberFailsItsCheckOnTime(t *testing.T) {
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop) })
	trickle := hostileServer(t, func(c net.Conn) {
		const head = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
		for i := range 200 { // bounded: 10 s at most
			c.SetWriteDeadline(time.Now().Add(time.Second))
			if _, err := c.Write([]byte{head[i%len(head)]}); err != nil {
				return
			}
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	})
	silent := hostileServer(t, func(c net.Conn) {
		select {
		case <-stop:
		case <-time.After(10 * time.Second):
		}
	})
	mon := hostileMonitor()
	mon.Timeout = configs.Duration(300 * time.Millisecond)
	for name, target := range map[string]string{"a trickling member": trickle, "a silent member": silent} {
		p := health.NewProber(mon, target, nil, nil)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); p.Run(ctx) }()
		healthtest.WaitUntil(t, name+" is down", func() bool { up, _ := p.Up(); return !up })
		cancel()
		<-done
		if _, why := p.Up(); !strings.Contains(why, "timeout") {
			t.Errorf("%s: down for %q, want a timeout", name, why)
		}
	}
}
