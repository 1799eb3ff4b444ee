package balancer

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health"
	"github.com/ringlb/ringlb/health/healthtest"
	"github.com/ringlb/ringlb/health/operator"
)

// fakeEdgeMetrics is what an edge's admin /metrics says (the contract names).
const fakeEdgeMetrics = `# TYPE ringlb_edge_sessions_active gauge
ringlb_edge_sessions_active 3
# TYPE ringlb_edge_connections_active gauge
ringlb_edge_connections_active 7
# TYPE ringlb_edge_users_online gauge
ringlb_edge_users_online 6
# TYPE ringlb_edge_messages_total counter
ringlb_edge_messages_total 42
# TYPE ringlb_edge_lag_seconds histogram
ringlb_edge_lag_seconds_bucket{le="0.001"} 90
ringlb_edge_lag_seconds_bucket{le="0.01"} 99
ringlb_edge_lag_seconds_bucket{le="0.1"} 100
ringlb_edge_lag_seconds_bucket{le="+Inf"} 100
ringlb_edge_lag_seconds_sum 0.2
ringlb_edge_lag_seconds_count 100
`

// fakeGSLB is a gslb admin API: /api/pools, /metrics and the mode override,
// recording the overrides and the Authorization header it was sent; it
// answers as a node answers (peerReads, peerChanges).
type fakeGSLB struct {
	srv   *httptest.Server
	mu    sync.Mutex
	modes []string
	auth  []string
}

// startFakeGSLB serves a gslb node's admin API (its reads answered to
// peers as a node answers them, signed with kr: peerReads).
func startFakeGSLB(t *testing.T, kr *health.Keyring) *fakeGSLB {
	f := &fakeGSLB{}
	mux := http.NewServeMux()
	mux.Handle("GET /api/pools", peerReads("gslb-t", kr, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.record("", r)
		w.Write([]byte(`{"node":"gslb-t","names":[{"name":"ide.ringlb.test.","regions":[{"region":"west","failover_to":"east","members":[{"member":"bal-2","serving":false}]}]}]}`))
	})))
	mux.Handle("GET /metrics", peerReads("gslb-t", kr, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("# TYPE ringlb_gslb_queries_total counter\nringlb_gslb_queries_total{qtype=\"A\",rcode=\"NOERROR\"} 5\nringlb_gslb_queries_total{qtype=\"AAAA\",rcode=\"NOERROR\"} 2\n"))
	})))
	mux.Handle("POST /api/pools/{name}/{region}/{member}/mode", peerChanges("gslb-t", kr, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mode := r.URL.Query().Get("mode")
		f.record(r.PathValue("name")+"/"+r.PathValue("region")+"/"+r.PathValue("member")+"="+mode, r)
		if mode == "bogus" {
			w.WriteHeader(http.StatusBadRequest)
			w.Write([]byte(`{"error":"serve mode must be always, obey, remove or no"}`))
			return
		}
		w.Write([]byte(`{"mode":"` + mode + `"}`))
	})))
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	return f
}

// peerReads is h behind the admin rule every node's reads follow
// (operator.Access, as the node self, with the cluster's key kr): a read a
// peer signed for it is answered signed, as a node of this release answers.
func peerReads(self string, kr *health.Keyring, h http.Handler) http.Handler {
	return operator.Access{Token: func() []byte { return []byte(testToken) }, Keyring: func() *health.Keyring { return kr }, Self: self}.Read(h)
}

// peerChanges is h behind the admin rule every node's changes follow: the
// operator's token lets one through, and one a peer signed for the node
// self is answered signed, as a node of this release answers.
func peerChanges(self string, kr *health.Keyring, h http.Handler) http.Handler {
	return operator.Access{Token: func() []byte { return []byte(testToken) }, Keyring: func() *health.Keyring { return kr }, Self: self}.Write(h)
}

func (f *fakeGSLB) record(mode string, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if mode != "" {
		f.modes = append(f.modes, mode)
	}
	f.auth = append(f.auth, r.Method+" "+r.Header.Get("Authorization")+" "+r.Header.Get(configs.HeaderAdmin))
}

