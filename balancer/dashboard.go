package balancer

import (
	"bytes"
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health"
	op "github.com/ringlb/ringlb/health/operator"
)

// dashboardFiles is the operator dashboard: plain HTML, CSS and JavaScript,
// embedded so that the binary is the whole deployment (no build step, no
// CDN, works on an air-gapped admin network).
//
//go:embed dashboard
var dashboardFiles embed.FS

// Bounds of the fan-out behind GET /api/cluster and the gslb proxy.
const (
	// peerFetchTimeout bounds one request to an edge's or a gslb node's
	// admin API: a refresh waits at most this long for a slow node, which
	// is then shown with its error instead of holding up the page.
	peerFetchTimeout = 2 * time.Second
	// peerBodyLimit bounds what is read of a peer's answer.
	peerBodyLimit = 4 << 20
)

// handleDashboard registers the dashboard and the JSON it polls:
//
//	GET  /                                                 the page (no token: it holds no data)
//	GET  /dashboard/{file}                                 its script and style
//	GET  /api/cluster                                      ring, nodes with edge stats, recent changes, this balancer's counters, gslb pools
//	POST /api/gslb/pools/{name}/{region}/{member}/mode     sets a serve mode on every gslb node of the cluster
//	GET  /api/history?minutes=N[&cluster=1]                this balancer's history, or every node's
//	GET  /api/audit?limit=N[&cluster=1]                    this balancer's audit records, or the cluster's merged
//
// The balancer is the one admin endpoint an operator keeps open, so it
// gathers what the page shows from the other nodes' admin APIs, found
// through the addresses they gossip (health.Meta.Admin): edges' /metrics,
// gslb nodes' /api/pools and /metrics.
func (b *Balancer) handleDashboard(mux *http.ServeMux, access op.Access) {
	static, err := fs.Sub(dashboardFiles, "dashboard")
	if err != nil {
		panic("balancer: embedded dashboard: " + err.Error()) // the embed directive guarantees the directory
	}
	files := http.FileServerFS(static)
	mux.Handle("GET /{$}", dashboardHeaders(files))
	mux.Handle("GET /dashboard/", dashboardHeaders(http.StripPrefix("/dashboard", files)))
	mux.Handle("GET /api/cluster", access.Read(http.HandlerFunc(b.serveCluster)))
	mux.Handle("GET /api/history", access.Read(http.HandlerFunc(b.serveHistory)))
	mux.Handle("GET /api/audit", access.Read(http.HandlerFunc(b.serveAudit)))
	mux.Handle("POST /api/gslb/pools/{name}/{region}/{member}/mode", access.Write(http.HandlerFunc(b.serveGSLBMode)))
}

// dashboardHeaders sets what keeps the page from being abused: it carries
// buttons that drain edges and change DNS answers, so it may not be framed
// (clickjacking), and it runs only its own script (no inline code, so an
// injected node name cannot become a script).
func dashboardHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
		w.Header().Set("X-Frame-Options", "DENY")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Referrer-Policy", "no-referrer")
		w.Header().Set("Cache-Control", "no-cache")
		h.ServeHTTP(w, r)
	})
}

// clusterView is GET /api/cluster: everything the dashboard shows, read in
// one request per refresh.
type clusterView struct {
	Node     string           `json:"node"`
	At       time.Time        `json:"at"`
	Ring     ringView         `json:"ring"`
	Nodes    []clusterNode    `json:"nodes"`
	Recent   []eventView      `json:"recent"`
	Balancer balancerCounters `json:"balancer"`
	GSLB     []gslbView       `json:"gslb"`
	// Users are the users online in the cluster, each once (users.go).
	Users *clusterUsers `json:"users,omitempty"`
}

// clusterNode is a node of /api/nodes plus, for an edge with an admin
// address, what its metrics say.
type clusterNode struct {
	nodeView
	Stats *edgeStats `json:"stats,omitempty"`
}

