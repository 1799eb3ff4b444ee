package gslb

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health"
	"github.com/ringlb/ringlb/health/operator"
)

type adminServer struct {
	mu  sync.Mutex
	srv *http.Server
}

// shutdown stops the admin port, waiting (bounded by ctx) for its requests
// in flight, then cutting what is left: a request still being read (a head
// or a body trickled in) would otherwise run on, and a change it makes land
// after the process handed its state over. Once: a later call returns at
// once.
func (a *adminServer) shutdown(ctx context.Context) error {
	a.mu.Lock()
	srv := a.srv
	a.srv = nil
	a.mu.Unlock()
	if srv == nil {
		return nil
	}
	if err := srv.Shutdown(ctx); err != nil {
		_ = srv.Close()
		if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
			return err
		}
	}
	return nil
}

// StopAdmin stops the admin port ahead of Shutdown, its requests in flight
// bounded by ctx and then cut: a hand-off gives them the short grace of the
// TCP queries, not the whole stop's bound (the new process serves the same
// port, and their clients retry there).
func (s *Server) StopAdmin(ctx context.Context) error { return s.admin.shutdown(ctx) }

// ServeAdmin serves the admin API on ln until Shutdown.
//
//	GET  /healthz                                  200 ok
//	GET  /metrics                                  Prometheus text
//	GET  /api/pools                                every managed name, region and member: state and why
//	POST /api/pools/{name}/{region}/{member}/mode  body or ?mode=always|obey|remove|no ("" clears the override)
//	POST /api/pools/{name}/{region}/recover        end a failover latched by auto_recover: false
//	GET  /api/monitors                             this node's own probe results (what peers vote with) and the edges' loads it sees
//	POST /api/querylog?on=true|false               switch the query log (until the next reload)
//	GET  /api/history?minutes=N                    this node's figures over the last minutes (operator.History)
//	GET  /api/audit                                this node's audit records, newest first
//	GET  /login, POST /login, POST /logout, GET /api/whoami  (operator.Node.Mount)
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
		Token:        func() []byte { return s.state.Load().adminToken },
		MetricsToken: func() []byte { return s.state.Load().metricsToken },
		Keyring:      func() *health.Keyring { return s.keyring.Load() },
		Self:         s.name,
		Node:         s.op,
	}
	s.op.Mount(mux, access, true)
	mux.Handle("GET /metrics", access.Metrics(promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{})))
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
		operator.Describe(r.Context(), "serve_mode", r.PathValue("name")+"/"+r.PathValue("region")+"/"+r.PathValue("member")+" "+modeText(mode))
		s.operating.Lock()
		err := s.state.Load().pools.setOverride(dns.Fqdn(strings.ToLower(r.PathValue("name"))), r.PathValue("region"), r.PathValue("member"), mode)
		if err == nil {
			s.saveState()
		}
		s.operating.Unlock()
		if err != nil {
			operator.WriteJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
			return
		}
		s.logger.Info("serve mode override", "name", r.PathValue("name"), "region", r.PathValue("region"), "member", r.PathValue("member"), "mode", mode, "by", operator.Caller(r.Context()), "remote", r.RemoteAddr)
		operator.WriteJSON(w, http.StatusOK, map[string]string{"mode": mode})
	})))
	mux.Handle("POST /api/pools/{name}/{region}/recover", access.Write(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		operator.Describe(r.Context(), "recover", r.PathValue("name")+"/"+r.PathValue("region"))
		s.operating.Lock()
		err := s.state.Load().pools.recover(dns.Fqdn(strings.ToLower(r.PathValue("name"))), r.PathValue("region"))
		if err == nil {
			s.saveState()
		}
		s.operating.Unlock()
		if err != nil {
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
		operator.Describe(r.Context(), "query_log", r.URL.Query().Get("on"))
		on, err := strconv.ParseBool(r.URL.Query().Get("on"))
		if err != nil {
			operator.WriteJSON(w, http.StatusBadRequest, map[string]string{"error": "want ?on=true or ?on=false"})
			return
		}
		s.queryLog.Store(on)
		s.logger.Info("query log switched", "on", on)
		operator.WriteJSON(w, http.StatusOK, map[string]bool{"query_log": on})
	})))
	admin := s.state.Load().cfg.Admin
	srv := operator.NewServer(mux, admin, s.logger)
	s.admin.mu.Lock()
	s.admin.srv = srv
	s.admin.mu.Unlock()
	// The history is sampled while the admin port serves.
	defer s.op.History.Start()()
	if err := srv.Serve(operator.Listener(ln, admin, s.logger, s.reg)); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Operator is the admin plane of this node: cmd/ringlb gives it the config
