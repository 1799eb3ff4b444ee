package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/miekg/dns"
)

// DNSQuery is one entry of a query mix.
type DNSQuery struct {
	Name string
	Type uint16
}

// DefaultDNSMix is the mix of the GSLB measurement (bench/RESULTS.md): the managed name, a
// CNAME, NXDOMAIN, MX and AAAA (against the demo zone).
var DefaultDNSMix = []DNSQuery{
	{"ide.ringlb.test.", dns.TypeA},
	{"www.ringlb.test.", dns.TypeA},
	{"nope.ringlb.test.", dns.TypeA},
	{"ringlb.test.", dns.TypeMX},
	{"ide.ringlb.test.", dns.TypeAAAA},
}

// DNSOptions describes one `ringlb bench dns` run, bounded by Duration and
// MaxQueries.
type DNSOptions struct {
	Server      string // host:port
	Clients     int    // concurrent clients, each with one query in flight
	Duration    time.Duration
	MaxQueries  int64 // 0: no bound but Duration
	Mix         []DNSQuery
	Timeout     time.Duration
	TCP         bool
	ExpectNoErr bool // count answers other than NOERROR/NXDOMAIN as failures
}

// DNSResult is what a run measured.
type DNSResult struct {
	Options  DNSOptions  `json:"options"`
	Sent     int64       `json:"queries_sent"`
	Answered int64       `json:"queries_answered"`
	Lost     int64       `json:"queries_lost"`
	QPS      float64     `json:"qps"` // answers per second of the time the run sent queries
	Latency  Percentiles `json:"latency"`
	// LatencyCDF and Timeline (answers so far, once a second) are for
	// the chart.
	LatencyCDF []CDFPoint     `json:"latency_cdf"`
	Timeline   []DNSTick      `json:"timeline"`
	Rcodes     map[string]int `json:"rcodes"`
}

// DNSTick is the count of answers At into the run.
type DNSTick struct {
	At       time.Duration `json:"at_ns"`
	Answered int64         `json:"answered"`
}

// Summary is the one line printed at the end of a run.
func (r *DNSResult) Summary() string {
	ms := func(d time.Duration) string { return fmt.Sprintf("%.3fms", float64(d)/1e6) }
	return fmt.Sprintf("dns: %d queries, %d answered, %d lost | %.0f QPS | latency p50=%s p90=%s p99=%s max=%s | rcodes %v",
		r.Sent, r.Answered, r.Lost, r.QPS, ms(r.Latency.P50), ms(r.Latency.P90), ms(r.Latency.P99), ms(r.Latency.Max), r.Rcodes)
}