// edgeStats are an edge's contract metrics (docs/CONTRACT.md, "Metrics"). Counters
// and the lag histogram are totals since the edge started: the page shows
// rates and recent lag from the difference between two refreshes.
type edgeStats struct {
	Sessions    float64 `json:"sessions"`
	Connections float64 `json:"connections"`
	Users       float64 `json:"users"`
	Messages    float64 `json:"messages_total"`
	Hosted      float64 `json:"sessions_hosted_total"`
	LagCount    float64 `json:"lag_count"`
	LagSum      float64 `json:"lag_sum_seconds"`
	// LagP99 is the upper bound of the histogram bucket holding the 99th
	// percentile, over the edge's whole life.
	LagP99 float64 `json:"lag_p99_seconds"`
	Error  string  `json:"error,omitempty"`
}

// balancerCounters are this balancer's own metrics.
type balancerCounters struct {
	Tunnels        float64            `json:"connections_active"`
	TunnelsPerEdge map[string]float64 `json:"connections_per_edge"`
	Requests       float64            `json:"requests_total"`
	BackendErrors  float64            `json:"backend_errors_total"`
	Rejected       float64            `json:"rejected_connections_total"`
	// SessionTable is the live-session table's size: keys kept on their
	// backend.
	SessionTable float64 `json:"session_table_entries"`
}

// gslbView is one gslb node: its pools as its GET /api/pools reports them
// (every member's state, serve mode, override, failover in effect).
type gslbView struct {
	Node    string          `json:"node"`
	Region  string          `json:"region,omitempty"`
	Admin   string          `json:"admin"`
	Names   json.RawMessage `json:"names,omitempty"`
	Queries float64         `json:"queries_total"`
	Error   string          `json:"error,omitempty"`
}

func (b *Balancer) serveCluster(w http.ResponseWriter, r *http.Request) {
	nodes, recent, _ := b.nodeViews()
	view := clusterView{Node: b.name, At: time.Now().UTC(), Ring: b.ringView(), Recent: recent, Balancer: b.counters(), GSLB: []gslbView{}}
	if view.Recent == nil {
		view.Recent = []eventView{}
	}
	view.Nodes = make([]clusterNode, len(nodes))
	for i, n := range nodes {
		view.Nodes[i].nodeView = n
	}
	sort.Slice(view.Nodes, func(i, j int) bool {
		a, c := view.Nodes[i], view.Nodes[j]
		if a.Role != c.Role {
			return roleOrder(a.Role) < roleOrder(c.Role)
		}
		return a.Name < c.Name
	})
	gslbs := b.gslbNodes()
	view.GSLB = make([]gslbView, len(gslbs))

	var wg sync.WaitGroup
	users := make([]edgeUsersAnswer, len(view.Nodes))
	for i := range view.Nodes {
		n := &view.Nodes[i]
		if n.Role == string(health.RoleEdge) && n.Admin != "" {
			wg.Go(func() { n.Stats = b.fetchEdgeStats(r.Context(), n.Name, n.Admin) })
			users[i].asked = true
			wg.Go(func() { users[i].sketch, users[i].anonymous, _ = b.fetchUsersSketch(r.Context(), n.Name, n.Admin) })
		}
	}
	for i, g := range gslbs {
		view.GSLB[i] = gslbView{Node: g.Name, Region: g.Meta.Region, Admin: g.Meta.Admin}
		wg.Go(func() { b.fetchGSLB(r.Context(), &view.GSLB[i]) })
	}
	wg.Wait()
	view.Users = mergeUsers(users)
	op.WriteJSON(w, http.StatusOK, view)
}

func roleOrder(role string) int {
	switch health.Role(role) {
	case health.RoleBalancer:
		return 0
	case health.RoleEdge:
		return 1
	case health.RoleGSLB:
		return 2
	}
	return 3
}

