package gslb

import (
	"sync"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ringlb/ringlb/health"
	"github.com/ringlb/ringlb/health/operator"
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
	// tcpRefused counts TCP connections closed unserved at
	// max_tcp_connections.
	tcpRefused prometheus.Counter
	// tcpRefusedPerIP counts TCP connections closed unserved because their
	// client held max_tcp_connections_per_ip: a counter of its own, so
	// that tcpRefused keeps its meaning (and its one series).
	tcpRefusedPerIP prometheus.Counter
	// tcpEndedWaiting counts TCP connections ended at max_tcp_connections
	// to make room for a new one: each the connection that had waited the
	// longest for its client's next query.
	tcpEndedWaiting prometheus.Counter
	// rejected counts TCP connections closed unserved for a reason the
	// balancer and the edge count theirs under too (their
	// rejected_connections_total): "memory", while the process is low on
	// memory. The caps keep their counters above.
	rejected *prometheus.CounterVec
	// checksNotMade counts pool members' checks this process could not
	// make, by what it lacked (health.LackingReasons): each holds the
	// member's state, and only the first of a run is logged.
	checksNotMade *prometheus.CounterVec
	// signatures counts RRset signatures put on answers, by where they came
	// from: "cache" (made before, still fresh) or "signed" (made for this
	// answer: a new or changed RRset, a negative answer's NSEC, a refresh);
	// "deferred": UDP answers sent TC because they would have needed a
	// new signature beyond signatures_per_second; "refused": TCP answers
	// SERVFAIL after waiting for one in vain; "client_share": TCP answers
	// SERVFAIL at once, their client network over its tcp_client_share.
	signatures *prometheus.CounterVec
	sigCache   [5]prometheus.Counter // cache, signed, deferred, refused, client_share: WithLabelValues locks
	// steeredShare is the share of a region's clients answered from
	// another region because its edges are loaded (0: not steering).
	steeredShare *prometheus.GaugeVec
	// regionLoad is the load of a region's edges as gossip announces it,
	// averaged per edge, by measure.
	regionLoad *prometheus.GaugeVec
	// counters caches queries' children: WithLabelValues hashes and locks,
	// which costs more than answering the query.
	counters sync.Map // uint64(qtype<<16 | rcode), or otherTypeKey | rcode → prometheus.Counter
}

// query counts one answered query (qtype 0: no question).
func (m *metrics) query(qtype uint16, rcode int) {
	key := uint64(qtype)<<16 | uint64(rcode&0xFFFF)
	if c, ok := m.counters.Load(key); ok {
		c.(prometheus.Counter).Inc()
		return
	}
	label := "none"
	if qtype != 0 {
		label = typeLabel(qtype)
	}
	if label == "other" {
		// Keyed as labelled: one entry for every unknown type, not one
		// for each of the 65536 a client can send (21 MB for three
		// rcodes of each, kept for good). Such a query pays a second
		// lookup.
		key = otherTypeKey | uint64(rcode&0xFFFF)
		if c, ok := m.counters.Load(key); ok {
			c.(prometheus.Counter).Inc()
			return
		}
	}
	c := m.queries.WithLabelValues(label, rcodeLabel(rcode))
	m.counters.Store(key, c)
	c.Inc()
}

// otherTypeKey keys the counters of the query types labelled "other":
// beyond every qtype<<16 | rcode.
const otherTypeKey = 1 << 32

// signed counts one RRset's signatures by where they came from.
func (m *metrics) signed(from string) {
	switch from {
	case "cache":
		m.sigCache[0].Inc()
	case "signed":
		m.sigCache[1].Inc()
	case "refused":
		m.sigCache[3].Inc()
	case "client_share":
		m.sigCache[4].Inc()
	default:
		m.sigCache[2].Inc()
	}
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
		tsigErrors: operator.NewCounterVec(prometheus.CounterOpts{
			Name: "ringlb_gslb_tsig_errors_total",
			Help: "Signed queries refused with NOTAUTH because their TSIG did not verify, by TSIG error (BADKEY, BADSIG, BADTIME).",
		}, "error", tsigErrorName(dns.RcodeBadKey), tsigErrorName(dns.RcodeBadSig), tsigErrorName(dns.RcodeBadTime)),
		acceptErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ringlb_gslb_accept_errors_total",
			Help: "Failed accepts on the TCP DNS listener (out of file descriptors or kernel memory), each retried after a backoff.",
		}),
		tcpRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ringlb_gslb_tcp_refused_total",
			Help: "TCP DNS connections closed unserved because gslb.max_tcp_connections were open.",
		}),
		tcpRefusedPerIP: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ringlb_gslb_tcp_refused_per_ip_total",
			Help: "TCP DNS connections closed unserved because their client (an IPv4 address, an IPv6 /64) held gslb.max_tcp_connections_per_ip.",
		}),
		tcpEndedWaiting: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ringlb_gslb_tcp_ended_waiting_total",
			Help: "TCP DNS connections ended at gslb.max_tcp_connections to make room for a new one: each the one that had waited the longest for its client's next query.",
		}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ringlb_gslb_rejected_connections_total",
			Help: "TCP DNS connections closed unserved, by reason: memory (the process near its memory limit). Refusals at the caps are counted in ringlb_gslb_tcp_refused_total and ringlb_gslb_tcp_refused_per_ip_total.",
		}, []string{"reason"}),
		checksNotMade: operator.NewCounterVec(prometheus.CounterOpts{
			Name: "ringlb_gslb_monitor_checks_not_made_total",
			Help: "Pool members' checks this process could not make, by what it lacked (descriptors, memory, local_ports): each holds the member's state.",
		}, "reason", health.LackingReasons()...),
	}
	m.signatures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ringlb_gslb_signatures_total",
		Help: "DNSSEC signatures of RRsets put on answers, by where they came from: cache (made before) or signed (made for this answer); deferred: UDP answers sent TC instead, over signatures_per_second; refused: TCP answers SERVFAIL after waiting for a signature beyond it; client_share: TCP answers SERVFAIL at once, their client network over its tcp_client_share.",
	}, []string{"from"})
	m.sigCache = [5]prometheus.Counter{m.signatures.WithLabelValues("cache"), m.signatures.WithLabelValues("signed"), m.signatures.WithLabelValues("deferred"), m.signatures.WithLabelValues("refused"), m.signatures.WithLabelValues("client_share")}
	m.steeredShare = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "ringlb_gslb_steered_share",
		Help: "Share of a region's clients answered from its failover region because the region's edges are loaded (0: not steering), by managed name and region.",
	}, []string{"name", "region"})
	m.regionLoad = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "ringlb_gslb_region_load",
		Help: "Load of a region's edges as they announce it in gossip, averaged per edge, by region and measure (sessions_per_edge, connections_per_edge, cpu_percent, edges).",
	}, []string{"region", "measure"})
	for _, c := range []prometheus.Collector{m.queries, m.memberUp, m.failovers, m.rateLimited, m.notifies, m.tsigErrors, m.acceptErrors, m.tcpRefused, m.tcpRefusedPerIP, m.tcpEndedWaiting, m.rejected, m.checksNotMade, m.signatures, m.steeredShare, m.regionLoad} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