// file (operator.Node.UseConfigFile) behind /api/config.
func (s *Server) Operator() *operator.Node { return s.op }

// historySeries are the gslb's figures kept for the dashboard's charts
// (docs/CONTRACT.md, "Metrics"): queries and answers (NOERROR) per second,
// each pool's members up, and a failover as an event.
var historySeries = []operator.SeriesSpec{
	{Name: "queries_per_second", Metric: "ringlb_gslb_queries_total", Kind: operator.Rate},
	{Name: "answers_per_second", Metric: "ringlb_gslb_queries_total", Kind: operator.Rate, Where: map[string]string{"rcode": "NOERROR"}},
	{Name: "members_up", Metric: "ringlb_gslb_member_up", Kind: operator.Gauge, By: []string{"name", "region"}},
	{Name: "steered_share", Metric: "ringlb_gslb_steered_share", Kind: operator.Gauge, By: []string{"name", "region"}},
	{Name: "failover", Metric: "ringlb_gslb_failovers_total", Kind: operator.Increase, By: []string{"name", "region"}, Event: "failover"},
}

// poolsConcern is the state file of the serve-mode overrides and failover
// latches.
const poolsConcern = "gslb-pools"

type poolsState struct {
	Overrides []savedOverride `json:"overrides"`
	Latches   []savedLatch    `json:"latches"`
}

// handOffState is what a gslb gives the process replacing it (an upgrade),
// taken as it stops answering: what an operator set — serve-mode
// overrides, failover latches, the query log's switch — and the zones'
// serial offset. Without cluster.state_dir nothing else carried them: an
// upgrade put back every member an operator had taken out, unlatched every
// failover held with auto_recover: false, and started the serials from the
// zone files' again, so secondaries kept their copy.
type handOffState struct {
	Overrides []savedOverride `json:"overrides"`
	Latches   []savedLatch    `json:"latches"`
	Serial    uint32          `json:"serial"`
	// Serials are the zones' serials served (state.served): the new
	// process goes past them with a zone file rolled back (offsetPast).
	Serials  map[string]uint32 `json:"serials,omitempty"`
	QueryLog bool              `json:"query_log"`
}

// HandOffState is this server's state for the process replacing it; nil
// if it cannot be encoded (never).
func (s *Server) HandOffState() []byte {
	s.operating.Lock()
	defer s.operating.Unlock()
	st := s.state.Load()
	overrides, latches := st.pools.saved()
	p, err := json.Marshal(handOffState{Overrides: overrides, Latches: latches, Serial: st.serial.Load(), Serials: st.served(), QueryLog: s.queryLog.Load()})
	if err != nil {
		return nil
	}
	return p
}