// gslbNodes are the gslb nodes of the gossip cluster that advertise an
// admin address, by name.
func (b *Balancer) gslbNodes() []health.Node {
	c := b.clusterOrNil()
	if c == nil {
		return nil
	}
	var out []health.Node
	for _, n := range c.Members() {
		if n.Meta.Role == health.RoleGSLB && n.Meta.Admin != "" {
			out = append(out, n)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// counters reads this balancer's own registry.
func (b *Balancer) counters() balancerCounters {
	c := balancerCounters{TunnelsPerEdge: map[string]float64{}}
	mfs, err := b.reg.Gather()
	if err != nil {
		b.log.Warn("dashboard: gather metrics", "err", err)
	}
	for _, mf := range mfs {
		switch mf.GetName() {
		case "ringlb_balancer_connections_active":
			for _, m := range mf.GetMetric() {
				c.Tunnels += m.GetGauge().GetValue()
				c.TunnelsPerEdge[labelValue(m, "edge")] += m.GetGauge().GetValue()
			}
		case "ringlb_balancer_requests_total":
			c.Requests = sumFamily(mf)
		case "ringlb_balancer_backend_errors_total":
			c.BackendErrors = sumFamily(mf)
		case "ringlb_balancer_rejected_connections_total":
			c.Rejected = sumFamily(mf)
		case "ringlb_balancer_session_table_entries":
			c.SessionTable = sumFamily(mf)
		}
	}
	return c
}

// fetchEdgeStats reads the edge node's metrics from its admin port.
func (b *Balancer) fetchEdgeStats(ctx context.Context, node, admin string) *edgeStats {
	st := &edgeStats{}
	mfs, err := b.fetchMetrics(ctx, node, admin)
	if err != nil {
		st.Error = err.Error()
		return st
	}
	st.Sessions = sumFamily(mfs["ringlb_edge_sessions_active"])
	st.Connections = sumFamily(mfs["ringlb_edge_connections_active"])
	st.Users = sumFamily(mfs["ringlb_edge_users_online"])
	st.Messages = sumFamily(mfs["ringlb_edge_messages_total"])
	st.Hosted = sumFamily(mfs["ringlb_edge_sessions_hosted_total"])
	st.LagCount, st.LagSum, st.LagP99 = histogramSummary(mfs["ringlb_edge_lag_seconds"], 0.99)
	return st
}

// fetchGSLB fills g from the node's /api/pools and /metrics, read as a peer
// (signed with the cluster's key), never with the operator's token.
func (b *Balancer) fetchGSLB(ctx context.Context, g *gslbView) {
	// Its names go into every /api/cluster answer as they come: taken only
	// as large as a node's view honestly is.
	code, body, err := b.callPeerLimit(ctx, http.MethodGet, g.Node, g.Admin+"/api/pools", nil, health.MaxPeerView)
	if err == nil && code != http.StatusOK {
		err = peerError(code, body)
	}
	if err != nil {
		g.Error = err.Error()
		return
	}
	var pools struct {
		Names json.RawMessage `json:"names"`
	}
	if err := json.Unmarshal(body, &pools); err != nil {
		g.Error = fmt.Sprintf("read %s/api/pools: %v", g.Admin, err)
		return
	}
	g.Names = pools.Names
	if mfs, err := b.fetchMetrics(ctx, g.Node, g.Admin); err == nil {
		g.Queries = sumFamily(mfs["ringlb_gslb_queries_total"])
	}
}

// serveGSLBMode: POST /api/gslb/pools/{name}/{region}/{member}/mode with
// ?mode= (or a JSON body {"mode"}) sets the serve mode override on every gslb
// node of the cluster, so that every name server of the domain answers the
// same. The answer lists each node's result; its status is the nodes'
// common status, or 502 when they differ.
func (b *Balancer) serveGSLBMode(w http.ResponseWriter, r *http.Request) {
	mode := r.URL.Query().Get("mode")
	if mode == "" && r.Body != nil {
		var body struct {
			Mode string `json:"mode"`
		}
		_ = json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&body)
		mode = body.Mode
	}
	op.Describe(r.Context(), "serve_mode", r.PathValue("name")+"/"+r.PathValue("region")+"/"+r.PathValue("member")+" "+modeText(mode))
	nodes := b.gslbNodes()
	if len(nodes) == 0 {
		op.WriteJSON(w, http.StatusNotFound, map[string]string{"error": "no gslb node with an admin address in this balancer's gossip cluster"})
		return
	}
	type result struct {
		Node   string          `json:"node"`
		Status int             `json:"status"`
		Answer json.RawMessage `json:"answer,omitempty"`
		Error  string          `json:"error,omitempty"`
	}
	path := "/api/pools/" + url.PathEscape(r.PathValue("name")) + "/" + url.PathEscape(r.PathValue("region")) + "/" +
		url.PathEscape(r.PathValue("member")) + "/mode?mode=" + url.QueryEscape(mode)
	results := make([]result, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Go(func() {
			res := result{Node: n.Name}
			code, body, err := b.callPeer(r.Context(), http.MethodPost, n.Name, n.Meta.Admin+path, r)
			switch {
			case err != nil:
				res.Status, res.Error = http.StatusBadGateway, err.Error()
			case json.Valid(body):
				res.Status, res.Answer = code, body
			default:
				res.Status, res.Error = code, strings.TrimSpace(string(body))
			}
			results[i] = res
		})
	}
	wg.Wait()
	status := results[0].Status
	for _, res := range results {
		if res.Status != status {
			status = http.StatusBadGateway
		}
	}
	b.log.Info("serve mode set through the dashboard API", "name", r.PathValue("name"), "region", r.PathValue("region"),
		"member", r.PathValue("member"), "mode", mode, "status", status, "by", op.Caller(r.Context()), "remote", r.RemoteAddr)
	op.WriteJSON(w, status, map[string]any{"mode": mode, "results": results})
}

// callPeer sends one request to the node named node's admin API (target, an address its
// metadata announced, which health has checked is within
// cluster.allowed_networks), bounded by peerFetchTimeout, and returns the
// status and body (≤ peerBodyLimit; callPeerLimit for a tighter bound).
//
// Every request is signed as this node with the cluster's key, and its
// answer is taken only signed by the node asked, for this request
// (health.Keyring.ReadAnswer), from a node announcing it signs answers:
// else someone on the path, no key needed, could show the operator a
// node's figures it never sent, or a drain done that the node never got,
// or refused that it made. The signature is a peer credential, which can
// read and change nothing. The operator's own credential never goes along
// with a read. A change (operator non-nil: the operator's request it
// carries out) forwards the operator's bearer token, so the node acted on
// checks the operator itself, and HeaderAdmin for its CSRF rule.
func (b *Balancer) callPeer(ctx context.Context, method, node, target string, operator *http.Request) (int, []byte, error) {
	return b.callPeerLimit(ctx, method, node, target, operator, peerBodyLimit)
}

// callPeerLimit is callPeer taking at most limit bytes of the answer.
func (b *Balancer) callPeerLimit(ctx context.Context, method, node, target string, operator *http.Request, limit int64) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, peerFetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, target, nil)
	if err != nil {
		return 0, nil, err
	}
	if operator != nil {
		if auth := operator.Header.Get("Authorization"); strings.HasPrefix(auth, "Bearer ") {
			req.Header.Set("Authorization", auth)
		} else if user := op.CallerUser(operator.Context()); user != "" {
			// A logged-in operator has no token to forward: this
			// balancer's own (the cluster's admin ports share one token
			// file) carries the change, and the node acted on records
			// whom it was for.
			if token := b.current.Load().adminToken; len(token) > 0 {
				req.Header.Set("Authorization", "Bearer "+string(token))
			}
			req.Header.Set(configs.HeaderOnBehalf, op.CallerUserPrefix+user+" via "+b.name)
		}
		req.Header.Set(configs.HeaderAdmin, "1")
	}
	b.keyring().SignRequest(req.Header, b.name, node, method, req.URL.RequestURI(), nil)
	resp, err := b.peerClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := b.keyring().ReadAnswer(resp, b.name, node, health.PeerSigningAnswer, limit)
	switch {
	case err != nil && operator != nil && errors.Is(err, health.ErrAnswerUnsigned):
		// Neither done nor refused: the node's audit log says which.
		return 0, nil, fmt.Errorf("%s %s: %w; whether %s made the change is not known (its audit log says)", method, target, err, node)
	case err != nil:
		return 0, nil, fmt.Errorf("read %s %s: %w", method, target, err)
	}
	return resp.StatusCode, body, nil
}