// TestDashboardClusterView: GET /api/cluster gathers the ring, the gossip
// nodes with each edge's metrics (read from its admin port), this balancer's
// counters and every gslb node's pools; a serve mode set through the
// balancer reaches the gslb node; the page and its files are served with a
// CSP, without the token, while the data needs it.
func TestDashboardClusterView(t *testing.T) {
	h := tokenHarness(t)
	cl := healthtest.New(t)
	self := cl.Join("bal-test", health.Meta{Role: health.RoleBalancer, Region: "east", State: health.StateAlive})
	edgeAdmin := httptest.NewServer(peerReads("gossip-edge", self.Keyring(), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/metrics" {
			w.Write([]byte(fakeEdgeMetrics))
			return
		}
		http.NotFound(w, r)
	})))
	defer edgeAdmin.Close()
	gslb := startFakeGSLB(t, self.Keyring())

	cl.Join("gossip-edge", health.Meta{Role: health.RoleEdge, Region: "east", URL: "http://127.0.0.1:1", Admin: edgeAdmin.URL, Weight: 1, State: health.StateAlive})
	cl.Join("gslb-t", health.Meta{Role: health.RoleGSLB, Region: "east", Admin: gslb.srv.URL, State: health.StateAlive})
	healthtest.WaitMembers(t, self, "the edge and the gslb in gossip", func(ns []health.Node) bool { return len(ns) == 3 })
	h.bal.SetCluster(self)

	do := func(method, path, auth string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest(method, "http://"+h.admin+path, nil)
		if auth != "" {
			req.Header.Set("Authorization", "Bearer "+auth)
		}
		resp, err := h.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, string(body)
	}

	for _, path := range []string{"/", "/dashboard/app.js", "/dashboard/style.css"} {
		resp, body := do("GET", path, "")
		if resp.StatusCode != 200 || len(body) < 100 || !strings.Contains(resp.Header.Get("Content-Security-Policy"), "frame-ancestors 'none'") {
			t.Errorf("GET %s without token: %d, %d bytes, CSP %q", path, resp.StatusCode, len(body), resp.Header.Get("Content-Security-Policy"))
		}
	}
	if resp, _ := do("GET", "/", ""); !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Errorf("GET / Content-Type %q", resp.Header.Get("Content-Type"))
	}
	if resp, _ := do("GET", "/api/cluster", ""); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET /api/cluster without token: %d, want 401", resp.StatusCode)
	}

	resp, body := do("GET", "/api/cluster", testToken)
	if resp.StatusCode != 200 {
		t.Fatalf("GET /api/cluster: %d %s", resp.StatusCode, body)
	}
	var view struct {
		Node string
		Ring struct {
			Version uint64
			Members []struct{ Name string }
		}
		Nodes []struct {
			Name, Role, Region, State string
			Stats                     *struct {
				Sessions, Connections, Users float64
				Messages                     float64 `json:"messages_total"`
				LagCount                     float64 `json:"lag_count"`
				LagP99                       float64 `json:"lag_p99_seconds"`
				Error                        string
			}
		}
		Recent   []struct{ Kind, Node string }
		Balancer struct {
			Tunnels float64 `json:"connections_active"`
		}
		GSLB []struct {
			Node, Admin, Error string
			Names              []struct {
				Name    string
				Regions []struct {
					Region     string
					FailoverTo string `json:"failover_to"`
				}
			}
			Queries float64 `json:"queries_total"`
		}
	}
	if err := json.Unmarshal([]byte(body), &view); err != nil {
		t.Fatalf("decode %s: %v", body, err)
	}
	if view.Node != "bal-test" || len(view.Ring.Members) != 3 || view.Ring.Version == 0 || len(view.Recent) == 0 {
		t.Errorf("node %q, ring %+v, %d recent events", view.Node, view.Ring, len(view.Recent))
	}
	var roles []string
	for _, n := range view.Nodes {
		roles = append(roles, n.Role)
		if n.Name != "gossip-edge" {
			if n.Stats != nil {
				t.Errorf("%s has stats %+v; only edges with an admin address do", n.Name, n.Stats)
			}
			continue
		}
		if st := n.Stats; st == nil || st.Error != "" || st.Sessions != 3 || st.Connections != 7 || st.Users != 6 || st.Messages != 42 || st.LagCount != 100 || st.LagP99 != 0.01 {
			t.Errorf("gossip-edge stats %+v", st)
		}
	}
	if strings.Join(roles, ",") != "balancer,edge,edge,edge,edge,gslb" {
		t.Errorf("nodes by role: %v, want balancers, then edges, then gslb", roles)
	}
	if len(view.GSLB) != 1 {
		t.Fatalf("gslb %+v", view.GSLB)
	}
	g := view.GSLB[0]
	if g.Node != "gslb-t" || g.Error != "" || g.Queries != 7 || len(g.Names) != 1 || g.Names[0].Regions[0].FailoverTo != "east" {
		t.Errorf("gslb view %+v", g)
	}

	// A serve mode through the balancer reaches the gslb node, with the token.
	resp, body = do("POST", "/api/gslb/pools/ide.ringlb.test./west/bal-2/mode?mode=remove", testToken)
	if resp.StatusCode != 200 || !strings.Contains(body, `"node": "gslb-t"`) {
		t.Errorf("set mode: %d %s", resp.StatusCode, body)
	}
	resp, body = do("POST", "/api/gslb/pools/ide.ringlb.test./west/bal-2/mode?mode=bogus", testToken)
	if resp.StatusCode != 400 || !strings.Contains(body, "serve mode must be") {
		t.Errorf("set a bad mode: %d %s, want the gslb's 400 and reason", resp.StatusCode, body)
	}
	gslb.mu.Lock()
	defer gslb.mu.Unlock()
	if strings.Join(gslb.modes, " ") != "ide.ringlb.test./west/bal-2=remove ide.ringlb.test./west/bal-2=bogus" {
		t.Errorf("gslb saw overrides %q", gslb.modes)
	}
	// Reads go as a peer, never with the operator's token; changes carry
	// the operator's token on to the node that checks it, with the CSRF
	// header.
	for _, a := range gslb.auth {
		if a != "GET  " && a != "POST Bearer "+testToken+" 1" {
			t.Errorf("gslb was sent %q: want reads without the operator's token, changes with it", a)
		}
	}
}