// TakeHandOffState applies the state of the process this one replaced
// (HandOffState): its overrides and latches replace this one's (restored
// from cluster.state_dir, or none), and the serials go on from one past
// its offset, as after a restart (restoreSerial). Saved, with a state
// directory.
func (s *Server) TakeHandOffState(p []byte) error {
	var in handOffState
	if err := json.Unmarshal(p, &in); err != nil {
		return fmt.Errorf("gslb hand-off state: %w", err)
	}
	s.operating.Lock()
	st := s.state.Load()
	if next := st.offsetPast(in.Serial+1, in.Serials, true); int32(next-st.serial.Load()) > 0 {
		st.serial.Store(next)
	}
	skipped := st.pools.replace(in.Overrides, in.Latches)
	s.operating.Unlock()
	s.queryLog.Store(in.QueryLog)
	s.saveState()
	s.saveSerial()
	s.kickNotify()
	s.logger.Info("operator state taken over from the process this one replaced", "overrides", len(in.Overrides), "latches", len(in.Latches), "query_log", in.QueryLog, "serial_offset", st.serial.Load())
	if len(skipped) > 0 {
		s.logger.Warn("the replaced process's overrides or latches name pools no longer configured: dropped", "which", skipped)
	}
	return nil
}

// TakeHandOffEnd applies the state the process this one replaced ended
// with (HandOffState, as it stopped answering) over this one's, key by key:
// an override, a latch or the query log's switch that process changed
// since start (the state it started this one with, StartState) is taken,
// unless this process changed it too — both served the admin port
// meanwhile, and the one serving on is where every later change goes.
// Taken whole (TakeHandOffState), a removal made here during the upgrade
// came back as soon as the old process had changed anything else. Without
// a start state (an earlier release), end is taken whole.
func (s *Server) TakeHandOffEnd(start, end []byte) error {
	if len(start) == 0 {
		return s.TakeHandOffState(end)
	}
	var base, in handOffState
	if err := json.Unmarshal(start, &base); err != nil {
		return fmt.Errorf("gslb hand-off start state: %w", err)
	}
	if err := json.Unmarshal(end, &in); err != nil {
		return fmt.Errorf("gslb hand-off state: %w", err)
	}
	s.operating.Lock()
	st := s.state.Load()
	if next := st.offsetPast(in.Serial+1, in.Serials, true); int32(next-st.serial.Load()) > 0 {
		st.serial.Store(next)
	}
	overrides, latches := st.pools.saved()
	overrides = mergeChanged(base.Overrides, in.Overrides, overrides, func(o savedOverride) string { return o.Name + "\x00" + o.Region + "\x00" + o.Member })
	latches = mergeChanged(base.Latches, in.Latches, latches, func(l savedLatch) string { return l.Name + "\x00" + l.Region + "\x00" + l.Family })
	skipped := st.pools.replace(overrides, latches)
	s.operating.Unlock()
	if in.QueryLog != base.QueryLog {
		s.queryLog.CompareAndSwap(base.QueryLog, in.QueryLog)
	}
	s.saveState()
	s.saveSerial()
	s.kickNotify()
	s.logger.Info("operator state the replaced process ended with merged", "overrides", len(overrides), "latches", len(latches), "query_log", s.queryLog.Load(), "serial_offset", st.serial.Load())
	if len(skipped) > 0 {
		s.logger.Warn("the replaced process's overrides or latches name pools no longer configured: dropped", "which", skipped)
	}
	return nil
}

// mergeChanged is here with every key whose value changed from base to
// end taken as end has it (present or not), unless here changed it from
// base too: a three-way merge, base the common ancestor.
func mergeChanged[T comparable](base, end, here []T, key func(T) string) []T {
	index := func(list []T) map[string]T {
		m := make(map[string]T, len(list))
		for _, v := range list {
			m[key(v)] = v
		}
		return m
	}
	b, e, h := index(base), index(end), index(here)
	keys := make(map[string]bool, len(b)+len(e))
	for k := range b {
		keys[k] = true
	}
	for k := range e {
		keys[k] = true
	}
	for k := range keys {
		bv, inBase := b[k]
		ev, inEnd := e[k]
		hv, inHere := h[k]
		if inBase == inEnd && bv == ev {
			continue // the old process left it
		}
		if inHere != inBase || hv != bv {
			continue // changed here too: this process's stands
		}
		if inEnd {
			h[k] = ev
		} else {
			delete(h, k)
		}
	}
	out := make([]T, 0, len(h))
	for _, v := range h {
		out = append(out, v)
	}
	return out
}

