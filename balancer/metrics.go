package balancer

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/ringlb/ringlb/balancer/ring"
	"github.com/ringlb/ringlb/health"
	"github.com/ringlb/ringlb/health/operator"
)

// Backend error kinds, the values of the kind label of
// ringlb_balancer_backend_errors_total.
const (
	// errorKindDial: the TCP (or TLS) connection to the edge failed; the next
	// candidate is tried.
	errorKindDial = "dial"
	// errorKindHandshake: the edge accepted the connection but its answer to a
	// WebSocket upgrade was missing, too large or malformed.
	errorKindHandshake = "handshake"
	// errorKindResponse: a plain HTTP request reached the edge but no usable
	// response came back (timeout, reset, malformed response), or its body
	// stopped coming for request_timeout (pooledConn.streamTo).
	errorKindResponse = "response"
	// errorKindLocal: the dial to the edge failed in this process (out of
	// descriptors, memory or local ports); the edge is not blamed, the
	// client gets 503.
	errorKindLocal = "local"
)

// errorKinds are the kind label's values.
var errorKinds = [...]string{errorKindDial, errorKindHandshake, errorKindResponse, errorKindLocal}

// codeOther is the code label of ringlb_balancer_requests_total for a
// status outside HTTP's 100–599 (HAProxy's hrsp_other): the code is
// whatever the edge answers, and one answering odd statuses would
// otherwise make a series of each.
const codeOther = "other"

// statusLabels are the code label's values for 100–599, made once: a
// request's label is looked up, not formatted (and allocated) per request.
var statusLabels = func() (l [500]string) {
	for i := range l {
		l[i] = strconv.Itoa(100 + i)
	}
	return l
}()

// codeLabel is the code label of a request answered with status code.
func codeLabel(code int) string {
	if code < 100 || code >= 100+len(statusLabels) {
		return codeOther
	}
	return statusLabels[code-100]
}

// metrics are the balancer's Prometheus metrics, named by the wire contract
// (docs/CONTRACT.md, "Metrics"). All of them are declared here and nowhere else.
type metrics struct {
	// connectionsActive counts live WebSocket tunnels per edge.
	connectionsActive *prometheus.GaugeVec
	// requestsTotal counts answered requests by the edge that answered and the
	// status code the client got (101 for a tunnel; codeLabel). edge is "" when the
	// balancer answered itself (400 bad key, 502 no edge reachable, 503 empty ring).
	requestsTotal *prometheus.CounterVec
	// backendErrorsTotal counts failures talking to an edge, by kind.
	backendErrorsTotal *prometheus.CounterVec
	// rejectedTotal counts client connections refused by a limit, by reason
	// (max_connections, max_connections_per_ip, new_connections_per_ip,
	// proxy_protocol).
	rejectedTotal *prometheus.CounterVec
	// acceptErrors counts failed accepts (EMFILE, ENFILE, ENOBUFS...), each
	// retried after a backoff, by listener (data, redirect).
	acceptErrors *prometheus.CounterVec
	// connectionErrors counts client connections the data and redirect
	// ports' HTTP server ended with an error (a malformed request head, one
	// over max_header_bytes), each a line of fasthttp's own, rate-limited
	// in the log (httplog.Limit).
	connectionErrors prometheus.Counter
	// checksNotMade counts static edges' checks this process could not
	// make, by what it lacked (health.LackingReasons): each holds the
	// edge's state, and only the first of a run is logged.
	checksNotMade *prometheus.CounterVec

	// The live-session table (table.go, table_sync.go).
	//
	// tableEvictions counts entries removed, by reason: expired (linger
	// over), capacity (room for a new key).
	tableEvictions *prometheus.CounterVec
	// tableRefused counts keys routed by the ring without being entered,
	// by reason: new_key_budget (the client's), full (only live sessions
	// in the table's sample of a full shard).
	tableRefused *prometheus.CounterVec
	// tableConflicts counts placements made here that lost to another
	// balancer's placement of the same key on another backend.
	tableConflicts prometheus.Counter
	// tableMoves counts keys moved here to another backend because theirs
	// did not answer, or an edge redirected them.
	tableMoves prometheus.Counter
	// tableTunnelsClosed counts tunnels closed because their key's session
	// is elsewhere now, by reason: moved, conflict, drain_deadline.
	tableTunnelsClosed *prometheus.CounterVec
	// tableIgnored counts records and drains from other balancers that
	// were not applied, by reason.
	tableIgnored *prometheus.CounterVec
	// tableSyncLag is the age of other balancers' placements when they
	// arrive here.
	tableSyncLag prometheus.Histogram
	// tableSyncBytes counts bytes of table messages sent, by kind (delta,
	// refresh, answer).
	tableSyncBytes *prometheus.CounterVec
}

