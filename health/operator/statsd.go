package operator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/ringlb/ringlb/configs"
)

// statsdDatagram bounds one UDP datagram of StatsD lines: below a 1500-byte
// MTU less IP and UDP headers, so no push is fragmented (and lost whole
// when one fragment is).
const statsdDatagram = 1432

// statsdTimeout bounds dialing the server and writing one push: a slow or
// dead server costs the pusher's goroutine this much per interval and
// nothing else.
const statsdTimeout = 2 * time.Second

// StatsD pushes the figures of a node's own registry — every metric of its
// role's family (ringlb_edge_, ringlb_balancer_, ringlb_gslb_) — to a
// StatsD server, every interval, over UDP or TCP. Apply starts, changes or
// stops it (a reload); Close pushes once more and stops.
//
// Names are the Prometheus names without "ringlb_", after the prefix
// (default "ringlb.<node>."), then each label as ".name.value" (as
// client_golang's Graphite bridge writes them; a value's characters other
// than letters, digits, '-' and '_' escaped, one-to-one: statsdSafe): gauges are sent as gauges
// (|g), counters as their increase since the last push that got through
// (|c: an outage loses no count), histograms as NAME.count (|c), NAME.mean
// and NAME.p99 (|g, over the interval; the p99 is its bucket's upper bound).
//
// It owns one goroutine while pushing; a write never takes longer than
// statsdTimeout, so a slow or dead server holds up nothing but the next push.
type StatsD struct {
	node, family string
	gather       prometheus.Gatherer
	log          *slog.Logger
	pushes       *prometheus.CounterVec

	mu     sync.Mutex // Apply and Close, one at a time
	cfg    configs.StatsD
	cancel context.CancelFunc
	done   chan struct{}
	// last is each counter's value at the last push that got through; the
	// running pusher owns it, and hands it to the next one when it ends.
	last map[string]float64
}

// Results of a push (ringlb_statsd_pushes_total).
const (
	pushOK     = "ok"
	pushFailed = "failed"
)

// NewStatsD makes the pusher of node's figures of family ("ringlb_edge_")
// from reg, which also gets ringlb_statsd_pushes_total. It pushes nothing
// until Apply gives it an address.
func NewStatsD(node, family string, reg *prometheus.Registry, log *slog.Logger) *StatsD {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	pushes := registered(reg, NewCounterVec(prometheus.CounterOpts{Name: "ringlb_statsd_pushes_total",
		Help: "Pushes to the StatsD server (*.statsd), by result: ok, failed (dropped; counters are sent with the next push)."}, "result", pushOK, pushFailed))
	return &StatsD{node: node, family: family, gather: reg, log: log, pushes: pushes, last: map[string]float64{}}
}

// Apply pushes with cfg from now on: a changed address, protocol, prefix or
// interval restarts the pusher (the old one pushes what it has first); no
// address stops it.
func (s *StatsD) Apply(cfg configs.StatsD) {
	if cfg.Address != "" && cfg.Prefix == "" {
		cfg.Prefix = "ringlb." + s.node + "."
	}
	// A section configs did not provision (built in code): its defaults,
	// rather than a ticker's panic.
	if cfg.Interval <= 0 {
		cfg.Interval = configs.Duration(configs.DefaultStatsDInterval)
	}
	if cfg.Protocol == "" {
		cfg.Protocol = configs.StatsDUDP
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if cfg == s.cfg && (s.cancel != nil) == (cfg.Address != "") {
		return
	}
	s.stopLocked()
	s.cfg = cfg
	if cfg.Address == "" {
		return
	}
	p := &statsdPusher{s: s, cfg: cfg, last: s.last}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel, s.done = cancel, make(chan struct{})
	go func(done chan struct{}) {
		defer close(done)
		p.run(ctx)
	}(s.done)
	s.log.Info("pushing metrics to StatsD", "address", cfg.Address, "protocol", cfg.Protocol, "prefix", cfg.Prefix, "interval", cfg.Interval.D())
}

// Close pushes once more (the counts since the last push) and stops.
func (s *StatsD) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopLocked()
}

func (s *StatsD) stopLocked() {
	if s.cancel == nil {
		return
	}
	s.cancel()
	<-s.done
	s.cancel, s.done = nil, nil
}

// statsdPusher is owned by its run goroutine.
type statsdPusher struct {
	s    *StatsD
	cfg  configs.StatsD
	conn net.Conn // nil until dialled, and after a failed write
	last map[string]float64
	// warned keeps one failure from being logged every interval.
	warned bool
}

