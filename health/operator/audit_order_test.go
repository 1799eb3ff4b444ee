package operator

import (
	"bytes"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ringlb/ringlb/configs"
)

// A change's audit record precedes its answer, on disk too, however large
// the answer (a peer's, relayed): net/http sends an answer beyond its 4 KiB
// buffer while the handler still runs, and the record used to be kept
// only when the handler returned — a client that read the audit log as
// soon as its drain was answered did not always find the drain there. The
// handler here holds the end of its answer until the test has looked.
func TestAuditRecordPrecedesALargeAnswer(t *testing.T) {
	const token = "operator-token-0123456789"
	dir := t.TempDir()
	n := newTestNode(t, configs.Admin{StateDir: dir})
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	access := Access{Token: func() []byte { return []byte(token) }, Node: n}
	mux := http.NewServeMux()
	mux.Handle("POST /api/drain", access.Write(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		Describe(r.Context(), "drain", "edge-1")
		w.WriteHeader(http.StatusAccepted)
		w.Write(bytes.Repeat([]byte("x"), 64<<10))
		<-release
	})))
	base := "http://" + serveMux(t, mux).Addr().String()
	req, _ := http.NewRequest(http.MethodPost, base+"/api/drain", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	c := &http.Client{Timeout: 30 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	first := make([]byte, 1)
	if _, err := io.ReadFull(resp.Body, first); err != nil {
		t.Fatal(err)
	}
	inMemory := false
	for _, r := range n.Audit.List(10) {
		inMemory = inMemory || r.Action == "drain" && r.Result == http.StatusAccepted
	}
	file, _ := os.ReadFile(filepath.Join(dir, auditFile))
	onDisk := strings.Contains(string(file), `"action":"drain"`)
	t.Logf("at the answer's first byte: record in memory %v, on disk %v", inMemory, onDisk)
	if !inMemory || !onDisk {
		t.Error("the answer went out before its audit record")
	}
}
