package bench

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// The chaos steps' admin requests go to the admin URLs given and nowhere
// else, as every client of another node's admin API: a redirect is an
// answer, not followed. They followed redirects, so an admin URL answering
// 302 or 307 (a proxy in front, a port now another service's) had the
// bearer token sent on to wherever it pointed.
func TestChaosAdminFollowsNoRedirect(t *testing.T) {
	const token = "0123456789abcdef0123456789abcdef"
	tokenSeen := make(chan string, 4)
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") == "Bearer "+token {
			select {
			case tokenSeen <- r.Method + " " + r.URL.Path:
			default:
			}
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"Version":1,"Members":[{"Name":"e1"}],"Owner":"e1"}`))
	}))
	defer elsewhere.Close()
	moved := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		code := http.StatusFound
		if r.Method == http.MethodPost {
			code = http.StatusTemporaryRedirect // sent again as a POST, with its headers
		}
		http.Redirect(w, r, elsewhere.URL+r.URL.RequestURI(), code)
	}))
	defer moved.Close()

	a, err := NewChaosAdmin([]string{moved.URL}, token)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if _, err := a.Ring(ctx, moved.URL); err == nil || !strings.Contains(err.Error(), "302") {
		t.Errorf("ring of an admin URL answering 302: err %v, want one naming the 302", err)
	}
	if err := a.Drain(ctx, "e1"); err == nil || !strings.Contains(err.Error(), "307") {
		t.Errorf("drain through an admin URL answering 307: err %v, want one naming the 307", err)
	}
	if _, err := a.Lookup(ctx, "k"); err == nil {
		t.Error("lookup on an admin URL answering 302 passed")
	}
	for len(tokenSeen) > 0 {
		t.Errorf("the redirect's target was sent the token: %s", <-tokenSeen)
	}

	// The admin URL's own answer is still read.
	direct, err := NewChaosAdmin([]string{elsewhere.URL}, token)
	if err != nil {
		t.Fatal(err)
	}
	if r, err := direct.Ring(ctx, elsewhere.URL); err != nil || len(r.Members) != 1 {
		t.Errorf("ring of an admin URL answering 200: %+v, %v", r, err)
	}
}
