package sessions

import (
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/ringlb/ringlb/configs"
)

// statsdListener is a StatsD server on a free loopback port: it parses
// every line received (name:value|type) into gauges (last value) and
// counters (summed, as StatsD does).
type statsdListener struct {
	conn     *net.UDPConn
	gauges   map[string]float64
	counters map[string]float64
}

func listenStatsD(t *testing.T) *statsdListener {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &statsdListener{conn: conn, gauges: map[string]float64{}, counters: map[string]float64{}}
}

// readUntil reads datagrams until done holds, failing after testDeadline.
func (l *statsdListener) readUntil(t *testing.T, done func() bool) {
	t.Helper()
	deadline := time.Now().Add(testDeadline)
	buf := make([]byte, 64<<10)
	for !done() {
		_ = l.conn.SetReadDeadline(deadline)
		n, err := l.conn.Read(buf)
		if err != nil {
			t.Fatalf("statsd: %v; gauges %v counters %v", err, l.gauges, l.counters)
		}
		if n > statsdDatagram {
			t.Errorf("datagram of %d bytes, over %d", n, statsdDatagram)
		}
		for _, line := range strings.Split(string(buf[:n]), "\n") {
			name, rest, ok1 := strings.Cut(line, ":")
			value, kind, ok2 := strings.Cut(rest, "|")
			v, err := strconv.ParseFloat(value, 64)
			if !ok1 || !ok2 || err != nil || strings.HasPrefix(value, "-") || strings.HasPrefix(value, "+") {
				t.Fatalf("bad StatsD line %q", line)
			}
			switch kind {
			case "g":
				l.gauges[name] = v
			case "c":
				l.counters[name] += v
			default:
				t.Fatalf("line %q: type %q, want g or c", line, kind)
			}
		}
	}
}

func TestStatsDPushesEdgeMetrics(t *testing.T) {
	l := listenStatsD(t)
	e := startEdge(t, configs.Edge{}, nil)
	stop := e.s.StartStatsD(configs.StatsD{
		Address:  l.conn.LocalAddr().String(),
		Prefix:   "test.",
		Interval: configs.Duration(20 * time.Millisecond),
	})
	defer stop()

	a, b := e.join(t, "statsd"), e.join(t, "statsd")
	for i := range 3 {
		if err := a.WriteMessage(websocket.BinaryMessage, []byte("edit "+strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
		if _, _, err := b.ReadMessage(); err != nil {
			t.Fatal(err)
		}
	}
	l.readUntil(t, func() bool {
		return l.gauges["test.edge_users_online"] == 2 && l.gauges["test.edge_sessions_active"] == 1 &&
			l.gauges["test.edge_connections_active"] == 2 && l.counters["test.edge_messages_total"] == 3 &&
			l.counters["test.edge_sessions_hosted_total"] == 1 && l.counters["test.edge_lag_seconds.count"] == 3
	})
	if mean, p99 := l.gauges["test.edge_lag_seconds.mean"], l.gauges["test.edge_lag_seconds.p99"]; mean <= 0 || p99 < mean {
		t.Errorf("lag mean %g, p99 %g", mean, p99)
	}
	if _, ok := l.counters["test.edge_slow_consumers_total"]; ok {
		t.Error("a counter that did not grow was pushed")
	}

	// Counters are pushed as increases: two more messages add two.
	for range 2 {
		if err := a.WriteMessage(websocket.BinaryMessage, []byte("more")); err != nil {
			t.Fatal(err)
		}
	}
	l.readUntil(t, func() bool { return l.counters["test.edge_messages_total"] == 5 })

	// Gauges follow the edge down; stop pushes once more and returns.
	b.Close()
	l.readUntil(t, func() bool { return l.gauges["test.edge_connections_active"] == 1 })
	stop()
	stop() // idempotent
}

func TestStatsDOffWithoutAddress(t *testing.T) {
	e := startEdge(t, configs.Edge{}, nil)
	e.s.StartStatsD(configs.StatsD{})() // nothing started, nothing to wait for
}

func TestStatsDDefaultPrefixNamesTheEdge(t *testing.T) {
	l := listenStatsD(t)
	e := startEdge(t, configs.Edge{}, nil)
	stop := e.s.StartStatsD(configs.StatsD{Address: l.conn.LocalAddr().String(), Interval: configs.Duration(time.Hour)})
	stop() // the push on stop
	l.readUntil(t, func() bool {
		_, ok := l.gauges["ringlb.edge-t.edge_connections_active"]
		return ok
	})
}
