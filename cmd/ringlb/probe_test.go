package main

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// ringlb probe requests its URL once and goes by that answer, as
// keepalived's HTTP_GET and HAProxy's checks do: a redirect is not a 2xx.
// It followed redirects: a health URL answering 302 to any page that
// answers 200 (another node's, another site's) passed, and the admin token
// went along to the redirect's port.
func TestProbeFollowsNoRedirect(t *testing.T) {
	tokenSeen := make(chan string, 1)
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case tokenSeen <- r.Header.Get("Authorization"):
		default:
		}
		w.Write([]byte("ok\n"))
	}))
	defer elsewhere.Close()
	moved := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, elsewhere.URL+r.URL.Path, http.StatusFound)
	}))
	defer moved.Close()
	tokenFile := filepath.Join(t.TempDir(), "admin.token")
	if err := os.WriteFile(tokenFile, []byte("0123456789abcdef0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	var out, errOut strings.Builder
	code := run(t.Context(), []string{"probe", "-url", moved.URL + "/_ringlb/health", "-token-file", tokenFile}, &out, &errOut)
	t.Logf("exit %d, stdout %q, stderr %q", code, out.String(), errOut.String())
	if code != 1 || !strings.Contains(errOut.String(), "302") {
		t.Errorf("probe of a URL answering 302: exit %d, stderr %q; want exit 1 naming the 302", code, errOut.String())
	}
	select {
	case auth := <-tokenSeen:
		t.Errorf("the redirect's target was requested (Authorization %q)", auth)
	default:
	}

	// The URL's own 2xx still passes.
	out.Reset()
	errOut.Reset()
	if code := run(t.Context(), []string{"probe", "-url", elsewhere.URL + "/_ringlb/health"}, &out, &errOut); code != 0 {
		t.Errorf("probe of a URL answering 200: exit %d, stderr %q", code, errOut.String())
	}
}
