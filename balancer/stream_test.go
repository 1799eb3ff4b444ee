package balancer

import (
	"bytes"
	"crypto/sha256"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"

	"github.com/ringlb/ringlb/balancer/ring"
	"github.com/ringlb/ringlb/configs"
)

// Large bodies (max_body_bytes raised for them) stream both ways through
// the balancer, and every request reaching an edge carries an X-Request-Id
// (the client's when it sent one).
func TestStreamingBodiesAndRequestID(t *testing.T) {
	const size = 32 << 20
	// One body for the edge's download, the client's upload and both
	// digests: the race detector makes each pass over 32 MiB cost.
	body := pattern(size)
	var seenIDs []string
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seenIDs = append(seenIDs, r.Header.Get("X-Request-Id"))
		switch r.Method {
		case http.MethodPost: // upload: answer with the digest of what arrived
			h := sha256.New()
			io.Copy(h, r.Body)
			w.Write(h.Sum(nil))
		default: // download
			w.Header().Set("Content-Length", strconv.Itoa(size))
			w.Write(body)
		}
	})}
	go srv.Serve(ln)
	defer srv.Close()
	h := newHarness(t, configs.Balancer{Limits: configs.Limits{MaxBodyBytes: size}})
	h.ring.Update([]ring.Member{{Name: "files", URL: "http://" + ln.Addr().String()}})

	resp, got := h.get(t, "/plugin.zip", http.Header{"Ctstickiness": {"dl"}, "X-Request-Id": {"client-chosen-id"}})
	want := sha256.Sum256(body)
	if digest := sha256.Sum256(got); resp.StatusCode != 200 || digest != want {
		t.Fatalf("download: status %d, %d bytes, digest mismatch %v", resp.StatusCode, len(got), digest != want)
	}
	req, _ := http.NewRequest(http.MethodPost, "http://"+h.addr+"/upload", bytes.NewReader(body))
	req.Header.Set("Ctstickiness", "up")
	up, err := h.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	digest, _ := io.ReadAll(up.Body)
	up.Body.Close()
	if !bytes.Equal(digest, want[:]) {
		t.Fatalf("upload: edge saw different bytes (status %d)", up.StatusCode)
	}
	if len(seenIDs) != 2 || seenIDs[0] != "client-chosen-id" || len(seenIDs[1]) != 32 {
		t.Fatalf("request ids at the edge: %q", seenIDs)
	}
}
