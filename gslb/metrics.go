package gslb

import (
	"sync"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the gslb's Prometheus metrics, named by the wire contract
// (docs/CONTRACT.md, "Metrics"), declared here and nowhere else.
type metrics struct {
	// queries counts answered queries by type and response code.
	queries *prometheus.CounterVec
	// memberUp is 1 while a monitored member passes its monitor.
	memberUp *prometheus.GaugeVec
	// failovers counts regions of a managed name going to their failover.
	failovers *prometheus.CounterVec
	// rateLimited counts UDP responses withheld by RRL: dropped, or
	// slipped (sent truncated so a real client retries over TCP).
	rateLimited *prometheus.CounterVec
	// notifies counts NOTIFY messages sent to secondaries, by result.
	notifies *prometheus.CounterVec
	// tsigErrors counts signed queries refused with NOTAUTH, by TSIG error:
	// BADKEY says a client has a key we lack (or a typo in its name), BADSIG
	// a wrong secret or forged MACs, BADTIME a clock off by more than the fudge.
	tsigErrors *prometheus.CounterVec
	// acceptErrors counts failed accepts on the TCP listener (EMFILE,
	// ENFILE, ENOBUFS...), each retried after a backoff.
	acceptErrors prometheus.Counter
	// counters caches queries' children: WithLabelValues hashes and locks,
	// which costs more than answering the query.
	counters sync.Map // uint32(qtype<<16 | rcode) → prometheus.Counter
}

// query counts one answered query (qtype 0: no question).
func (m *metrics) query(qtype uint16, rcode int) {
	key := uint32(qtype)<<16 | uint32(rcode&0xFFFF)
	if c, ok := m.counters.Load(key); ok {
		c.(prometheus.Counter).Inc()
		return
	}
	label := "none"
	if qtype != 0 {
		label = typeLabel(qtype)
	}
	c := m.queries.WithLabelValues(label, rcodeLabel(rcode))
	m.counters.Store(key, c)
	c.Inc()
}

// rcodeLabel names a response code. 16 is BADVERS in a message's rcode;
// miekg/dns's table says BADSIG, its name as a TSIG error.
func rcodeLabel(rcode int) string {
	if rcode == dns.RcodeBadVers {
		return "BADVERS"
	}
	return dns.RcodeToString[rcode]
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		queries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ringlb_gslb_queries_total",
			Help: "DNS queries answered, by query type and response code.",
		}, []string{"qtype", "rcode"}),
		memberUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ringlb_gslb_member_up",
			Help: "1 while a monitored pool member passes its monitor, by managed name, region and member.",
		}, []string{"name", "region", "member"}),
		failovers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ringlb_gslb_failovers_total",
			Help: "Times a region of a managed name went to its failover (no member left to serve).",
		}, []string{"name", "region"}),
		rateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ringlb_gslb_rrl_total",
			Help: "UDP responses withheld by response rate limiting, by action (drop or slip).",
		}, []string{"action"}),
		notifies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ringlb_gslb_notifies_total",
			Help: "NOTIFY messages sent to secondaries, by zone and result (ok or error).",
		}, []string{"zone", "result"}),
		tsigErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ringlb_gslb_tsig_errors_total",
			Help: "Signed queries refused with NOTAUTH because their TSIG did not verify, by TSIG error (BADKEY, BADSIG, BADTIME).",
		}, []string{"error"}),
		acceptErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ringlb_gslb_accept_errors_total",
			Help: "Failed accepts on the TCP DNS listener (out of file descriptors or kernel memory), each retried after a backoff.",
		}),
	}
	for _, c := range []prometheus.Collector{m.queries, m.memberUp, m.failovers, m.rateLimited, m.notifies, m.tsigErrors, m.acceptErrors} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