// TestDashboardWithoutGossip: a balancer with static edges only still
// answers /api/cluster (no gslb, no stats) and refuses serve modes with 404.
func TestDashboardWithoutGossip(t *testing.T) {
	h := newHarness(t, configs.Balancer{})
	resp, err := h.client.Get("http://" + h.admin + "/api/cluster")
	if err != nil {
		t.Fatal(err)
	}
	var view struct {
		Nodes  []json.RawMessage
		GSLB   []json.RawMessage
		Recent []json.RawMessage
	}
	json.NewDecoder(resp.Body).Decode(&view)
	resp.Body.Close()
	if resp.StatusCode != 200 || len(view.Nodes) != 3 || view.GSLB == nil || len(view.GSLB) != 0 || view.Recent == nil {
		t.Errorf("/api/cluster without gossip: %d %+v", resp.StatusCode, view)
	}
	resp, err = postAdmin(h.client, "http://"+h.admin+"/api/gslb/pools/x/y/z/mode?mode=no")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("serve mode without gslb nodes: %d, want 404", resp.StatusCode)
	}
}

// An edge's admin answers reach the dashboard through whoever is on the
// path; one of this release (peer_signing 7) signs each for the read, and
// an answer without its signature — rewritten on the way, here never
// signed — is shown as the edge's error, not as its figures. An edge of an
// earlier release, which signs no answer, is read as before.
func TestDashboardTakesOnlySignedAnswers(t *testing.T) {
	h := tokenHarness(t)
	unsigned := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(fakeEdgeMetrics)) }))
	defer unsigned.Close()
	cl := healthtest.New(t)
	self := cl.Join("bal-test", health.Meta{Role: health.RoleBalancer, Region: "east", State: health.StateAlive})
	edge := cl.Join("gossip-edge", health.Meta{Role: health.RoleEdge, Region: "east", URL: "http://127.0.0.1:1", Admin: unsigned.URL, Weight: 1, State: health.StateAlive})
	healthtest.WaitMembers(t, self, "the edge in gossip", func(ns []health.Node) bool { return len(ns) == 2 })
	h.bal.SetCluster(self)

	stats := func() string {
		t.Helper()
		req, _ := http.NewRequest("GET", "http://"+h.admin+"/api/cluster", nil)
		req.Header.Set("Authorization", "Bearer "+testToken)
		resp, err := h.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var view struct {
			Nodes []struct {
				Name  string
				Stats *struct {
					Sessions float64
					Error    string
				}
			}
		}
		if err := json.NewDecoder(resp.Body).Decode(&view); err != nil {
			t.Fatal(err)
		}
		for _, n := range view.Nodes {
			if n.Name == "gossip-edge" && n.Stats != nil {
				if n.Stats.Error != "" {
					return n.Stats.Error
				}
				return fmt.Sprintf("sessions %.0f", n.Stats.Sessions)
			}
		}
		return "not shown"
	}
	got := stats()
	t.Logf("an edge announcing peer_signing %d, answering unsigned: %s", health.PeerSigningAnswer, got)
	if !strings.Contains(got, "not signed") {
		t.Errorf("the dashboard showed an unsigned answer of an edge that signs them: %s", got)
	}
	healthtest.AnnouncePeerSigning(t, edge, self, health.PeerSigningForwarded)
	if got := stats(); got != "sessions 3" {
		t.Errorf("an earlier release's edge, which signs no answer: %s, want its figures", got)
	}
}

