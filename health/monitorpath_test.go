package health

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/ringlb/ringlb/configs"
)

// A monitor path the check passes is one an HTTP check can ask for: a
// member that answers 200 to any request is up by it. A path that is no
// URL path ("%" not followed by two hex digits, a control character)
// passed, and every check of every member then failed before it was sent:
// the whole pool went down, or was served blind by all_down, with nothing
// refused at the start.
func TestEveryMonitorPathTheCheckPassesCanBeAsked(t *testing.T) {
	asked := make(chan string, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case asked <- r.URL.RequestURI():
		default:
		}
	}))
	defer srv.Close()
	for _, path := range []string{"/_ringlb/health", "/health?full=1", "/a%20b", "/health%zz", "/health%", "/a\r\nX-Forged: 1", "/a\x00", "/a\x7f"} {
		cfg, err := configs.Parse("m.yaml", []byte("cluster: { bind: 127.0.0.1:7946 }\ngslb:\n  monitors:\n    m: { type: http, port: 80, path: "+strconv.Quote(path)+" }\n"))
		if err != nil {
			if !strings.Contains(err.Error(), "gslb.monitors.m.path") {
				t.Errorf("path %q: refused, but not at its field:\n%v", path, err)
			}
			continue
		}
		p := NewProber(cfg.GSLB.Monitors["m"], strings.TrimPrefix(srv.URL, "http://"), nil, nil)
		if err := p.check(context.Background()); err != nil {
			t.Errorf("path %q passed the check, and a member answering 200 to anything fails it: %v", path, err)
			continue
		}
		t.Logf("path %q: asked for %s", path, <-asked)
	}
}
