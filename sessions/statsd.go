package sessions

import (
	"context"
	"fmt"
	"math"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ringlb/ringlb/configs"
)

// statsdDatagram bounds one UDP datagram of StatsD lines: below a 1500-byte
// MTU less IP and UDP headers, so no push is fragmented (and lost whole
// when one fragment is).
const statsdDatagram = 1432

// statsdTimeout bounds resolving the server's address and writing one push.
const statsdTimeout = 2 * time.Second

// StartStatsD pushes the figures of the edge's /metrics (every
// ringlb_edge_* metric of its registry) to the StatsD server of cfg, every
// cfg.Interval, until the returned stop is called; stop pushes once more and
// waits for the pusher. With no cfg.Address it starts nothing.
//
// Names are the Prometheus names without "ringlb_", after cfg.Prefix
// (default "ringlb.<edge name>."): gauges are sent as gauges (|g), counters
// as their increase since the last push (|c), and the lag histogram as
// edge_lag_seconds.count (|c), .mean and .p99 (|g, seconds, over the
// interval; the p99 is its histogram bucket's upper bound).
func (s *Server) StartStatsD(cfg configs.StatsD) (stop func()) {
	if cfg.Address == "" {
		return func() {}
	}
	if cfg.Interval <= 0 {
		cfg.Interval = configs.Duration(configs.DefaultStatsDInterval)
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "ringlb." + s.name + "."
	}
	p := &statsdPusher{srv: s, cfg: cfg, last: map[string]float64{}}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		p.run(ctx)
	}()
	s.log.Info("pushing metrics to StatsD", "address", cfg.Address, "prefix", cfg.Prefix, "interval", cfg.Interval.D())
	var once sync.Once
	return func() { once.Do(func() { cancel(); wg.Wait() }) }
}

// statsdPusher is owned by its run goroutine.
type statsdPusher struct {
	srv  *Server
	cfg  configs.StatsD
	conn net.Conn // nil until the address resolves
	// last holds each counter's value (and the lag histogram's count, sum
	// and buckets) at the previous push.
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
	lines, err := p.lines()
	if err == nil {
		err = p.send(lines)
	}
	switch {
	case err != nil && !p.warned:
		p.srv.log.Warn("StatsD push failed; retrying every interval", "address", p.cfg.Address, "err", err)
		p.warned = true
	case err == nil && p.warned:
		p.srv.log.Info("StatsD push works again", "address", p.cfg.Address)
		p.warned = false
	}
}

// lines renders the registry's ringlb_edge_* metrics as StatsD lines.
func (p *statsdPusher) lines() ([]string, error) {
	families, err := p.srv.reg.Gather()
	if err != nil {
		return nil, fmt.Errorf("gather metrics: %w", err)
	}
	var out []string
	for _, mf := range families {
		full := mf.GetName()
		if !strings.HasPrefix(full, "ringlb_edge_") || len(mf.GetMetric()) == 0 {
			continue
		}
		name := p.cfg.Prefix + strings.TrimPrefix(full, "ringlb_")
		m := mf.GetMetric()[0] // the edge's metrics carry no labels
		switch {
		case m.GetGauge() != nil:
			out = append(out, gaugeLine(name, m.GetGauge().GetValue()))
		case m.GetCounter() != nil:
			if d := p.delta(full, m.GetCounter().GetValue()); d > 0 {
				out = append(out, name+":"+strconv.FormatFloat(d, 'f', -1, 64)+"|c")
			}
		case m.GetHistogram() != nil:
			h := m.GetHistogram()
			count := p.delta(full+".count", float64(h.GetSampleCount()))
			sum := p.delta(full+".sum", h.GetSampleSum())
			if count <= 0 {
				continue
			}
			// The p99 of this interval's observations: the first bucket
			// whose increase covers 99% of them.
			p99 := math.Inf(1)
			for _, b := range h.GetBucket() {
				if d := p.delta(full+".le."+strconv.FormatFloat(b.GetUpperBound(), 'g', -1, 64), float64(b.GetCumulativeCount())); d >= 0.99*count && math.IsInf(p99, 1) {
					p99 = b.GetUpperBound()
				}
			}
			if math.IsInf(p99, 1) && len(h.GetBucket()) > 0 {
				p99 = h.GetBucket()[len(h.GetBucket())-1].GetUpperBound() // above the last bucket: its bound is all we know
			}
			out = append(out,
				name+".count:"+strconv.FormatFloat(count, 'f', -1, 64)+"|c",
				gaugeLine(name+".mean", sum/count),
				gaugeLine(name+".p99", p99))
		}
	}
	return out, nil
}

// delta returns how much the cumulative value v of key grew since the last
// push (all of it the first time), and remembers v.
func (p *statsdPusher) delta(key string, v float64) float64 {
	d := v - p.last[key]
	p.last[key] = v
	return d
}

// gaugeLine formats a gauge. A leading sign would make StatsD add to the
// gauge instead of setting it, so a negative value (none of ours should
// be) is sent as 0.
func gaugeLine(name string, v float64) string {
	return name + ":" + strconv.FormatFloat(max(v, 0), 'f', -1, 64) + "|g"
}

// send writes lines in as few datagrams as fit under statsdDatagram.
func (p *statsdPusher) send(lines []string) error {
	if len(lines) == 0 {
		return nil
	}
	if p.conn == nil {
		ctx, cancel := context.WithTimeout(context.Background(), statsdTimeout)
		conn, err := (&net.Dialer{}).DialContext(ctx, "udp", p.cfg.Address)
		cancel()
		if err != nil {
			return fmt.Errorf("statsd %s: %w", p.cfg.Address, err)
		}
		p.conn = conn
	}
	if err := p.conn.SetWriteDeadline(time.Now().Add(statsdTimeout)); err != nil {
		return err
	}
	var buf []byte
	flush := func() error {
		_, err := p.conn.Write(buf)
		buf = buf[:0]
		return err
	}
	var err error
	for _, l := range lines {
		if len(buf) > 0 && len(buf)+1+len(l) > statsdDatagram {
			if err = flush(); err != nil {
				break
			}
		}
		if len(buf) > 0 {
			buf = append(buf, '\n')
		}
		buf = append(buf, l...)
	}
	if err == nil {
		err = flush()
	}
	if err != nil {
		// Dial again next time: the name may resolve elsewhere by then.
		_ = p.conn.Close()
		p.conn = nil
		return fmt.Errorf("statsd %s: %w", p.cfg.Address, err)
	}
	return nil
}