// The cluster's audit view names each record's node as the node read, not
// as its answer says: an edge (or, for an earlier release's unsigned
// answers, anyone on the path to it) answered records in the name of this
// balancer, and the operator was shown a drain this balancer never
// recorded. Records over the bound a node keeps (a field of 256 bytes) are
// cut so too.
func TestClusterAuditNamesTheNodeRead(t *testing.T) {
	h := tokenHarness(t)
	long := strings.Repeat("x", 4096)
	claims := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		operator.WriteJSON(w, http.StatusOK, operator.AuditView{Node: "bal-test", Records: []operator.Record{
			{Node: "bal-test", Who: "user:alice", Remote: "10.0.0.9:4000", Action: "drain", Target: "edge-1", Result: http.StatusAccepted},
			{Node: "bal-test", Who: long, Remote: long, Action: long, Target: long, For: long, Result: http.StatusAccepted},
		}})
	}))
	defer claims.Close()
	unsignedEdgeAt(t, h, claims.URL)

	resp := h.adminGet(t, "/api/audit?cluster=1")
	defer resp.Body.Close()
	var view struct {
		Records []operator.Record
		Errors  []struct{ Node, Error string }
	}
	if err := json.NewDecoder(resp.Body).Decode(&view); err != nil {
		t.Fatal(err)
	}
	if len(view.Records) != 2 {
		t.Fatalf("the cluster's audit: %d records, errors %+v; want the edge's 2", len(view.Records), view.Errors)
	}
	for _, r := range view.Records {
		t.Logf("record shown as node %q, who %d bytes", r.Node, len(r.Who))
		if r.Node != "gossip-edge" {
			t.Errorf("a record read from gossip-edge is shown as %q's", r.Node)
		}
		for _, f := range []string{r.Who, r.For, r.Remote, r.Action, r.Target} {
			if len(f) > 256 {
				t.Errorf("a field of %d bytes shown, over the 256 a node keeps", len(f))
			}
		}
	}
}