func (p *statsdPusher) run(ctx context.Context) {
	t := time.NewTicker(p.cfg.Interval.D())
	defer t.Stop()
	defer func() {
		if p.conn != nil {
			_ = p.conn.Close()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			p.push() // the counts since the last tick
			return
		case <-t.C:
			p.push()
		}
	}
}

func (p *statsdPusher) push() {
	lines, seen, err := p.lines()
	if err == nil {
		err = p.send(lines)
	}
	if err == nil {
		// Only now: a push that did not get through leaves the counters'
		// increase for the next one. Series gone from the registry go
		// from here too, so the map is only as large as the registry.
		clear(p.last)
		maps.Copy(p.last, seen)
		p.s.pushes.WithLabelValues(pushOK).Inc()
	} else {
		p.s.pushes.WithLabelValues(pushFailed).Inc()
	}
	switch {
	case err != nil && !p.warned:
		p.s.log.Warn("StatsD push failed; retrying every interval", "address", p.cfg.Address, "protocol", p.cfg.Protocol, "err", err)
		p.warned = true
	case err == nil && p.warned:
		p.s.log.Info("StatsD push works again", "address", p.cfg.Address)
		p.warned = false
	}
}

// lines renders the registry's metrics of the family as StatsD lines, and
// returns the cumulative values they were computed from.
func (p *statsdPusher) lines() ([]string, map[string]float64, error) {
	families, err := p.s.gather.Gather()
	if err != nil {
		return nil, nil, fmt.Errorf("gather metrics: %w", err)
	}
	var out []string
	seen := map[string]float64{}
	delta := func(key string, v float64) float64 {
		seen[key] = v
		return v - p.last[key]
	}
	for _, mf := range families {
		full := mf.GetName()
		if !strings.HasPrefix(full, p.s.family) {
			continue
		}
		base := p.cfg.Prefix + strings.TrimPrefix(full, "ringlb_")
		for _, m := range mf.GetMetric() {
			name := base + labelPath(m)
			switch {
			case m.GetGauge() != nil:
				out = append(out, gaugeLine(name, m.GetGauge().GetValue()))
			case m.GetCounter() != nil:
				if d := delta(name, m.GetCounter().GetValue()); d > 0 {
					out = append(out, name+":"+strconv.FormatFloat(d, 'f', -1, 64)+"|c")
				}
			case m.GetHistogram() != nil:
				out = append(out, histogramLines(name, m.GetHistogram(), delta)...)
			}
		}
	}
	return out, seen, nil
}

// histogramLines are a histogram's count, mean and p99 over the interval.
func histogramLines(name string, h *dto.Histogram, delta func(string, float64) float64) []string {
	count := delta(name+".count", float64(h.GetSampleCount()))
	sum := delta(name+".sum", h.GetSampleSum())
	// The p99 of this interval's observations: the first bucket whose
	// increase covers 99% of them.
	p99 := math.Inf(1)
	for _, b := range h.GetBucket() {
		if d := delta(name+".le."+strconv.FormatFloat(b.GetUpperBound(), 'g', -1, 64), float64(b.GetCumulativeCount())); d >= 0.99*count && math.IsInf(p99, 1) {
			p99 = b.GetUpperBound()
		}
	}
	if count <= 0 {
		return nil
	}
	if math.IsInf(p99, 1) && len(h.GetBucket()) > 0 {
		p99 = h.GetBucket()[len(h.GetBucket())-1].GetUpperBound() // above the last bucket: its bound is all we know
	}
	return []string{
		name + ".count:" + strconv.FormatFloat(count, 'f', -1, 64) + "|c",
		gaugeLine(name+".mean", sum/count),
		gaugeLine(name+".p99", p99),
	}
}

// labelPath is a metric's labels as ".name.value" segments, in the order
// Prometheus sorts them.
func labelPath(m *dto.Metric) string {
	var b strings.Builder
	for _, l := range m.GetLabel() {
		b.WriteByte('.')
		b.WriteString(statsdSafe(l.GetName()))
		b.WriteByte('.')
		b.WriteString(statsdSafe(l.GetValue()))
	}
	return b.String()
}