// serialConcern is the state file of the serial's offset (serialState).
const serialConcern = "gslb-serial"

// serialState is what the server adds to its zones' serials (state.serial).
type serialState struct {
	Offset uint32 `json:"offset"`
	// Serials are the zones' serials served (state.served): a start goes
	// past them with a zone file rolled back meanwhile (offsetPast).
	Serials map[string]uint32 `json:"serials,omitempty"`
}

// useOperator makes the admin plane and restores what an operator set
// before the last stop: a gslb restarted while a member was taken out
// (serve mode remove) keeps it out, and a failover latched with
// auto_recover: false stays latched until someone recovers it. And the
// zones' serials go on from one past where they were.
func (s *Server) useOperator(cfg configs.GSLB) {
	s.op = operator.New(operator.Config{Node: s.name, Role: "gslb", Admin: cfg.Admin, Registry: s.reg, Series: historySeries, Logger: s.logger})
	s.restoreSerial()
	var st poolsState
	switch err := s.op.Store.Load(poolsConcern, &st); {
	case errors.Is(err, operator.ErrNoState):
		return
	case err != nil:
		s.logger.Error("operator state not restored", "err", err)
		return
	}
	skipped := s.state.Load().pools.restore(st.Overrides, st.Latches)
	if len(st.Overrides)+len(st.Latches) > 0 {
		s.logger.Warn("operator state restored", "overrides", len(st.Overrides), "latches", len(st.Latches))
	}
	if len(skipped) > 0 {
		s.logger.Warn("saved overrides or latches name pools no longer configured: dropped", "which", skipped)
	}
}

// saveState writes the overrides and latches; a failure is logged (the
// change stands, in memory, and the Store writes it again).
func (s *Server) saveState() {
	if s.op == nil { // New's first build: nothing changed yet
		return
	}
	s.saving.Lock()
	defer s.saving.Unlock()
	overrides, latches := s.state.Load().pools.saved()
	if err := s.op.Store.Save(poolsConcern, poolsState{overrides, latches}); err != nil {
		s.logger.Error("operator state not saved yet: a restart before it is written would forget the change", "err", err)
	}
}

// restoreSerial starts the serials one past the offset saved last: a
// secondary transfers only a serial newer than its copy's (RFC 1982), and
// starting the offset at 0 went back to the zone files' serials, so the
// secondaries kept the copy of before the restart — its managed answers,
// a signed zone's signatures until they expired — until as many changes
// had passed again (TestRestartKeepsTheSerialGoing). One past it: what this
// process serves may differ from what the last one served last — and past
// each zone's serial served last, whose file may have been rolled back
// meanwhile (offsetPast).
func (s *Server) restoreSerial() {
	var saved serialState
	switch err := s.op.Store.Load(serialConcern, &saved); {
	case errors.Is(err, operator.ErrNoState):
		s.saveSerial() // the serials served from the first start on
		return
	case err != nil:
		s.logger.Error("zone serial offset not restored: secondaries may keep their copy until the serial passes it", "err", err)
		return
	}
	st := s.state.Load()
	st.serial.Store(st.offsetPast(saved.Offset+1, saved.Serials, true))
	s.saveSerial()
}

// saveSerial writes the serials' offset now, after a change of it; a
// failure is logged (the serial stands, in memory, and the Store writes it
// again).
func (s *Server) saveSerial() {
	if s.op == nil { // New's first build: nothing changed yet
		return
	}
	s.saving.Lock()
	defer s.saving.Unlock()
	// Read under the lock: the last save writes the latest offset.
	st := s.state.Load()
	if err := s.op.Store.Save(serialConcern, serialState{Offset: st.serial.Load(), Serials: st.served()}); err != nil {
		s.logger.Error("zone serial offset not saved yet: after a restart before it is written secondaries would keep their copy", "err", err)
	}
}

// modeText is a serve mode as audit records name it ("" clears an override).
func modeText(mode string) string {
	if mode == "" {
		return "config"
	}
	return mode
}
