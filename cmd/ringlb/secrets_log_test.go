package main

import (
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ringlb/ringlb/balancer/httplog"
	"github.com/ringlb/ringlb/configs"
)

// TestPlantedSecretsStayOutOfLogs: malformed requests carrying a secret in
// the query string, an Authorization header, a cookie and a header line
// without a colon, sent to a balancer's and an edge's data and admin ports
// (logging at debug), leave the secret in no log line. Before, fasthttp's
// error line quoted the whole request head at WARN. A session key, which
// admits whoever knows it, reaches the logs only as its hash: before, the
// edge's debug line about a new session carried it whole.
func TestPlantedSecretsStayOutOfLogs(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("end-to-end test of the real binary; skipped with -short")
	}
	bin := buildBinary(t)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "gossip.key"), configs.GenerateKey()+"\n")
	writeFile(t, filepath.Join(dir, "admin.token"), configs.GenerateKey()+"\n")
	cluster := func(name, join string) string {
		if join != "" {
			join = fmt.Sprintf(", join: [%q]", join)
		}
		return fmt.Sprintf("cluster: { name: %s, bind: 127.0.0.1:0%s, profile: local, secret_key_file: gossip.key }\n", name, join)
	}
	balCfg := filepath.Join(dir, "bal.yaml")
	writeFile(t, balCfg, cluster("bal-1", "")+"balancer: { listen: 127.0.0.1:0, admin: { listen: 127.0.0.1:0, token_file: admin.token } }\n")
	bal := startProc(t, bin, "balancer", "-config", balCfg, "-log-level", "debug")
	balRec := bal.waitLog(t, "balancer started")
	edgeCfg := filepath.Join(dir, "edge.yaml")
	writeFile(t, edgeCfg, cluster("edge-1", balRec["gossip"].(string))+"edge: { listen: 127.0.0.1:0, admin: { listen: 127.0.0.1:0, token_file: admin.token } }\n")
	edge := startProc(t, bin, "edge", "-config", edgeCfg, "-log-level", "debug")
	edgeRec := edge.waitLog(t, "edge started")

	const secret = "PLANTED-0d9a7c2e51b4"
	bad := []string{
		// a header line without a colon, after the secrets in good ones
		"GET /ws?token=" + secret + " HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + secret + "\r\nCookie: ctstickiness=" + secret + "\r\nAuthorization " + secret + "\r\n\r\n",
		// a method that does not exist
		"G\x00T /?token=" + secret + " HTTP/1.1\r\nAuthorization: Bearer " + secret + "\r\n\r\n",
		// a broken Content-Length
		"POST /?token=" + secret + " HTTP/1.1\r\nHost: x\r\nCookie: s=" + secret + "\r\nContent-Length: " + secret + "\r\n\r\n",
		// a forged peer signature on an edge-to-edge path
		"POST /_ringlb/claim HTTP/1.1\r\nHost: x\r\nX-Ringlb-Claim-By: edge-9\r\nX-Ringlb-Peer: edge-9 1 " + secret + "\r\nContent-Length: 1\r\n\r\nk",
		// a wrong admin token, and a bad one
		"GET /api/sessions?token=" + secret + " HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + secret + "\r\n\r\n",
		"GET /api/ring?token=" + secret + " HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization " + secret + "\r\n\r\n",
	}
	ports := []string{balRec["listen"].(string), balRec["admin"].(string), edgeRec["listen"].(string), edgeRec["admin"].(string)}
	for _, addr := range ports {
		for _, req := range bad {
			c, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			c.SetDeadline(time.Now().Add(5 * time.Second))
			c.Write([]byte(req))
			var buf [4096]byte
			n, _ := c.Read(buf[:]) // the answer: an error status
			c.Close()
			if strings.Contains(string(buf[:n]), secret) {
				t.Errorf("%s echoed the secret in its answer: %q", addr, buf[:n])
			}
		}
	}
	// A session key is whoever knows it's to join: a join through the
	// balancer, logged at debug on both nodes, names its key by its hash.
	const sessionKey = "PLANTED-KEY-6f1e2b9d"
	hash := httplog.KeyString(sessionKey).String()
	waitFor(t, "the edge's debug line about the join", func() bool {
		c, err := net.DialTimeout("tcp", balRec["listen"].(string), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Write([]byte("GET /ws HTTP/1.1\r\nHost: x\r\nctstickiness: " + sessionKey + "\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
			"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"))
		var buf [1024]byte
		c.Read(buf[:])
		out := edge.output()
		return strings.Contains(out, hash) || strings.Contains(out, sessionKey)
	})
	if !strings.Contains(edge.output(), hash) {
		t.Errorf("no edge line names the join's key by its hash %s", hash)
	}

	// Both data ports logged their malformed requests (so the path was
	// taken), then a plain request marks the end of what they log of ours.
	for _, p := range []*proc{bal, edge} {
		waitFor(t, "a fasthttp error line", func() bool { return strings.Contains(p.output(), `"source":"fasthttp"`) })
	}
	resp, err := http.Get("http://" + balRec["listen"].(string) + "/_ringlb/health")
	if err == nil {
		resp.Body.Close()
	}
	for name, p := range map[string]*proc{"balancer": bal, "edge": edge} {
		out := p.output()
		for _, line := range strings.Split(out, "\n") {
			if strings.Contains(line, secret) || strings.Contains(line, sessionKey) {
				t.Errorf("%s logged a planted secret: %s", name, line)
			}
		}
	}
}

// waitFor polls cond until it holds, failing the test after a generous wait.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	pollUntil(t, 30*time.Second, func() (bool, string) { return cond(), what + ": not seen" })
}

// pollUntil polls cond every 20 ms until it holds; after within, the test
// fails with what cond said last (the state it saw).
func pollUntil(t *testing.T, within time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ok, last := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s (after %s)", last, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
