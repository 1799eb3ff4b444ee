package operator

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health"
	"github.com/ringlb/ringlb/health/healthtest"
)

// A read signed for this node is answered signed for its reader
// (configs.HeaderPeerAnswer) — as a peer's on a port with a token, and as
// well when the loopback rule lets it in as the operator (the demo's nodes
// on one host) — over the body as sent: uncompressed, empty for HEAD. An
// operator's read is not signed, and an answer larger than any reader
// takes goes out unsigned, whole.
func TestPeerReadsAnsweredSigned(t *testing.T) {
	kr := healthtest.New(t).Join("keyring", health.Meta{Role: health.RoleBalancer, State: health.StateAlive}).Keyring()
	const token = "operator-token-0123456789"
	big := bytes.Repeat([]byte("m"), maxSignedAnswer+1)
	serve := func(token string) string {
		access := Access{Token: func() []byte { return []byte(token) }, Keyring: func() *health.Keyring { return kr }, Self: "edge-1",
			Node: New(Config{Node: "edge-1", Role: "edge", Admin: configs.Admin{Listen: "127.0.0.1:9101"}})}
		mux := http.NewServeMux()
		mux.Handle("GET /api/sessions", access.Read(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			// A handler that compresses when asked (promhttp does).
			io.WriteString(w, Caller(r.Context())+" encoding:"+r.Header.Get("Accept-Encoding"))
		})))
		mux.Handle("GET /api/missing", access.Read(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "no such thing", http.StatusNotFound)
		})))
		mux.Handle("GET /metrics", access.Read(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(big) })))
		ln := serveMux(t, mux)
		return ln.Addr().String()
	}
	guarded, open := serve(token), serve("")
	for _, tt := range []struct {
		name, addr, method, path string
		peer, operator           bool
		status                   int
		body                     string // "": not checked
		signed                   bool
	}{
		{"a peer's read", guarded, "GET", "/api/sessions", true, false, 200, "peer:bal-1 encoding:", true},
		{"a peer's read the loopback rule lets in", open, "GET", "/api/sessions", true, false, 200, "loopback encoding:", true},
		{"a peer's read with the token too", guarded, "GET", "/api/sessions", true, true, 200, "token encoding:", true},
		{"a peer's HEAD", guarded, "HEAD", "/api/sessions", true, false, 200, "", true},
		{"a peer's read answered 404", guarded, "GET", "/api/missing", true, false, 404, "no such thing\n", true},
		{"the operator's read", guarded, "GET", "/api/sessions", false, true, 200, "token encoding:gzip", false},
		{"an answer no reader takes whole", guarded, "GET", "/metrics", true, false, 200, string(big), false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r, _ := http.NewRequest(tt.method, "http://"+tt.addr+tt.path, nil)
			if tt.operator {
				r.Header.Set("Authorization", "Bearer "+token)
			}
			if tt.peer {
				kr.SignRequest(r.Header, "bal-1", "edge-1", tt.method, tt.path, nil)
			}
			resp, body := send(t, r)
			if resp.StatusCode != tt.status || tt.body != "" && string(body) != tt.body {
				t.Errorf("%d %.80q, want %d %q", resp.StatusCode, body, tt.status, tt.body)
			}
			if !checkAnswerSignature(t, kr, r, resp, body, tt.signed) {
				return
			}
			if tt.method == "GET" && strings.Contains(string(body), "gzip") {
				t.Errorf("a signed answer's handler was asked to compress it")
			}
		})
	}
}