// tableGauges read the session table at scrape time.
type tableGauges struct {
	entries, ready func() float64
}

// newMetrics declares the balancer's metrics on reg. certExpiry says when
// the certificate served on the data port expires (Unix seconds), 0 without
// TLS: alerts warn before it does.
func newMetrics(reg prometheus.Registerer, r *ring.Ring, certExpiry func() float64, tg tableGauges) (*metrics, error) {
	m := &metrics{
		connectionsActive: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ringlb_balancer_connections_active",
			Help: "Live WebSocket tunnels through this balancer, per edge.",
		}, []string{"edge"}),
		requestsTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ringlb_balancer_requests_total",
			Help: "Requests answered, by edge (empty when the balancer answered itself) and HTTP status code (other: outside 100-599).",
		}, []string{"edge", "code"}),
		backendErrorsTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ringlb_balancer_backend_errors_total",
			Help: "Failures talking to an edge, by edge and kind (dial, handshake, response).",
		}, []string{"edge", "kind"}),
		rejectedTotal: operator.NewCounterVec(prometheus.CounterOpts{
			Name: "ringlb_balancer_rejected_connections_total",
			Help: "Client connections refused by a limit or a bad PROXY header, by reason.",
		}, "reason", rejectMaxConns, rejectPerIPConns, rejectPerIPRate, rejectMemory),
		acceptErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ringlb_balancer_accept_errors_total",
			Help: "Failed accepts (out of file descriptors or kernel memory), each retried after a backoff, by listener (data, redirect).",
		}, []string{"listener"}),
		connectionErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ringlb_balancer_connection_errors_total",
			Help: "Client connections the data and redirect ports ended on an error of their HTTP server (a malformed request head, one over max_header_bytes); logged at most once per 10 s.",
		}),
		checksNotMade: operator.NewCounterVec(prometheus.CounterOpts{
			Name: "ringlb_balancer_monitor_checks_not_made_total",
			Help: "Static edges' checks this process could not make, by what it lacked (descriptors, memory, local_ports): each holds the edge's state.",
		}, "reason", health.LackingReasons()...),
		tableEvictions: operator.NewCounterVec(prometheus.CounterOpts{
			Name: "ringlb_balancer_session_table_evictions_total",
			Help: "Live-session table entries removed, by reason (expired, capacity).",
		}, "reason", evictExpired, evictCapacity),
		tableRefused: operator.NewCounterVec(prometheus.CounterOpts{
			Name: "ringlb_balancer_session_table_refused_total",
			Help: "New keys routed by the ring without an entry, by reason (new_key_budget, full).",
		}, "reason", refusedBudget, refusedFull),
		tableConflicts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ringlb_balancer_session_table_conflicts_total",
			Help: "Placements by this balancer that lost to another balancer's placement of the same key on another backend.",
		}),
		tableMoves: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ringlb_balancer_session_table_moves_total",
			Help: "Keys this balancer moved to another backend because theirs did not answer or an edge redirected them.",
		}),
		tableTunnelsClosed: operator.NewCounterVec(prometheus.CounterOpts{
			Name: "ringlb_balancer_session_table_tunnels_closed_total",
			Help: "Tunnels closed because their session lives on another backend now, by reason (moved, conflict, drain_deadline).",
		}, "reason", closeMoved, closeConflict, closeDrained),
		tableIgnored: operator.NewCounterVec(prometheus.CounterOpts{
			Name: "ringlb_balancer_session_table_ignored_total",
			Help: "Table records and drains from other nodes not applied, and asks for the table not answered as copies, by reason (unknown_backend, backend_down, malformed, not_a_balancer, full, replayed).",
		}, "reason", ignoredUnknown, ignoredDown, ignoredMalformed, ignoredSender, ignoredFull, ignoredReplay),
		tableSyncLag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "ringlb_balancer_session_table_sync_lag_seconds",
			Help:    "Age of another balancer's placement when it arrives here.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}),
		tableSyncBytes: operator.NewCounterVec(prometheus.CounterOpts{
			Name: "ringlb_balancer_session_table_sync_bytes_total",
			Help: "Bytes of session table messages sent to other balancers, by kind (delta, refresh, answer).",
		}, "kind", syncDelta, syncRefresh, syncAnswer),
	}
	ringMembers := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "ringlb_balancer_ring_members",
		Help: "Edges on the ring this balancer routes with.",
	}, func() float64 { return float64(len(r.Snapshot().Members())) })
	ringVersion := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "ringlb_balancer_ring_version",
		Help: "Version of the ring snapshot this balancer routes with; it changes with every membership change.",
	}, func() float64 { return float64(r.Snapshot().Version()) })

	certExpires := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "ringlb_balancer_tls_cert_expiry_timestamp_seconds",
		Help: "When the certificate served on the data port expires, Unix seconds (0 without TLS).",
	}, certExpiry)

	tableEntries := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "ringlb_balancer_session_table_entries",
		Help: "Keys in the live-session table.",
	}, tg.entries)
	tableReady := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "ringlb_balancer_session_table_ready",
		Help: "1 once the live-session table routes (a starting balancer has a peer's table, or waited startup_wait), else 0.",
	}, tg.ready)

	for _, c := range []prometheus.Collector{m.connectionsActive, m.requestsTotal, m.backendErrorsTotal, m.rejectedTotal, m.acceptErrors, m.connectionErrors, m.checksNotMade, ringMembers, ringVersion, certExpires,
		m.tableEvictions, m.tableRefused, m.tableConflicts, m.tableMoves, m.tableTunnelsClosed, m.tableIgnored, m.tableSyncLag, m.tableSyncBytes, tableEntries, tableReady} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// edgeVec is a metric labelled by edge, whose series of one edge go at once.