// newPeerClient makes the client that calls other nodes' admin APIs: no
// proxy from the environment (an admin request carries a credential), and no
// redirects followed (a peer must not send it on to another host).
func newPeerClient() *http.Client {
	return &http.Client{
		Transport:     &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 2, IdleConnTimeout: 30 * time.Second},
		CheckRedirect: configs.NoRedirect,
	}
}

// peerError words a peer's non-2xx answer: its JSON "error" when it sent one.
func peerError(code int, body []byte) error {
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil && e.Error != "" {
		return fmt.Errorf("%d %s: %s", code, http.StatusText(code), e.Error)
	}
	return fmt.Errorf("%d %s", code, http.StatusText(code))
}

// fetchMetrics reads node's Prometheus text from admin/metrics.
func (b *Balancer) fetchMetrics(ctx context.Context, node, admin string) (map[string]*dto.MetricFamily, error) {
	code, body, err := b.callPeer(ctx, http.MethodGet, node, admin+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, peerError(code, body)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("parse %s/metrics: %w", admin, err)
	}
	return mfs, nil
}

// sumFamily adds up a counter, gauge or untyped family over its label sets.
func sumFamily(mf *dto.MetricFamily) float64 {
	var sum float64
	for _, m := range mf.GetMetric() {
		switch {
		case m.Counter != nil:
			sum += m.GetCounter().GetValue()
		case m.Gauge != nil:
			sum += m.GetGauge().GetValue()
		case m.Untyped != nil:
			sum += m.GetUntyped().GetValue()
		}
	}
	return sum
}

