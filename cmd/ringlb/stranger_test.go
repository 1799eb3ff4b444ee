package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health"
)

// recorder is a stranger's HTTP server: it answers as an edge (whoami) or a
// gslb node (every monitored member down) would, and records every request
// it gets, with the credentials it was sent.
type recorder struct {
	srv  *httptest.Server
	mu   sync.Mutex
	seen []string
}

func newRecorder(t *testing.T) *recorder {
	r := &recorder{}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		r.seen = append(r.seen, req.Method+" "+req.URL.Path+" auth="+req.Header.Get("Authorization"))
		r.mu.Unlock()
		switch req.URL.Path {
		case "/whoami":
			io.WriteString(w, `{"edge":"stranger","region":"east"}`)
		case "/api/monitors":
			io.WriteString(w, `{"members":{"ide.ringlb.test./east/bal-1":false,"ide.ringlb.test./west/bal-2":false}}`)
		default:
			io.WriteString(w, "{}")
		}
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *recorder) requests() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.seen...)
}

// TestStrangerGetsNowhere: processes that join the demo's gossip port —
// without a key, and with a key of their own — announcing themselves as a
// heavy edge and as gslb nodes voting every balancer down, get no traffic,
// no admin request (and so no token), and change no DNS answer. (Before the
// cluster key, such an edge took 19 of 20 requests.)
func TestStrangerGetsNowhere(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("end-to-end test of the real binary; skipped with -short")
	}
	bin := buildBinary(t)
	startDemo(t, bin)

	edge, gslbAdmin := newRecorder(t), newRecorder(t)
	ownKey := filepath.Join(t.TempDir(), "own.key")
	if err := os.WriteFile(ownKey, []byte(configs.GenerateKey()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	join := func(name, key string, meta health.Meta) *health.Membership {
		t.Helper()
		cl := configs.Cluster{Name: name, Region: "east", Bind: "127.0.0.1:0", Join: []string{"127.0.0.1:7946"}, Profile: "local", SecretKeyFile: key}
		m, err := health.Join(t.Context(), cl, meta, nil)
		if err != nil {
			t.Fatalf("stranger %s: %v", name, err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			m.Shutdown(ctx)
		})
		return m
	}
	heavy := health.Meta{Role: health.RoleEdge, Region: "east", URL: edge.srv.URL, Weight: 10, State: health.StateAlive}
	voter := health.Meta{Role: health.RoleGSLB, Region: "east", Admin: gslbAdmin.srv.URL, State: health.StateAlive}
	join("stranger-edge", "", heavy)
	join("stranger-edge-keyed", ownKey, heavy)
	join("stranger-gslb-1", "", voter)
	join("stranger-gslb-2", ownKey, voter)

	// Watch the cluster for several gossip rounds (the demo probes every
	// 200 ms and syncs state every 2 s): a stranger let in shows up in a
	// balancer's view and takes keys.
	answered := map[string]int{}
	client := &http.Client{Timeout: 5 * time.Second}
	deadline := time.Now().Add(5 * time.Second)
	for i := 0; time.Now().Before(deadline) || i < 20; i++ {
		bal := []string{"127.0.0.1:8080", "127.0.0.1:8081"}[i%2]
		req, _ := http.NewRequest(http.MethodGet, "http://"+bal+"/whoami", nil)
		req.Header.Set("ctstickiness", fmt.Sprintf("stranger-key-%d", i))
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var who struct{ Edge string }
		json.NewDecoder(resp.Body).Decode(&who)
		resp.Body.Close()
		answered[who.Edge]++
		// The dashboard's fan-out, as an operator's open page would do it.
		if resp, err := client.Get("http://127.0.0.1:9090/api/cluster"); err == nil {
			resp.Body.Close()
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("answers by edge: %v", answered)
	if answered["stranger"] > 0 || answered["edge-1"]+answered["edge-2"]+answered["edge-3"] == 0 {
		t.Errorf("answers by edge %v: the stranger took traffic", answered)
	}
	resp, err := client.Get("http://127.0.0.1:9090/api/nodes")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if strings.Contains(string(body), "stranger") {
		t.Errorf("a balancer lists a stranger: %s", body)
	}
	if got := append(edge.requests(), gslbAdmin.requests()...); len(got) > 0 {
		t.Errorf("strangers were sent requests: %v", got)
	}
	// Their "down" votes moved no client: east gets east's balancer. The
	// strangers vote for as long as they are members, so a vote counted
	// would hold east on west's balancer; on a busy machine the gslb's own
	// probe of east's balancer can time out and move east for a few
	// seconds, which passes. So the answer is asked until it is east's,
	// within a generous bound.
	var last string
	deadline = time.Now().Add(30 * time.Second)
	for i := 0; ; i++ {
		m := new(dns.Msg).SetQuestion("ide.ringlb.test.", dns.TypeA)
		in, err := dns.Exchange(m, "127.0.0.1:5353")
		if err == nil && len(in.Answer) == 1 && in.Answer[0].(*dns.A).A.String() == "127.0.0.1" {
			if i > 0 {
				t.Logf("east's answer was east's again after %d more tries (the gslb's own probe, busy machine): before, %s", i, last)
			}
			return
		}
		last = fmt.Sprint(in, err)
		if time.Now().After(deadline) {
			t.Fatalf("east's answer after the strangers' votes, for 30 s: %s", last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