// RunDNS sends the mix from Clients concurrent clients until Duration or
// MaxQueries, printing progress once a second.
func RunDNS(ctx context.Context, o DNSOptions, progress io.Writer) (*DNSResult, error) {
	if o.Clients == 0 {
		o.Clients = 8
	}
	if len(o.Mix) == 0 {
		o.Mix = DefaultDNSMix
	}
	if o.Timeout == 0 {
		o.Timeout = time.Second
	}
	var errs []error
	if o.Server == "" {
		errs = append(errs, errors.New("a server host:port is required (-server 127.0.0.1:5353)"))
	}
	if o.Clients < 1 || o.Clients > 1000 {
		errs = append(errs, fmt.Errorf("clients must be in range [1, 1000], got %d", o.Clients))
	}
	if o.Duration <= 0 || o.Duration > time.Hour {
		errs = append(errs, fmt.Errorf("duration must be in range (0, 1h], got %s", o.Duration))
	}
	if o.MaxQueries < 0 {
		errs = append(errs, fmt.Errorf("max queries must be at least 0 (0: duration only), got %d", o.MaxQueries))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, &OptionsError{err}
	}
	if progress == nil {
		progress = io.Discard
	}
	// Started before the deadline is set: sending stops no earlier than
	// Duration after start.
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, o.Duration)
	defer cancel()
	// sendEnd is when the run stopped sending (its deadline, Ctrl-C, or
	// the last of MaxQueries sent), since start; 0 until then.
	var sendEnd atomic.Int64
	stopSending := func() { sendEnd.CompareAndSwap(0, int64(time.Since(start))) }
	defer context.AfterFunc(ctx, stopSending)()
	var sent, answered atomic.Int64
	var mu sync.Mutex
	rcodes := map[string]int{}
	var lat []*latencySample // each client's, guarded by mu
	stopProgress := make(chan struct{})
	progressDone := make(chan struct{})
	var timeline []DNSTick // written by the progress goroutine until progressDone
	go func() {
		defer close(progressDone)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		var last int64
		for {
			select {
			case <-stopProgress:
				return
			case <-t.C:
				n := answered.Load()
				at := time.Since(start)
				timeline = append(timeline, DNSTick{At: at, Answered: n})
				fmt.Fprintf(progress, "[%5.1fs] answered %d (%d/s)\n", at.Seconds(), n, n-last)
				last = n
			}
		}
	}()
	var wg sync.WaitGroup
	var dialFailed int // guarded by mu
	var dialErr error  // the first, guarded by mu
	for i := 0; i < o.Clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			network := "udp"
			if o.TCP {
				network = "tcp"
			}
			c := &dns.Client{Net: network, Timeout: o.Timeout}
			conn, err := c.DialContext(ctx, o.Server)
			if err != nil {
				if ctx.Err() == nil {
					mu.Lock()
					dialFailed++
					if dialErr == nil {
						dialErr = err
					}
					rcodes["error: "+errorKind(err)]++
					mu.Unlock()
				}
				return
			}
			defer func() {
				if conn != nil {
					conn.Close()
				}
			}()
			local := map[string]int{}
			samples := latencySample{max: maxDNSSamples}
			rnd := rand.New(rand.NewPCG(uint64(i), 7))
			m := new(dns.Msg)
			for ctx.Err() == nil {
				if n := sent.Add(1); o.MaxQueries > 0 && n > o.MaxQueries {
					break
				} else if n == o.MaxQueries {
					stopSending()
				}
				q := o.Mix[rnd.IntN(len(o.Mix))]
				m.SetQuestion(q.Name, q.Type)
				t0 := time.Now()
				// Without a context: with one, this miekg/dns version fails
				// writes at once with "i/o timeout" on a reused UDP conn.
				// The client's Timeout bounds each query instead.
				r, _, err := c.ExchangeWithConn(m, conn)
				if err != nil && o.TCP && ctx.Err() == nil && closedByServer(err) {
					// A server may close a TCP connection between queries
					// (RFC 7766, 6.2.3; miekg/dns after 128 by default):
					// ask again on a new one, as dnsperf and stub
					// resolvers do, instead of failing every query after.
					conn.Close()
					if conn, err = c.DialContext(ctx, o.Server); err != nil {
						if ctx.Err() == nil {
							local["error: "+errorKind(err)]++
						}
						break
					}
					t0 = time.Now()
					r, _, err = c.ExchangeWithConn(m, conn)
				}
				if err != nil {
					if ctx.Err() == nil {
						local["error: "+errorKind(err)]++
					}
					continue
				}
				d := time.Since(t0)
				answered.Add(1)
				local[dns.RcodeToString[r.Rcode]]++
				samples.add(d)
			}
			mu.Lock()
			for k, v := range local {
				rcodes[k] += v
			}
			lat = append(lat, &samples)
			mu.Unlock()
		}()
	}
	wg.Wait()
	close(stopProgress)
	<-progressDone
	if dialFailed == o.Clients {
		// Nothing was asked: a summary of zeros would not say why.
		return nil, fmt.Errorf("no client could reach the server: %w", dialErr)
	}
	elapsed := time.Since(start)
	merged := mergeLatencies(lat)
	res := &DNSResult{Options: o, Sent: sent.Load(), Answered: answered.Load(), Rcodes: rcodes, Latency: merged.percentiles(), LatencyCDF: merged.cdf()}
	res.Timeline = append([]DNSTick{{}}, timeline...)
	res.Timeline = append(res.Timeline, DNSTick{At: elapsed, Answered: res.Answered})
	if o.MaxQueries > 0 && res.Sent > o.MaxQueries {
		res.Sent = o.MaxQueries
	}
	res.Lost = max(res.Sent-res.Answered, 0)
	// Over the time the run sent, not until its last lost queries timed
	// out, as dnsperf counts it: answers that come after are at most one
	// per client.
	window := elapsed
	if end := sendEnd.Load(); end > 0 {
		window = min(time.Duration(end), o.Duration)
	}
	res.QPS = float64(res.Answered) / window.Seconds()
	return res, nil
}

// closedByServer reports whether err is the end of a connection the
// server closed.
func closedByServer(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET)
}

// maxDNSSamples bounds the latencies each client keeps.
const maxDNSSamples = 20000

func errorKind(err error) string {
	var ne interface{ Timeout() bool }
	if errors.As(err, &ne) && ne.Timeout() {
		return "timeout"
	}
	// Without the addresses: a failure is counted by its kind, not once
	// per client's ephemeral port.
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		return oe.Err.Error()
	}
	return err.Error()
}