// histogramSummary merges a histogram family's label sets and returns its
// count, sum and the upper bound of the bucket holding quantile q (+Inf
// reported as the largest finite bound).
func histogramSummary(mf *dto.MetricFamily, q float64) (count, sum, quantile float64) {
	bounds := map[float64]float64{}
	for _, m := range mf.GetMetric() {
		h := m.GetHistogram()
		if h == nil {
			continue
		}
		count += float64(h.GetSampleCount())
		sum += h.GetSampleSum()
		for _, bk := range h.GetBucket() {
			bounds[bk.GetUpperBound()] += float64(bk.GetCumulativeCount())
		}
	}
	if count == 0 {
		return 0, 0, 0
	}
	upper := make([]float64, 0, len(bounds))
	for u := range bounds {
		upper = append(upper, u)
	}
	sort.Float64s(upper)
	for _, u := range upper {
		if bounds[u] >= q*count && !math.IsInf(u, 1) {
			return count, sum, u
		}
	}
	for i := len(upper) - 1; i >= 0; i-- {
		if !math.IsInf(upper[i], 1) {
			return count, sum, upper[i]
		}
	}
	return count, sum, 0
}

func labelValue(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// peerAdmins are the other nodes of the gossip cluster that announce an
// admin address, by name.
func (b *Balancer) peerAdmins() []health.Node {
	c := b.clusterOrNil()
	if c == nil {
		return nil
	}
	var out []health.Node
	for _, n := range c.Members() {
		if n.Name != b.name && n.Meta.Admin != "" {
			out = append(out, n)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// peerReadError is a node the cluster-wide views could not read.
type peerReadError struct {
	Node  string `json:"node"`
	Error string `json:"error"`
}

// peerAnswer is a node's JSON answer to a read.
type peerAnswer struct {
	node string
	body json.RawMessage
}

// readPeers GETs path from every other node's admin API (signed, in
// parallel) and returns the answers that are JSON, by node, and the errors.
func (b *Balancer) readPeers(ctx context.Context, path string) ([]peerAnswer, []peerReadError) {
	peers := b.peerAdmins()
	bodies := make([]json.RawMessage, len(peers))
	errs := make([]error, len(peers))
	var wg sync.WaitGroup
	for i, n := range peers {
		wg.Go(func() {
			code, body, err := b.callPeer(ctx, http.MethodGet, n.Name, strings.TrimSuffix(n.Meta.Admin, "/")+path, nil)
			switch {
			case err != nil:
				errs[i] = err
			case code != http.StatusOK:
				errs[i] = peerError(code, body)
			case !json.Valid(body):
				errs[i] = fmt.Errorf("%s%s: not JSON", n.Meta.Admin, path)
			default:
				bodies[i] = body
			}
		})
	}
	wg.Wait()
	var ok []peerAnswer
	failed := []peerReadError{}
	for i, n := range peers {
		if errs[i] != nil {
			failed = append(failed, peerReadError{n.Name, errs[i].Error()})
		} else {
			ok = append(ok, peerAnswer{n.Name, bodies[i]})
		}
	}
	return ok, failed
}

// serveHistory: GET /api/history?minutes=N is this balancer's history
// (operator.HistoryView); with cluster=1 it is every node's of the gossip
// cluster, this one first, each read as a peer:
// {"node","nodes":[HistoryView...],"errors":[{node,error}]}.
func (b *Balancer) serveHistory(w http.ResponseWriter, r *http.Request) {
	minutes := op.Minutes(r)
	own := b.op.History.View(minutes)
	if r.URL.Query().Get("cluster") == "" {
		op.WriteJSON(w, http.StatusOK, own)
		return
	}
	peers, failed := b.readPeers(r.Context(), fmt.Sprintf("/api/history?minutes=%d", minutes))
	nodes := []op.HistoryView{own}
	for _, p := range peers {
		theirs, err := op.PeerHistory(p.node, p.body)
		if err != nil {
			failed = append(failed, peerReadError{p.node, err.Error()})
			continue
		}
		nodes = append(nodes, theirs)
	}
	op.WriteJSON(w, http.StatusOK, map[string]any{"node": b.name, "nodes": nodes, "events": mergeEvents(eventsShown, nodes), "errors": failed})
}

// eventsShown is how many events the dashboard lists (the cluster
// history's "events").
const eventsShown = 40

// mergeEvents is the cluster's event list: every node's events, newest
// first, the same change seen by two nodes (two balancers see one
// membership change) once, each node keeping its newest up to an equal
// share of limit (mergeNewest): one node's events, dated ahead, cannot
// hide the others' drains and failovers.
func mergeEvents(limit int, nodes []op.HistoryView) []op.Event {
	seen := map[string]bool{}
	lists := make([][]op.Event, 0, len(nodes))
	for _, n := range nodes {
		events := slices.Clone(n.Events)
		slices.SortStableFunc(events, func(a, b op.Event) int { return b.At.Compare(a.At) })
		kept := events[:0]
		for _, e := range events {
			key := e.Kind + "|" + e.Text + "|" + strconv.FormatInt(e.At.Round(5*time.Second).Unix(), 10)
			if !seen[key] {
				seen[key] = true
				kept = append(kept, e)
			}
		}
		lists = append(lists, kept)
	}
	return mergeNewest(limit, lists, func(e op.Event) time.Time { return e.At })
}

// serveAudit: GET /api/audit?limit=N is this balancer's audit records
// (newest first); with cluster=1 every node's, merged by time:
// {"node","records":[...],"errors":[{node,error}]}.
func (b *Balancer) serveAudit(w http.ResponseWriter, r *http.Request) {
	view := b.op.AuditView(r)
	if r.URL.Query().Get("cluster") == "" {
		op.WriteJSON(w, http.StatusOK, view)
		return
	}
	limit := op.AuditLimit(r)
	peers, failed := b.readPeers(r.Context(), fmt.Sprintf("/api/audit?limit=%d", limit))
	read := time.Now().UTC() // every answer was given before this moment
	nodes := [][]op.Record{view.Records}
	for _, p := range peers {
		theirs, err := op.PeerRecords(p.node, p.body, read)
		if err != nil {
			failed = append(failed, peerReadError{p.node, err.Error()})
			continue
		}
		nodes = append(nodes, theirs)
	}
	op.WriteJSON(w, http.StatusOK, map[string]any{"node": b.name, "records": mergeNewest(limit, nodes, func(r op.Record) time.Time { return r.At }), "errors": failed})
}

// mergeNewest merges the nodes' records or events (each node's newest
// first) into at most limit, newest first, in which each node keeps its
// newest up to an equal share of limit, the rest going to the newest of
// all: a node with many (a busy one, or one that lies) cannot push
// another's out of the view, and a drain made on a quiet node is still
// shown.
func mergeNewest[T any](limit int, nodes [][]T, at func(T) time.Time) []T {
	if len(nodes) == 0 {
		return []T{}
	}
	share := limit / len(nodes)
	merged := make([]T, 0, limit)
	var rest []T
	for _, items := range nodes {
		items = items[:min(len(items), limit)]
		n := min(len(items), share)
		merged = append(merged, items[:n]...)
		rest = append(rest, items[n:]...)
	}
	newestFirst := func(a, b T) int { return at(b).Compare(at(a)) }
	slices.SortStableFunc(rest, newestFirst)
	merged = append(merged, rest[:min(len(rest), limit-len(merged))]...)
	slices.SortStableFunc(merged, newestFirst)
	return merged
}

// modeText is a serve mode as audit records name it ("" clears an override).
func modeText(mode string) string {
	if mode == "" {
		return "config"
	}
	return mode
}