// The cluster's history view names each node's figures as the node read,
// not as its answer says, and holds them to the bounds a node keeps its own
// to: an edge answered a history in this balancer's name, with a role, a
// series name and events' texts of 4 KiB, and more series, samples and
// events than any node keeps, and it was passed to the dashboard as it came.
func TestClusterHistoryNamesTheNodeRead(t *testing.T) {
	h := tokenHarness(t)
	long := strings.Repeat("x", 4096)
	claims := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		samples := 2 * operator.HistorySamples
		v := operator.HistoryView{Node: "bal-test", Role: long, Interval: 10, Times: make(operator.Floats, samples), Series: map[string]operator.Floats{}}
		for i := range 100 {
			v.Series[fmt.Sprintf("%s%d", long, i)] = make(operator.Floats, samples)
		}
		v.Series["tunnels"] = operator.Floats{1, math.NaN()} // a sample with no value: null, shown as a gap
		for range 300 {
			v.Events = append(v.Events, operator.Event{At: time.Now(), Kind: "drain", Node: "bal-test", Text: long})
		}
		operator.WriteJSON(w, http.StatusOK, v)
	}))
	defer claims.Close()
	unsignedEdgeAt(t, h, claims.URL)

	resp := h.adminGet(t, "/api/history?cluster=1")
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var view struct {
		Nodes  []operator.HistoryView
		Errors []struct{ Node, Error string }
	}
	if err := json.Unmarshal(body, &view); err != nil {
		t.Fatal(err)
	}
	if len(view.Nodes) != 2 || view.Nodes[0].Node != "bal-test" {
		t.Fatalf("the cluster's history: %d nodes, errors %+v; want this balancer's then the edge's", len(view.Nodes), view.Errors)
	}
	v := view.Nodes[1]
	t.Logf("the edge's view shown as node %q, role %d bytes, %d times, %d series, %d events", v.Node, len(v.Role), len(v.Times), len(v.Series), len(v.Events))
	if v.Node != "gossip-edge" {
		t.Errorf("the history read from gossip-edge is shown as %q's", v.Node)
	}
	if len(v.Role) > 256 {
		t.Errorf("a role of %d bytes shown, over the 256 a node keeps", len(v.Role))
	}
	if len(v.Times) > operator.HistorySamples || len(v.Series) > 64 || len(v.Events) > 256 {
		t.Errorf("%d times, %d series, %d events shown, over the %d, 64 and 256 a node keeps", len(v.Times), len(v.Series), len(v.Events), operator.HistorySamples)
	}
	if s := v.Series["tunnels"]; len(s) != 2 || s[0] != 1 || !math.IsNaN(s[1]) {
		t.Errorf("the edge's series [1, null] shown as %v", s)
	}
	for name, s := range v.Series {
		if len(name) > 256 || len(s) > operator.HistorySamples {
			t.Errorf("a series named in %d bytes of %d samples shown", len(name), len(s))
			break
		}
	}
	for _, e := range v.Events {
		if e.Node != "gossip-edge" || len(e.Kind) > 256 || len(e.Text) > 256 {
			t.Errorf("an event shown as %q's, kind %d bytes, text %d bytes", e.Node, len(e.Kind), len(e.Text))
			break
		}
	}
}

