package operator

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// State files: versioned, replaced whole, private; a torn temporary file
// left by a crash mid-write is never read.
func TestStoreAtomic(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	s, err := OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	type state struct{ Mode string }
	var got state
	if err := s.Load("gslb-pools", &got); !errors.Is(err, ErrNoState) {
		t.Fatalf("load before any save: %v", err)
	}
	if err := s.Save("gslb-pools", state{"remove"}); err != nil {
		t.Fatal(err)
	}
	// A crash while writing the next version leaves its temporary file.
	if err := os.WriteFile(filepath.Join(dir, "gslb-pools.json.tmp"), []byte(`{"version":1,"data":{"Mo`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.Load("gslb-pools", &got); err != nil || got.Mode != "remove" {
		t.Fatalf("load after a torn write: %+v %v", got, err)
	}
	for path, want := range map[string]os.FileMode{dir: dirMode, filepath.Join(dir, "gslb-pools.json"): fileMode} {
		if st, err := os.Stat(path); err != nil || st.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v (%v)", path, st.Mode().Perm(), want, err)
		}
	}
	// Another version is not misread.
	os.WriteFile(filepath.Join(dir, "balancer.json"), []byte(`{"version":2,"data":{}}`), 0o600)
	if err := s.Load("balancer", &got); err == nil || !strings.Contains(err.Error(), "version 2") {
		t.Errorf("a version-2 file: %v", err)
	}
	// Without a directory nothing is kept.
	mem, _ := OpenStore("")
	if err := mem.Save("x", state{"a"}); err != nil || !errors.Is(mem.Load("x", &got), ErrNoState) {
		t.Errorf("memory store: %v", err)
	}
}

// The audit log on disk is bounded (two files of auditFileRecords), memory
// keeps the newest auditMemoryRecords, and a restart reads the records back
// (a torn last line from kill -9 skipped).
func TestAuditLogBoundedAndRestored(t *testing.T) {
	dir := t.TempDir()
	m := newMetrics(prometheus.NewRegistry())
	a := newAuditLog("bal-1", dir, slog.New(slog.DiscardHandler), m)
	// Rotation at 600 records instead of 5000: the same logic, a tenth of
	// the fsyncs.
	const rotateAt = 600
	a.rotateAt = rotateAt
	total := 2*rotateAt + 500
	t0 := time.Unix(1_800_000_000, 0)
	for i := range total {
		a.Add(Record{At: t0.Add(time.Duration(i) * time.Second), Who: "token", Action: "drain", Target: strings.Repeat("x", 1000), Result: 202})
	}
	lines := 0
	for _, name := range []string{auditFile, auditPrevFile} {
		raw, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		lines += strings.Count(string(raw), "\n")
	}
	if lines > 2*rotateAt {
		t.Errorf("%d records on disk after %d, want at most %d", lines, total, 2*rotateAt)
	}
	recs := a.List(auditMemoryRecords + 10)
	if len(recs) != auditMemoryRecords || !recs[0].At.Equal(t0.Add(time.Duration(total-1)*time.Second)) || len(recs[0].Target) != maxRecordField || recs[0].Node != "bal-1" {
		t.Fatalf("memory: %d records, newest %+v", len(recs), recs[0])
	}
	a.close()
	f, _ := os.OpenFile(filepath.Join(dir, auditFile), os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`{"at":"2027-01-01T00:00:00Z","who":"tok`) // torn by a crash
	f.Close()
	b := newAuditLog("bal-1", dir, slog.New(slog.DiscardHandler), m)
	defer b.close()
	if got := b.List(1); len(got) != 1 || !got[0].At.Equal(recs[0].At) {
		t.Fatalf("after a restart the newest record is %+v, want %v", got, recs[0].At)
	}
	// The next record after the torn one reads back whole.
	b.Add(Record{At: t0, Who: "user:alice", Action: "maintenance", Result: 200})
	b.close()
	c := newAuditLog("bal-1", dir, slog.New(slog.DiscardHandler), m)
	defer c.close()
	if got := c.List(1); len(got) != 1 || got[0].Who != "user:alice" {
		t.Fatalf("the record after a torn one: %+v", got)
	}
}
