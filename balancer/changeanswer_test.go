package balancer

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ringlb/ringlb/balancer/ring"
	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health"
	"github.com/ringlb/ringlb/health/healthtest"
	"github.com/ringlb/ringlb/sessions"
)

// pathAttacker sits on the path between a balancer and a node's admin
// port (a spoofed address on the LAN) without the cluster's key: it
// passes everything on, but a change (POST) it answers as its mode says.
type pathAttacker struct {
	addr string
	// mode: "" passes everything on; "done" answers a change itself
	// (done, never passing it on); "refused" passes it on and turns the
	// node's answer into a 409.
	mode atomic.Value
	// done is the answer "done" makes: its status and body.
	doneStatus int
	doneBody   string
	// changes counts the changes passed on to the node.
	changes atomic.Int32
}

// startPathAttacker serves a pathAttacker on a loopback port in front of
// the admin port target until the test ends; "done" answers status, body.
func startPathAttacker(t *testing.T, target string, status int, body string) *pathAttacker {
	t.Helper()
	a := &pathAttacker{doneStatus: status, doneBody: body}
	a.mode.Store("")
	to, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(to)
	proxy.ModifyResponse = func(resp *http.Response) error {
		if resp.Request.Method != http.MethodPost || a.mode.Load() != "refused" {
			return nil
		}
		// The node's signature, if any, goes along: only the status and
		// the body change.
		forged := `{"error":"refused: this edge hosts the only replica of its sessions"}` + "\n"
		resp.Body.Close()
		resp.StatusCode, resp.Status = http.StatusConflict, "409 Conflict"
		resp.Body = io.NopCloser(strings.NewReader(forged))
		resp.ContentLength = int64(len(forged))
		resp.Header.Set("Content-Length", strconv.Itoa(len(forged)))
		return nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			if a.mode.Load() == "done" {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(a.doneStatus)
				io.WriteString(w, a.doneBody+"\n")
				return
			}
			a.changes.Add(1)
		}
		proxy.ServeHTTP(w, r)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	a.addr = "http://" + ln.Addr().String()
	return a
}

// A drain asked through the dashboard reaches a real edge's admin port
// through whoever is on the path. Someone there without the cluster's key
// answered the drain 202 itself, and the operator was told the edge drains
// while it went on serving; or let the drain through and turned the edge's
// 202 into a 409, and the operator was told it refused while it drained.
// The edge signs its answer to a change the balancer forwarded signed
// (X-Ringlb-Peer beside the operator's token), and the balancer shows an
// answer of an edge announcing peer_signing 7 without that signature as
// the edge's error: whether it drains is then not known, not done or
// refused. The edge's own answer is shown as before.
func TestForgedChangeAnswersFoolNoOperator(t *testing.T) {
	token := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(token, []byte(testToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cl := healthtest.New(t)

	// A real edge, its admin port on loopback behind the attacker.
	edgeCfg := configs.Edge{Admin: configs.Admin{TokenFile: token}}
	edgeCfg.Provision()
	edge := sessions.New(edgeCfg, "edge-a", "east", slog.New(slog.DiscardHandler), nil)
	adminLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	edgeAdmin := "http://" + adminLn.Addr().String()
	attacker := startPathAttacker(t, edgeAdmin, http.StatusAccepted, `{"draining":true}`)
	ma := cl.Join("edge-a", health.Meta{Role: health.RoleEdge, Region: "east", URL: "http://127.0.0.1:1", Admin: attacker.addr, Weight: 1, State: health.StateAlive})
	edge.UseCluster(ma, ring.DefaultConfig())
	served := make(chan error, 1)
	go func() { served <- edge.ServeAdmin(adminLn) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = edge.Shutdown(ctx)
		<-served
	})

	h := newHarness(t, configs.Balancer{Admin: configs.Admin{TokenFile: token}})
	self := cl.Join("bal-test", health.Meta{Role: health.RoleBalancer, Region: "east", State: health.StateAlive})
	// A gslb node's admin port (its changes answered as a node's:
	// operator.Access), behind the attacker too.
	gslb := startFakeGSLB(t, self.Keyring())
	gslbAttacker := startPathAttacker(t, gslb.srv.URL, http.StatusOK, `{"mode":"remove"}`)
	cl.Join("gslb-t", health.Meta{Role: health.RoleGSLB, Region: "east", Admin: gslbAttacker.addr, State: health.StateAlive})
	healthtest.WaitMembers(t, self, "edge-a and gslb-t in gossip", func(ns []health.Node) bool { return len(ns) == 3 })
	h.bal.SetCluster(self)

	// post asks the dashboard for a change as the operator does.
	post := func(path string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, "http://"+h.admin+path, nil)
		req.Header.Set("Authorization", "Bearer "+testToken)
		resp, err := h.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, strings.TrimSpace(string(body))
	}
	drain := func() (int, string) { return post("/api/nodes/edge-a/drain") }
	draining := func() bool {
		t.Helper()
		resp, err := http.Get(edgeAdmin + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusServiceUnavailable
	}

	// Answered 202 on the way; the edge never asked.
	attacker.mode.Store("done")
	code, body := drain()
	t.Logf("a drain answered on the way: the operator sees %d %s; the edge draining: %v", code, body, draining())
	if code < 300 || draining() {
		t.Errorf("a drain the edge never got was shown as %d %s (edge draining: %v); want the edge's error, not done", code, body, draining())
	}
	if code < 300 && !strings.Contains(body, "not signed") {
		t.Errorf("a forged answer's error %q does not say it was not signed", body)
	}

	// Passed on, its 202 answered 409 on the way.
	attacker.mode.Store("refused")
	code, body = drain()
	t.Logf("a drain refused on the way: the operator sees %d %s; the edge draining: %v (asked %d times)", code, body, draining(), attacker.changes.Load())
	if code == http.StatusConflict || !strings.Contains(body, "not signed") {
		t.Errorf("a drain the edge took (draining: %v) was shown as %d %s; want its answer refused as not signed", draining(), code, body)
	}
	if !draining() {
		t.Errorf("the edge was asked to drain (%d times) and does not", attacker.changes.Load())
	}

	// The edge's own answer.
	attacker.mode.Store("")
	if code, body := drain(); code != http.StatusAccepted || !strings.Contains(body, `"draining":true`) {
		t.Errorf("the edge's own answer shown as %d %s, want its 202", code, body)
	}

	// A serve mode, answered on the way: the gslb node never got it.
	setMode := func() (int, string) { return post("/api/gslb/pools/ide.ringlb.test./west/bal-2/mode?mode=remove") }
	gslbAttacker.mode.Store("done")
	code, body = setMode()
	t.Logf("a serve mode answered on the way: the operator sees %d; the gslb node got %d", code, gslbAttacker.changes.Load())
	if code < 300 || !strings.Contains(body, "not signed") {
		t.Errorf("a serve mode the gslb node never got was shown as %d %s; want its error", code, body)
	}
	gslbAttacker.mode.Store("")
	if code, body := setMode(); code != http.StatusOK || !strings.Contains(body, `"mode": "remove"`) {
		t.Errorf("the gslb node's own answer shown as %d %s, want its 200", code, body)
	}
}