// statsdSafe keeps letters, digits, '-' and '_': in the plain-text protocol
// ':', '|' and newlines are syntax, '.' separates a name's segments, and
// servers drop most other characters (etsy's statsd). Any other byte is
// written "_xHH" (its hex), and a '_' followed by 'x' as "_x5f": so the
// escape is one-to-one. Mapping every other character to '_' gave edges
// "a.b" and "a_b" one name, summed and overwritten by the server, and
// each counter's increase was computed against the other's last value.
// Ordinary values ("edge-1", "max_connections") are unchanged; "" is "_x",
// which no other value gives.
func statsdSafe(s string) string {
	if s == "" {
		return "_x"
	}
	plain := func(c byte) bool {
		return c == '-' || c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
	}
	i := 0
	for i < len(s) && plain(s[i]) && !(s[i] == '_' && i+1 < len(s) && s[i+1] == 'x') {
		i++
	}
	if i == len(s) {
		return s
	}
	const hex = "0123456789abcdef"
	b := []byte(s[:i])
	for ; i < len(s); i++ {
		c := s[i]
		if plain(c) && !(c == '_' && i+1 < len(s) && s[i+1] == 'x') {
			b = append(b, c)
			continue
		}
		b = append(b, '_', 'x', hex[c>>4], hex[c&0xf])
	}
	return string(b)
}

// gaugeLine formats a gauge. A leading sign would make StatsD add to the
// gauge instead of setting it, so a negative value (none of ours should
// be) is sent as 0.
func gaugeLine(name string, v float64) string {
	return name + ":" + strconv.FormatFloat(max(v, 0), 'f', -1, 64) + "|g"
}

// send writes lines: over UDP in as few datagrams as fit under
// statsdDatagram, over TCP as newline-terminated lines on the kept
// connection. A failed write drops the connection (a torn last line is
// discarded by the server); the next push dials again.
func (p *statsdPusher) send(lines []string) error {
	if len(lines) == 0 {
		return nil
	}
	if p.conn != nil && p.cfg.Protocol == configs.StatsDTCP && !streamOpen(p.conn) {
		// The server closed it (restarted, gone): a write would still be
		// taken by the kernel and lost; dial afresh instead.
		_ = p.conn.Close()
		p.conn = nil
	}
	if p.conn == nil {
		d := net.Dialer{Timeout: statsdTimeout}
		conn, err := d.Dial(p.cfg.Protocol, p.cfg.Address)
		if err != nil {
			return fmt.Errorf("statsd %s: %w", p.cfg.Address, err)
		}
		p.conn = conn
	}
	err := p.conn.SetWriteDeadline(time.Now().Add(statsdTimeout))
	if err == nil {
		if p.cfg.Protocol == configs.StatsDTCP {
			err = p.writeStream(lines)
		} else {
			err = p.writeDatagrams(lines)
		}
	}
	if err != nil {
		// Dial again next time: the name may resolve elsewhere by then,
		// and a TCP stream that failed mid-line is not to be continued.
		_ = p.conn.Close()
		p.conn = nil
		return fmt.Errorf("statsd %s: %w", p.cfg.Address, err)
	}
	return nil
}

// streamOpen reports whether the server has not closed a TCP connection:
// a StatsD server never writes, so a read that does not just time out
// (EOF, a reset) means the connection is over. The deadline is a moment
// ahead, not now: Go answers a read past its deadline without asking the
// socket.
func streamOpen(c net.Conn) bool {
	if err := c.SetReadDeadline(time.Now().Add(time.Millisecond)); err != nil {
		return false
	}
	var one [1]byte
	_, err := c.Read(one[:])
	var ne net.Error
	// nil: a server that does write something; still open.
	return err == nil || errors.As(err, &ne) && ne.Timeout()
}

func (p *statsdPusher) writeStream(lines []string) error {
	n := 0
	for _, l := range lines {
		n += len(l) + 1
	}
	buf := make([]byte, 0, n)
	for _, l := range lines {
		buf = append(buf, l...)
		buf = append(buf, '\n')
	}
	_, err := p.conn.Write(buf)
	return err
}

func (p *statsdPusher) writeDatagrams(lines []string) error {
	var buf []byte
	for _, l := range lines {
		if len(buf) > 0 && len(buf)+1+len(l) > statsdDatagram {
			if _, err := p.conn.Write(buf); err != nil {
				return err
			}
			buf = buf[:0]
		}
		if len(buf) > 0 {
			buf = append(buf, '\n')
		}
		buf = append(buf, l...)
	}
	_, err := p.conn.Write(buf)
	return err
}