// A node's records dated after the moment they were read (a node whose
// clock runs ahead, or one that lies) are shown at that moment, marked with
// the time they claimed, and no node's records push every other node's out
// of the cluster's audit view: an edge answering 200 records dated 2099 took
// all of ?cluster=1, and the drain made on this balancer was not shown.
func TestClusterAuditKeepsEveryNodesNewest(t *testing.T) {
	h := tokenHarness(t)
	future := time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC)
	claims := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/drain" {
			operator.WriteJSON(w, http.StatusOK, map[string]bool{"draining": true})
			return
		}
		v := operator.AuditView{Node: "gossip-edge"}
		for range operator.DefaultAuditLimit {
			v.Records = append(v.Records, operator.Record{At: future, Node: "gossip-edge", Who: "token", Remote: "10.0.0.9:4000", Action: "maintenance", Result: http.StatusOK})
		}
		operator.WriteJSON(w, http.StatusOK, v)
	}))
	defer claims.Close()
	unsignedEdgeAt(t, h, claims.URL)

	do := func(method, path string) *http.Response { t.Helper(); return h.adminDo(t, method, path) }
	resp := do(http.MethodPost, "/api/nodes/gossip-edge/drain") // asked of the edge, recorded here
	resp.Body.Close()
	if resp.StatusCode >= 300 {
		t.Fatalf("drain gossip-edge: %d", resp.StatusCode)
	}
	before := time.Now()
	resp = do(http.MethodGet, "/api/audit?cluster=1")
	defer resp.Body.Close()
	after := time.Now()
	var view struct {
		Records []operator.Record
		Errors  []struct{ Node, Error string }
	}
	if err := json.NewDecoder(resp.Body).Decode(&view); err != nil {
		t.Fatal(err)
	}
	drains, marked, edges := 0, 0, 0
	var unmarked operator.Record
	for _, r := range view.Records {
		switch {
		case r.Node == "bal-test" && r.Action == "drain":
			drains++
		case r.Node == "gossip-edge":
			edges++
			if !r.At.After(after) && !r.At.Before(before) && r.Claimed.Equal(future) {
				marked++
			} else {
				unmarked = r
			}
		}
	}
	t.Logf("the cluster's audit: %d records, %d drains of this balancer, %d of the edge's, %d of them shown at the moment read; errors %+v", len(view.Records), drains, edges, marked, view.Errors)
	if drains != 1 {
		t.Errorf("this balancer's drain shown %d times among the edge's %d records dated %s, want once", drains, operator.DefaultAuditLimit, future.Format(time.DateOnly))
	}
	if edges == 0 || marked != edges {
		t.Errorf("%d of the edge's %d records shown at the moment read and marked; one shown at %s, claimed %s", marked, edges, unmarked.At, unmarked.Claimed)
	}
}

// The dashboard's event list keeps every node's newest events: it showed
// the newest 40 of all, and an edge answering its 256 events dated now or
// later (a clock ahead, or a node that lies) filled it, hiding every drain
// and failover of the other nodes. The cluster's history gives the list,
// each node keeping an equal share of it.
func TestClusterEventsKeepEveryNodesNewest(t *testing.T) {
	h := tokenHarness(t)
	future := time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC)
	claims := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/drain" {
			operator.WriteJSON(w, http.StatusOK, map[string]bool{"draining": true})
			return
		}
		v := operator.HistoryView{Node: "gossip-edge", Role: "edge", Interval: 10, Times: operator.Floats{}, Series: map[string]operator.Floats{}}
		for i := range 256 {
			v.Events = append(v.Events, operator.Event{At: future.Add(time.Duration(i) * time.Minute), Kind: "failover", Node: "gossip-edge", Text: fmt.Sprintf("claim %d", i)})
		}
		operator.WriteJSON(w, http.StatusOK, v)
	}))
	defer claims.Close()
	unsignedEdgeAt(t, h, claims.URL)

	do := func(method, path string) *http.Response { t.Helper(); return h.adminDo(t, method, path) }
	resp := do(http.MethodPost, "/api/nodes/gossip-edge/drain") // asked of the edge, an event here
	resp.Body.Close()
	if resp.StatusCode >= 300 {
		t.Fatalf("drain gossip-edge: %d", resp.StatusCode)
	}
	resp = do(http.MethodGet, "/api/history?cluster=1")
	defer resp.Body.Close()
	var view struct {
		Events []operator.Event
		Errors []struct{ Node, Error string }
	}
	if err := json.NewDecoder(resp.Body).Decode(&view); err != nil {
		t.Fatal(err)
	}
	drains, edges := 0, 0
	for _, e := range view.Events {
		switch {
		case e.Node == "bal-test" && e.Kind == "drain":
			drains++
		case e.Node == "gossip-edge":
			edges++
		}
	}
	t.Logf("the event list: %d events, %d drains of this balancer, %d of the edge's; errors %+v", len(view.Events), drains, edges, view.Errors)
	if drains != 1 || edges == 0 || len(view.Events) > eventsShown {
		t.Errorf("this balancer's drain listed %d times, the edge's events %d times, %d in all (at most %d): want the drain once beside the edge's", drains, edges, len(view.Events), eventsShown)
	}
}

