package sessions

import (
	"encoding/json"
	"errors"
	"net"
	"net/http"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ringlb/ringlb/health"
	"github.com/ringlb/ringlb/health/operator"
)

// ServeAdmin serves the admin port on ln until Shutdown; it then returns nil.
//
//	GET /healthz       200 "ok"; 503 "draining" once a drain or Shutdown has begun
//	POST /api/drain    202: refuse new sessions, wait up to drain_timeout for the
//	                   live ones to end, then close the rest with 1012
//	GET /metrics       Prometheus text
//	GET /api/sessions  [{"session","participants","created"}], sorted by key
//	GET /api/history?minutes=N  this edge's figures over the last minutes (operator.History)
//	GET /api/audit     this edge's audit records, newest first
//	GET /api/users/sketch  the users online here, mergeable across edges (users.go)
//	GET /login, POST /login, POST /logout, GET /api/whoami  (operator.Node.Mount)
//
// The admin port lists session keys and drains the edge: beyond loopback it
// needs edge.admin.token_file (configs enforces it). Everything but /healthz
// follows operator.Access: the operator's token (or a loopback address
// without one) for all of it, a peer's signed request (a balancer's
// dashboard) for reads; changes need the CSRF proof. Nothing here is
// reachable through a balancer.
func (s *Server) ServeAdmin(ln net.Listener) error {
	s.mu.Lock()
	closing := s.closing
	s.mu.Unlock()
	if closing {
		return ErrClosed
	}
	// The history is sampled while the admin port serves.
	defer s.op.History.Start()()
	// http.Server handles a Serve racing with its Shutdown itself.
	if err := s.admin.Serve(operator.Listener(ln, s.cfg.Admin, s.log, s.reg)); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// historySeries are the edge's figures kept for the dashboard's charts
// (docs/CONTRACT.md, "Metrics").
var historySeries = []operator.SeriesSpec{
	{Name: "sessions", Metric: "ringlb_edge_sessions_active", Kind: operator.Gauge},
	{Name: "connections", Metric: "ringlb_edge_connections_active", Kind: operator.Gauge},
	{Name: "users", Metric: "ringlb_edge_users_online", Kind: operator.Gauge},
	{Name: "messages_per_second", Metric: "ringlb_edge_messages_total", Kind: operator.Rate},
	{Name: "slow_consumers_per_second", Metric: "ringlb_edge_slow_consumers_total", Kind: operator.Rate},
	{Name: "lag_p50_seconds", Metric: "ringlb_edge_lag_seconds", Kind: operator.Quantile, Quantile: 0.5},
	{Name: "lag_p99_seconds", Metric: "ringlb_edge_lag_seconds", Kind: operator.Quantile, Quantile: 0.99},
}

// Operator is the admin plane of this node: cmd/ringlb gives it the config
// file (operator.Node.UseConfigFile) behind /api/config.
func (s *Server) Operator() *operator.Node { return s.op }

func (s *Server) newAdminServer() *http.Server {
	// An edge restarted after a drain serves again: a drain is how every
	// edge stops (SIGTERM drains too), so keeping it would leave each
	// restarted edge out of the ring; the audit log keeps who drained it.
	s.op = operator.New(operator.Config{Node: s.name, Role: "edge", Admin: s.cfg.Admin, Registry: s.reg, Series: historySeries, Logger: s.log})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if s.draining.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("draining\n"))
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	access := operator.Access{
		Token:        func() []byte { return *s.adminToken.Load() },
		MetricsToken: func() []byte { return *s.metricsToken.Load() },
		Keyring:      func() *health.Keyring { return s.keyring.Load() },
		Self:         s.name,
		Node:         s.op,
	}
	s.op.Mount(mux, access, true)
	mux.Handle("GET /metrics", access.Metrics(promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{})))
	mux.Handle("POST /api/drain", access.Write(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		operator.Describe(r.Context(), "drain", s.name)
		s.log.Info("drain requested through the admin API", "by", operator.Caller(r.Context()), "remote", r.RemoteAddr)
		s.startDrain()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		_, _ = w.Write([]byte(`{"draining":true}` + "\n"))
	})))
	mux.Handle("GET /api/sessions", access.Read(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(s.hub.list())
	})))
	// users.go
	mux.Handle("GET /api/users/sketch", access.Read(http.HandlerFunc(s.serveUsersSketch)))
	s.handleRevocations(mux, access) // revoke.go: POST /api/tokens/revoke, GET /api/tokens/revoked
	return operator.NewServer(mux, s.cfg.Admin, s.log)
}
