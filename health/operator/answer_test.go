package operator

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"strings"
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
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: mux}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
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
			resp, err := http.DefaultClient.Do(r)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.status || tt.body != "" && string(body) != tt.body {
				t.Errorf("%d %.80q, want %d %q", resp.StatusCode, body, tt.status, tt.body)
			}
			sig := resp.Header.Get(configs.HeaderPeerAnswer)
			if !tt.signed {
				if sig != "" {
					t.Errorf("signed: %q", sig)
				}
				return
			}
			if err := kr.VerifyAnswer(sig, "bal-1", "edge-1", r.Header.Get(configs.HeaderPeer), resp.StatusCode, body, time.Now()); err != nil {
				t.Errorf("answer signature %q: %v", sig, err)
			}
			if tt.method == "GET" && strings.Contains(string(body), "gzip") {
				t.Errorf("a signed answer's handler was asked to compress it")
			}
		})
	}
}