// tokenHarness is a harness whose admin port takes testToken.
func tokenHarness(t *testing.T) *harness {
	t.Helper()
	token := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(token, []byte(testToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return newHarness(t, configs.Balancer{Admin: configs.Admin{TokenFile: token}})
}

// unsignedEdgeAt puts h's balancer in a gossip cluster with an edge whose
// admin API is admin, of an earlier release: its answers are read unsigned.
func unsignedEdgeAt(t *testing.T, h *harness, admin string) {
	t.Helper()
	cl := healthtest.New(t)
	self := cl.Join("bal-test", health.Meta{Role: health.RoleBalancer, Region: "east", State: health.StateAlive})
	edge := cl.Join("gossip-edge", health.Meta{Role: health.RoleEdge, Region: "east", URL: "http://127.0.0.1:1", Admin: admin, Weight: 1, State: health.StateAlive})
	healthtest.WaitMembers(t, self, "the edge in gossip", func(ns []health.Node) bool { return len(ns) == 2 })
	healthtest.AnnouncePeerSigning(t, edge, self, health.PeerSigningForwarded)
	h.bal.SetCluster(self)
}

// adminGet GETs path from h's admin port with the token.
func (h *harness) adminGet(t *testing.T, path string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+h.admin+path, nil)
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := h.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// adminDo sends method path to h's admin port with the token, as a write.
func (h *harness) adminDo(t *testing.T, method, path string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(method, "http://"+h.admin+path, nil)
	req.Header.Set("Authorization", "Bearer "+testToken)
	req.Header.Set(configs.HeaderAdmin, "1")
	resp, err := h.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// A gslb node's pools view is taken as far as a node's view honestly goes
// (health.MaxPeerView, what gslb nodes take of each other's), not as far as
// any peer answer (4 MiB): a node answering more — a key holder's forgery,
// or a node gone wrong — is shown with its error, its names left out.
// Before, each gslb node's list went into every /api/cluster answer up to
// 4 MiB, and as many times as there are gslb nodes in the gossip.
func TestDashboardBoundsGSLBNames(t *testing.T) {
	h := tokenHarness(t)
	cl := healthtest.New(t)
	self := cl.Join("bal-test", health.Meta{Role: health.RoleBalancer, Region: "east", State: health.StateAlive})
	entry := `{"name":"n.ringlb.test.","regions":[{"region":"west","members":[{"member":"bal-2","serving":true}]}]}`
	names := "[" + strings.TrimSuffix(strings.Repeat(entry+",", 3*health.MaxPeerView/len(entry)), ",") + "]"
	big := httptest.NewServer(peerReads("gslb-big", self.Keyring(), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/pools" {
			w.Write([]byte(`{"node":"gslb-big","names":` + names + `}`))
		}
	})))
	defer big.Close()
	cl.Join("gslb-big", health.Meta{Role: health.RoleGSLB, Region: "east", Admin: big.URL, State: health.StateAlive})
	healthtest.WaitMembers(t, self, "the gslb in gossip", func(ns []health.Node) bool { return len(ns) == 2 })
	h.bal.SetCluster(self)

	req, _ := http.NewRequest("GET", "http://"+h.admin+"/api/cluster", nil)
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := h.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var view struct {
		GSLB []struct {
			Node, Error string
			Names       []json.RawMessage
		}
	}
	if err := json.Unmarshal(body, &view); err != nil || len(view.GSLB) != 1 {
		t.Fatalf("GET /api/cluster: %d, %v, %d bytes", resp.StatusCode, err, len(body))
	}
	t.Logf("names of %d bytes: /api/cluster %d bytes", len(names), len(body))
	if g := view.GSLB[0]; len(g.Names) != 0 || g.Error == "" {
		t.Errorf("a %d-byte names list (bound %d) passed through: %d names, error %q", len(names), health.MaxPeerView, len(g.Names), g.Error)
	}
}