// A change another node signed for this one (a balancer's dashboard
// forwarding the operator's drain) is answered signed for it, let through
// or refused, so that the dashboard tells this node's answer from one made
// on the way. The signature lets nothing through that the operator's
// credential beside it does not: alone, the change is refused (signed);
// over another body, or beside no credential, it changes nothing of the
// rule. The handler gets the body as it came.
func TestPeerChangesAnsweredSigned(t *testing.T) {
	kr := healthtest.New(t).Join("keyring", health.Meta{Role: health.RoleBalancer, State: health.StateAlive}).Keyring()
	const token = "operator-token-0123456789"
	node := New(Config{Node: "edge-1", Role: "edge", Admin: configs.Admin{Listen: "127.0.0.1:9101"}})
	access := Access{Token: func() []byte { return []byte(token) }, Keyring: func() *health.Keyring { return kr }, Self: "edge-1", Node: node}
	var changes atomic.Int32
	mux := http.NewServeMux()
	mux.Handle("POST /api/drain", access.Write(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		changes.Add(1)
		Describe(r.Context(), "drain", "edge-1")
		body, _ := io.ReadAll(r.Body)
		w.WriteHeader(http.StatusAccepted)
		io.WriteString(w, Caller(r.Context())+" body:"+string(body))
	})))
	ln := serveMux(t, mux)

	for _, tt := range []struct {
		name         string
		operator     bool
		body, signed string // signed: the body the peer signed over
		peer         bool
		status       int
		answer       string // "": not checked
		signedAnswer bool
	}{
		{"the operator's change a peer forwarded", true, "", "", true, 202, "token body:", true},
		{"with a body", true, `{"deadline":"5m"}`, `{"deadline":"5m"}`, true, 202, `token body:{"deadline":"5m"}`, true},
		{"a peer's signature alone", false, "", "", true, 401, "", true},
		{"the operator's own change", true, "", "", false, 202, "token body:", false},
		{"signed over another body", true, `{"deadline":"1s"}`, `{"deadline":"5m"}`, true, 202, `token body:{"deadline":"1s"}`, false},
		{"a body beyond what is checked", true, strings.Repeat("x", maxPeerChangeBody+1), strings.Repeat("x", maxPeerChangeBody+1), true, 202, "", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := changes.Load()
			r, _ := http.NewRequest(http.MethodPost, "http://"+ln.Addr().String()+"/api/drain", strings.NewReader(tt.body))
			r.Header.Set(configs.HeaderAdmin, "1")
			if tt.operator {
				r.Header.Set("Authorization", "Bearer "+token)
			}
			if tt.peer {
				kr.SignRequest(r.Header, "bal-1", "edge-1", http.MethodPost, "/api/drain", []byte(tt.signed))
			}
			resp, body := send(t, r)
			if resp.StatusCode != tt.status || tt.answer != "" && string(body) != tt.answer {
				t.Errorf("%d %.80q, want %d %q", resp.StatusCode, body, tt.status, tt.answer)
			}
			if made := changes.Load() - before; (tt.status == 202) != (made == 1) {
				t.Errorf("the change was made %d times, answered %d", made, resp.StatusCode)
			}
			checkAnswerSignature(t, kr, r, resp, body, tt.signedAnswer)
		})
	}
	// Each change the operator made is the operator's in the audit log,
	// signed by a peer or not.
	drains := 0
	for _, rec := range node.Audit.List(10) {
		if rec.Action != "drain" {
			continue
		}
		drains++
		if rec.Who != CallerToken {
			t.Errorf("audit record %+v: a change made by %q, want the operator's token", rec, rec.Who)
		}
	}
	if made := int(changes.Load()); drains != made {
		t.Errorf("%d drains in the audit log, %d made", drains, made)
	}
}

// checkAnswerSignature checks that the answer (resp, body) edge-1 gave to
// bal-1's request r is signed for it when signed, and carries no signature
// otherwise; it reports whether the answer was to be signed.
func checkAnswerSignature(t *testing.T, kr *health.Keyring, r *http.Request, resp *http.Response, body []byte, signed bool) bool {
	t.Helper()
	sig := resp.Header.Get(configs.HeaderPeerAnswer)
	if !signed {
		if sig != "" {
			t.Errorf("signed: %q", sig)
		}
		return false
	}
	if err := kr.VerifyAnswer(sig, "bal-1", "edge-1", r.Header.Get(configs.HeaderPeer), resp.StatusCode, body, time.Now()); err != nil {
		t.Errorf("answer signature %q: %v", sig, err)
	}
	return true
}

// send sends r and returns its answer and the whole body, closed.
func send(t *testing.T, r *http.Request) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, body
}
