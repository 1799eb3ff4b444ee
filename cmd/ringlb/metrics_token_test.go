package main

import (
	"context"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ringlb/ringlb/configs"
)

// TestMetricsTokenScrapesOnly drives the real binary: a Prometheus that
// scrapes an admin port beyond loopback had to hold the operator's token,
// so whoever read the scraper's config (or took the scraper) could drain
// every node. An edge given admin.metrics_token_file lets that token read
// GET /metrics and nothing else: no other read, no change; the operator's
// token keeps everything. `ringlb check` refuses a metrics token equal to
// the operator's.
func TestMetricsTokenScrapesOnly(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("end-to-end test of the real binary; skipped with -short")
	}
	bin := buildBinary(t)
	dir := t.TempDir()
	operatorToken, scrapeToken := configs.GenerateKey(), configs.GenerateKey()
	writeFile(t, filepath.Join(dir, "admin.token"), operatorToken+"\n")
	writeFile(t, filepath.Join(dir, "metrics.token"), scrapeToken+"\n")
	cfg := filepath.Join(dir, "edge.yaml")
	writeFile(t, cfg, clusterSection("edge-m", "")+"edge: { listen: 127.0.0.1:0, admin: { listen: 127.0.0.1:0, token_file: admin.token, metrics_token_file: metrics.token } }\n")
	admin := startProc(t, bin, "edge", "-config", cfg).waitLog(t, "edge started")["admin"].(string)

	call := func(method, path, token string) int {
		t.Helper()
		req, err := http.NewRequest(method, "http://"+admin+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("X-Ringlb-Admin", "1")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := (&http.Client{Timeout: 20 * time.Second}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, tc := range []struct {
		name, method, path, token string
		want                      int
	}{
		{"scrape with the metrics token", "GET", "/metrics", scrapeToken, 200},
		{"another read with the metrics token", "GET", "/api/sessions", scrapeToken, 401},
		{"a drain with the metrics token", "POST", "/api/drain", scrapeToken, 401},
		{"scrape without a token", "GET", "/metrics", "", 401},
		{"scrape with the operator's token", "GET", "/metrics", operatorToken, 200},
		{"a read with the operator's token", "GET", "/api/sessions", operatorToken, 200},
	} {
		if got := call(tc.method, tc.path, tc.token); got != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, got, tc.want)
		}
	}

	writeFile(t, filepath.Join(dir, "same.token"), operatorToken+"\n")
	writeFile(t, cfg, clusterSection("edge-m", "")+"edge: { listen: 127.0.0.1:0, admin: { listen: 127.0.0.1:0, token_file: admin.token, metrics_token_file: same.token } }\n")
	var out, errOut strings.Builder
	if code := run(context.Background(), []string{"check", "-config", cfg}, &out, &errOut); code != 1 || !strings.Contains(errOut.String(), "edge.admin.metrics_token_file") || strings.Contains(errOut.String(), operatorToken) {
		t.Errorf("check of a metrics token equal to the operator's: exit %d, stderr:\n%s", code, errOut.String())
	}
}
