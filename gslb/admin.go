package gslb

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ringlb/ringlb/health"
	"github.com/ringlb/ringlb/health/operator"
)

type adminServer struct {
	mu  sync.Mutex
	srv *http.Server
}

func (a *adminServer) shutdown(ctx context.Context) error {
	a.mu.Lock()
	srv := a.srv
	a.mu.Unlock()
	if srv == nil {
		return nil
	}
	if err := srv.Shutdown(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return nil
}

// ServeAdmin serves the admin API on ln until Shutdown.
//
//	GET  /healthz                                  200 ok
//	GET  /metrics                                  Prometheus text
//	GET  /api/pools                                every managed name, region and member: state and why
//	POST /api/pools/{name}/{region}/{member}/mode  body or ?mode=always|obey|remove|no ("" clears the override)
//	POST /api/pools/{name}/{region}/recover        end a failover latched by auto_recover: false
//	GET  /api/monitors                             this node's own probe results (what peers vote with) and the edges' loads it sees
//	POST /api/querylog?on=true|false               switch the query log (until the next reload)
//
// All but /healthz follow operator.Access: with gslb.admin.token_file set,
// "Authorization: Bearer <token>" (or, for reads, a peer's request signed
// with the cluster's key: other gslb nodes read /api/monitors so); without,
// a request addressed to a loopback IP. POSTs also need the CSRF proof (the
// token, or X-Ringlb-Admin: 1, and a same-origin Origin).
func (s *Server) ServeAdmin(ln net.Listener) error {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	access := operator.Access{
		Token:   func() []byte { return s.state.Load().adminToken },
		Keyring: func() *health.Keyring { return s.keyring.Load() },
	}
	mux.Handle("GET /metrics", access.Read(promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{})))
	mux.Handle("GET /api/pools", access.Read(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		st := s.state.Load()
		operator.WriteJSON(w, http.StatusOK, map[string]any{"node": s.name, "serial_offset": st.serial.Load(), "query_log": s.queryLog.Load(), "names": st.pools.status()})
	})))
	mux.Handle("POST /api/pools/{name}/{region}/{member}/mode", access.Write(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mode := r.URL.Query().Get("mode")
		if mode == "" {
			var body struct{ Mode string }
			json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&body)
			mode = body.Mode
		}
		err := s.state.Load().pools.setOverride(dns.Fqdn(strings.ToLower(r.PathValue("name"))), r.PathValue("region"), r.PathValue("member"), mode)
		if err != nil {
			operator.WriteJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
			return
		}
		s.logger.Info("serve mode override", "name", r.PathValue("name"), "region", r.PathValue("region"), "member", r.PathValue("member"), "mode", mode, "by", operator.Caller(r.Context()), "remote", r.RemoteAddr)
		operator.WriteJSON(w, http.StatusOK, map[string]string{"mode": mode})
	})))
	mux.Handle("POST /api/pools/{name}/{region}/recover", access.Write(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := s.state.Load().pools.recover(dns.Fqdn(strings.ToLower(r.PathValue("name"))), r.PathValue("region")); err != nil {
			operator.WriteJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
			return
		}
		s.logger.Info("manual recover", "name", r.PathValue("name"), "region", r.PathValue("region"), "by", operator.Caller(r.Context()), "remote", r.RemoteAddr)
		operator.WriteJSON(w, http.StatusOK, map[string]bool{"recovered": true})
	})))
	mux.Handle("GET /api/monitors", access.Read(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		out := map[string]any{"node": s.name, "members": s.state.Load().pools.localMonitors()}
		if l := s.localLoads.Load(); l != nil {
			out["loads"] = *l // what this node's gossip says, for peers that do not see those edges
		}
		operator.WriteJSON(w, http.StatusOK, out)
	})))
	mux.Handle("POST /api/querylog", access.Write(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		on, err := strconv.ParseBool(r.URL.Query().Get("on"))
		if err != nil {
			operator.WriteJSON(w, http.StatusBadRequest, map[string]string{"error": "want ?on=true or ?on=false"})
			return
		}
		s.queryLog.Store(on)
		s.logger.Info("query log switched", "on", on)
		operator.WriteJSON(w, http.StatusOK, map[string]bool{"query_log": on})
	})))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 60 * time.Second}
	s.admin.mu.Lock()
	s.admin.srv = srv
	s.admin.mu.Unlock()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
