package balancer

import (
	"bufio"
	"bytes"
	"encoding/json"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ringlb/ringlb/configs"
)

// With no path the access log writes to stderr, which it shares with the
// process log: two writers on one pipe, which keeps a write whole only up to
// PIPE_BUF (4096 bytes), while the access log writes up to 64 KiB at once.
// Lines stay whole because both write through the one *os.File (os.Stderr),
// whose writes Go serializes whole (the descriptor's write lock is held
// until a write is done, however often the pipe fills meanwhile). Here both
// write to one pipe read slowly; every line read must be whole: an access
// log line (JSON) or a process log line.
func TestAccessLogToStderrKeepsLinesWhole(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	reg := prometheus.NewRegistry()
	a, err := newAccessLog(reg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	a.stderr = w
	if err := a.apply(configs.AccessLog{Enabled: true, Sample: 1}); err != nil {
		t.Fatal(err)
	}

	const accessLines, processLines = 4000, 4000
	processLine := []byte(`{"level":"INFO","msg":"the process log's own line"}` + "\n")
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { // the access log, as the data path feeds it
		defer wg.Done()
		e := accessEntry{at: time.Now(), kind: accessTunnel, status: 101, closeReason: "client"}
		e.setEdge([]byte("edge-1"))
		for range accessLines {
			a.enqueue(&e)
			for len(a.entries) > accessQueue/2 {
				time.Sleep(time.Millisecond) // this test counts whole lines, not drops
			}
		}
	}()
	go func() { // the process log, one write a line
		defer wg.Done()
		for range processLines {
			if _, err := w.Write(processLine); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	// Read slowly, so that the pipe stays full and writes wait on it.
	var got []byte
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			n, err := r.Read(buf)
			got = append(got, buf[:n]...)
			if err != nil {
				return
			}
			time.Sleep(50 * time.Microsecond)
		}
	}()
	wg.Wait()
	a.close()
	w.Close()
	<-done

	broken, access, process := 0, 0, 0
	sc := bufio.NewScanner(bytes.NewReader(got))
	for sc.Scan() {
		line := sc.Bytes()
		switch {
		case bytes.Equal(append(line, '\n'), processLine):
			process++
		case json.Valid(line) && bytes.Contains(line, []byte(`"type":"tunnel"`)):
			access++
		default:
			if broken == 0 {
				t.Logf("first broken line: %.200q", line)
			}
			broken++
		}
	}
	t.Logf("lines read: %d access, %d process, %d broken (%d bytes)", access, process, broken, len(got))
	if broken != 0 || access != accessLines || process != processLines {
		t.Errorf("lines: %d access of %d, %d process of %d, %d broken: stderr's writers split each other's lines",
			access, accessLines, process, processLines, broken)
	}
}
