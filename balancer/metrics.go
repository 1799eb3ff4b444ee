package balancer

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ringlb/ringlb/balancer/ring"
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
	// response came back (timeout, reset, malformed response).
	errorKindResponse = "response"
)

// metrics are the balancer's Prometheus metrics, named by the wire contract
// (docs/CONTRACT.md, "Metrics"). All of them are declared here and nowhere else.
type metrics struct {
	// connectionsActive counts live WebSocket tunnels per edge.
	connectionsActive *prometheus.GaugeVec
	// requestsTotal counts answered requests by the edge that answered and the
	// status code the client got (101 for a tunnel). edge is "" when the
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
}

// newMetrics declares the balancer's metrics on reg. certExpiry says when
// the certificate served on the data port expires (Unix seconds), 0 without
// TLS: alerts warn before it does.
func newMetrics(reg prometheus.Registerer, r *ring.Ring, certExpiry func() float64) (*metrics, error) {
	m := &metrics{
		connectionsActive: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ringlb_balancer_connections_active",
			Help: "Live WebSocket tunnels through this balancer, per edge.",
		}, []string{"edge"}),
		requestsTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ringlb_balancer_requests_total",
			Help: "Requests answered, by edge (empty when the balancer answered itself) and HTTP status code.",
		}, []string{"edge", "code"}),
		backendErrorsTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ringlb_balancer_backend_errors_total",
			Help: "Failures talking to an edge, by edge and kind (dial, handshake, response).",
		}, []string{"edge", "kind"}),
		rejectedTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ringlb_balancer_rejected_connections_total",
			Help: "Client connections refused by a limit or a bad PROXY header, by reason.",
		}, []string{"reason"}),
		acceptErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ringlb_balancer_accept_errors_total",
			Help: "Failed accepts (out of file descriptors or kernel memory), each retried after a backoff, by listener (data, redirect).",
		}, []string{"listener"}),
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

	for _, c := range []prometheus.Collector{m.connectionsActive, m.requestsTotal, m.backendErrorsTotal, m.rejectedTotal, m.acceptErrors, ringMembers, ringVersion, certExpires} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