type edgeVec interface {
	prometheus.Collector
	DeletePartialMatch(prometheus.Labels) int
}

// perEdge are the metrics labelled by edge.
func (m *metrics) perEdge() []edgeVec {
	return []edgeVec{m.connectionsActive, m.requestsTotal, m.backendErrorsTotal}
}

// edgesWithSeries are the edge label's values of the per-edge series.
func (m *metrics) edgesWithSeries() map[string]bool {
	ch := make(chan prometheus.Metric)
	go func() {
		defer close(ch)
		for _, v := range m.perEdge() {
			v.Collect(ch)
		}
	}()
	names := map[string]bool{}
	for s := range ch {
		var d dto.Metric
		if s.Write(&d) != nil {
			continue
		}
		for _, l := range d.GetLabel() {
			if l.GetName() == "edge" {
				names[l.GetValue()] = true
			}
		}
	}
	return names
}

// tunnelGauge is the connections_active gauge of edge: its open tunnels.
func (m *metrics) tunnelGauge(edge string) float64 {
	var d dto.Metric
	if m.connectionsActive.WithLabelValues(edge).Write(&d) != nil {
		return 0
	}
	return d.GetGauge().GetValue()
}

// zeroErrors makes edge's error counters, at 0, of every kind: made by
// its first error, a series first seen at 1 is no increase to Prometheus,
// and an alert on increase(...) > 0 missed it.
func (m *metrics) zeroErrors(edge string) {
	for _, kind := range errorKinds {
		m.backendErrorsTotal.WithLabelValues(edge, kind)
	}
}

// deleteEdge deletes every series of edge.
func (m *metrics) deleteEdge(edge string) {
	for _, v := range m.perEdge() {
		v.DeletePartialMatch(prometheus.Labels{"edge": edge})
	}
}
