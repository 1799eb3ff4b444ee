package gslb

import (
	"net"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/ringlb/ringlb/balancer/acceptguard"
	"github.com/ringlb/ringlb/balancer/acceptguard/acceptguardtest"
)

// Low on memory (the process near its memory limit), the gslb takes no
// new TCP connection — each would hold a goroutine and its buffers until
// its deadlines — and closes it without a word, as at its caps (DNS has
// nothing to send before a query), counted under the reason label the
// balancer and the edge count theirs with. UDP, which holds nothing past
// its answer, goes on answering. Once the memory is back, new TCP connections are served again.
func TestLowMemoryRefusesNewTCPConnections(t *testing.T) {
	mem, release := acceptguardtest.Low(t)
	s := startGSLBWith(t, gslbConfig(t, newFakeBalancer(t), newFakeBalancer(t), ""), func(s *Server) { s.mem = mem })

	const conns = 50
	answered, closed := 0, 0
	for range conns {
		if r, err := exchangeTCP(s.Addr()); err == nil && len(r.Answer) == 1 {
			answered++
		} else {
			closed++
		}
	}
	refused := counterValue(t, s, "ringlb_gslb_rejected_connections_total", "reason", acceptguard.ReasonMemory)
	t.Logf("low on memory, %d new TCP connections with a query each: %d answered, %d closed unanswered, %v counted refused for memory", conns, answered, closed, refused)
	if answered != 0 {
		t.Errorf("low on memory, %d of %d new TCP connections were served", answered, conns)
	}
	if refused != conns {
		t.Errorf(`ringlb_gslb_rejected_connections_total{reason="memory"} = %v, want %d`, refused, conns)
	}
	if r := query(t, s, "udp", "www.ringlb.test.", dns.TypeA, nil); len(r.Answer) != 1 {
		t.Errorf("UDP while low on memory: %v", r)
	}

	release()
	if r := query(t, s, "tcp", "www.ringlb.test.", dns.TypeA, nil); len(r.Answer) != 1 {
		t.Errorf("TCP once the memory is back: %v", r)
	}
}

// exchangeTCP asks addr for www.ringlb.test. A over a new TCP connection.
func exchangeTCP(addr string) (*dns.Msg, error) {
	c := &dns.Client{Net: "tcp", Timeout: 5 * time.Second, Dialer: &net.Dialer{Timeout: 5 * time.Second}}
	m := new(dns.Msg)
	m.SetQuestion("www.ringlb.test.", dns.TypeA)
	r, _, err := c.Exchange(m, addr)
	return r, err
}
