package sessions

import (
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
)

// A peer that answers a claim or hand-off with a redirect does not send the
// edge on to another host: the signed request goes to the address gossip
// announced (and the allowed networks admitted), nowhere else.
func TestPeerRequestsFollowNoRedirect(t *testing.T) {
	var reached atomic.Int64
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { reached.Add(1) }))
	defer target.Close()
	redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL+r.URL.Path, http.StatusTemporaryRedirect)
	}))
	defer redirector.Close()
	client := newPeerClient()
	defer client.CloseIdleConnections()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, redirector.URL+"/_ringlb/handoff", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTemporaryRedirect || reached.Load() != 0 {
		t.Errorf("answer %d, the redirect's target reached %d times: want the 307 itself and 0", resp.StatusCode, reached.Load())
	}
}
