package main

import (
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// ringlb probe requests its URL once and goes by that answer, as
// keepalived's HTTP_GET and HAProxy's checks do: a redirect is not a 2xx.
// It followed redirects: a health URL answering 302 to any page that
// answers 200 (another node's, another site's) passed, and the admin token
// went along to the redirect's port.
func TestProbeFollowsNoRedirect(t *testing.T) {
	elsewhere, tokenSeen := authorizationSeen(t)
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

// ringlb probe carries the admin token (-token-file) to the URL it is given
// and to no one else: a proxy of the environment (HTTP_PROXY, set in many
// images and CI runners) is another host, reached in clear. It went through
// one for every URL Go does not exempt (loopback IPs and localhost are): a
// preStop hook draining an edge by its pod address handed the token to the
// proxy, which answered in its place. The real binary, as a hook runs it;
// the URL is 0.0.0.0, which Go proxies and Linux connects to this host.
func TestProbeSendsTheTokenThroughNoProxy(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the real binary; skipped with -short")
	}
	const token = "0123456789abcdef0123456789abcdef"
	admin, adminSaw := authorizationSeen(t)
	proxy, proxySaw := authorizationSeen(t)
	tokenFile := filepath.Join(t.TempDir(), "admin.token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	url := "http://" + net.JoinHostPort("0.0.0.0", strconv.Itoa(admin.Listener.Addr().(*net.TCPAddr).Port)) + "/api/drain"
	cmd := exec.Command(buildBinary(t), "probe", "-method", "POST", "-url", url, "-token-file", tokenFile)
	cmd.Env = append(os.Environ(), "HTTP_PROXY="+proxy.URL, "http_proxy="+proxy.URL, "NO_PROXY=", "no_proxy=")
	out, err := cmd.CombinedOutput()
	t.Logf("probe %s: %v\n%s", url, err, out)
	select {
	case auth := <-proxySaw:
		t.Errorf("the environment's proxy was sent the request, Authorization %q", auth)
	default:
	}
	select {
	case auth := <-adminSaw:
		if auth != "Bearer "+token {
			t.Errorf("the admin port got Authorization %q, want the token", auth)
		}
	default:
		t.Errorf("the admin port was not requested")
	}
}

// authorizationSeen is a server answering 200 to anything, and the
// Authorization header of the first request it got.
func authorizationSeen(t *testing.T) (*httptest.Server, <-chan string) {
	got := make(chan string, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case got <- r.Header.Get("Authorization"):
		default:
		}
		w.Write([]byte("ok\n"))
	}))
	t.Cleanup(srv.Close)
	return srv, got
}
