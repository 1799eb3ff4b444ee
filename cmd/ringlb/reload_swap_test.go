package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/ringlb/ringlb/configs"
)

// lockedBuffer is a log's output, read while the node writes to it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// records are the JSON lines logged so far whose msg is msg.
func (b *lockedBuffer) records(t *testing.T, msg string) []map[string]any {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(b.buf.Bytes()))
	for sc.Scan() {
		var r map[string]any
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("log line %q: %v", sc.Text(), err)
		}
		if r["msg"] == msg {
			out = append(out, r)
		}
	}
	return out
}

// A reload checks the file, the keyring it names included, then applies
// it. The keyring swapped between the two (for one that does not read) made
// the apply read it again and fail after the edge's section had applied:
// the reload answered "failed", the node ran the new section with the old
// keys (half of it). What was checked is what is applied: the keys the
// check read, whatever the file holds by then.
func TestReloadAppliesTheKeyringItChecked(t *testing.T) {
	dir := t.TempDir()
	keyA, keyB := configs.GenerateKey(), configs.GenerateKey()
	keyring, path := filepath.Join(dir, "gossip.key"), filepath.Join(dir, "edge.yaml")
	file := "cluster: { name: edge-1, bind: 127.0.0.1:0, profile: local, secret_key_file: gossip.key }\nedge: { listen: 127.0.0.1:0, admin: 127.0.0.1:0, history: { messages: %d } }\n"
	writeFile(t, keyring, keyA+"\n")
	writeFile(t, path, fmt.Sprintf(file, 100))
	running, err := configs.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	logs := &lockedBuffer{}
	n, err := startEdge(t.Context(), running, slog.New(slog.NewJSONHandler(logs, nil)), false, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		n.stop(ctx)
	})

	// The check: a new history bound and the first step of a key rotation
	// (the new key accepted beside the old).
	writeFile(t, path, fmt.Sprintf(file, 7))
	writeFile(t, keyring, keyA+"\n"+keyB+"\n")
	next, err := configs.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	// Between the check and the apply, the keyring is swapped.
	writeFile(t, keyring, "not a key\n")
	applyErr := n.apply(&logLevel{})(running, next)

	var section []any
	for _, r := range logs.records(t, "configuration reloaded") {
		section = append(section, r["history_messages"])
	}
	var keys []any
	for _, r := range logs.records(t, "gossip keyring reloaded") {
		keys = append(keys, r["keys"])
	}
	t.Logf("apply: err %v; the section applied with history_messages %v; keyring reloaded with %v keys", applyErr, section, keys)
	if applyErr != nil {
		t.Errorf("the apply of a checked config failed: %v", applyErr)
	}
	if fmt.Sprint(section) != "[7]" || fmt.Sprint(keys) != "[2]" {
		t.Errorf("applied: section %v, keyring %v; want [7] and [2] (the section and the keys checked, whole)", section, keys)
	}
}
