package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"
)

// startWithStderrPipe starts bin with stderr to a pipe of the smallest
// size (one page) and reads it until the line with message ready, which it
// returns; then nobody reads the pipe again, as with a supervisor that
// stalled or `ringlb edge 2>&1 | slow-consumer`. It returns the pipe's
// read end (for fillPipe) and its write end, the test's own copy.
func startWithStderrPipe(t *testing.T, bin, ready string, args ...string) (*exec.Cmd, map[string]any, *os.File, *os.File) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	if _, err := unix.FcntlInt(w.Fd(), unix.F_SETPIPE_SZ, os.Getpagesize()); err != nil {
		t.Fatalf("F_SETPIPE_SZ: %v", err)
	}
	cmd := exec.Command(bin, append(args, "-log-format", "json")...)
	cmd.Stderr = w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// The process stops by SIGKILL: with stderr blocked a graceful stop
	// could wait on the log; whether it does is not what this test asks.
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	found := make(chan map[string]any, 1)
	go func() {
		// Byte by byte: nothing past the ready line is taken from the pipe.
		br := bufio.NewReaderSize(r, 16)
		var line []byte
		for {
			c, err := br.ReadByte()
			if err != nil {
				close(found)
				return
			}
			if c != '\n' {
				line = append(line, c)
				continue
			}
			var rec map[string]any
			if json.Unmarshal(line, &rec) == nil && rec["msg"] == ready {
				found <- rec
				return
			}
			line = line[:0]
		}
	}()
	select {
	case rec, ok := <-found:
		if !ok {
			t.Fatalf("%s exited before %q", filepath.Base(bin), ready)
		}
		return cmd, rec, r, w
	case <-time.After(60 * time.Second):
		t.Fatalf("no %q within 60s", ready)
	}
	return nil, nil, nil, nil
}

// fillPipe fills the pipe (the test writes into it too) and waits until it
// is full: from then on every write of the process to stderr blocks.
func fillPipe(t *testing.T, r, w *os.File) {
	t.Helper()
	size, err := unix.FcntlInt(w.Fd(), unix.F_GETPIPE_SZ, 0)
	if err != nil {
		t.Fatal(err)
	}
	// A write that finds the pipe full blocks until the cleanup closes the
	// read end: in a goroutine.
	go w.Write(bytes.Repeat([]byte("x"), size))
	waitFor(t, "stderr's pipe full", func() bool {
		n, err := unix.IoctlGetInt(int(r.Fd()), unix.TIOCINQ)
		return err == nil && n >= size
	})
}

// answers counts the GETs of url that are answered at all, of n, each on
// a new connection (a kept-alive one would not ask the accept loop).
func answers(url string, n int) int {
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	ok := 0
	for range n {
		resp, err := client.Get(url)
		if err != nil {
			continue
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		ok++
	}
	return ok
}

// A node whose stderr nobody reads keeps serving: a log line that cannot be
// written yet waits in a bounded queue (or is dropped and counted), never in
// the goroutine that logs it. Here that goroutine is the data port's accept
// loop, refusing a connection over max_connections: before, with stderr
// blocked, the data port answered none of 20 requests after it.
func TestBlockedStderrKeepsServing(t *testing.T) {
	t.Parallel()
	bin := buildBinary(t)
	cfg := filepath.Join(t.TempDir(), "edge.yaml")
	writeFile(t, cfg, "cluster: { name: edge-1, bind: 127.0.0.1:0, profile: local }\n"+
		"edge: { listen: 127.0.0.1:0, admin: 127.0.0.1:0, drain_timeout: 1s, max_connections: 2, max_direct_per_ip: 2 }\n")
	_, rec, r, w := startWithStderrPipe(t, bin, "edge started", "edge", "-config", cfg)
	listen, admin := rec["listen"].(string), rec["admin"].(string)
	whoami := "http://" + listen + "/whoami"
	if n := answers(whoami, 1); n != 1 {
		t.Fatalf("the data port does not answer before the attack")
	}
	fillPipe(t, r, w)

	// Three connections for two places: the accept loop refuses one (or
	// ends one to make room) and logs it.
	var held []net.Conn
	closed := make(chan struct{}, 3)
	for range 3 {
		c, err := net.Dial("tcp", listen)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
		go func() {
			io.Copy(io.Discard, c)
			closed <- struct{}{}
		}()
	}
	select {
	case <-closed:
	case <-time.After(30 * time.Second):
		t.Log("no connection refused or ended within 30s: the accept loop is stuck")
	}
	for _, c := range held {
		c.Close()
	}

	const tries = 20
	data := answers(whoami, tries)
	adm := answers("http://"+admin+"/healthz", tries)
	t.Logf("with stderr blocked: data port answered %d of %d requests, admin port %d of %d", data, tries, adm, tries)
	if data != tries {
		t.Errorf("data port answered %d of %d requests while stderr was blocked", data, tries)
	}
	if adm != tries {
		t.Errorf("admin port answered %d of %d requests while stderr was blocked", adm, tries)
	}
	if v := scrapeWithin(admin, "ringlb_log_lines_dropped_total"); v < 0 {
		t.Errorf("ringlb_log_lines_dropped_total not exported (%v)", v)
	}

	// Read again, stderr gets the line that waited.
	lines := make(chan string, 64)
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	timeout := time.After(60 * time.Second)
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatal("stderr closed before the refusal's line")
			}
			if strings.Contains(line, "connection refused: max_connections reached") ||
				strings.Contains(line, "connection ended to make room") {
				return
			}
		case <-timeout:
			t.Fatal("the refusal's line did not reach stderr within 60s of reading it again")
		}
	}
}

// scrapeWithin is scrape that reports -2 instead of failing when the admin
// port does not answer.
func scrapeWithin(admin, series string) float64 {
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get("http://" + admin + "/metrics")
	if err != nil {
		return -2
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := bytes.CutPrefix(sc.Bytes(), []byte(series+" ")); ok {
			var f float64
			if json.Unmarshal(v, &f) == nil {
				return f
			}
		}
	}
	return -1
}

// The gslb with its query log on logs every query on the UDP workers: with
// stderr nobody reads, the DNS port answers on and the lines beyond the
// queue are counted as dropped.
func TestBlockedStderrKeepsAnsweringDNS(t *testing.T) {
	t.Parallel()
	bin := buildBinary(t)
	cfg := filepath.Join(t.TempDir(), "gslb.yaml")
	writeFile(t, cfg, `cluster: { name: gslb-1, bind: 127.0.0.1:0, profile: local }
gslb:
  listen: 127.0.0.1:0
  admin: { listen: 127.0.0.1:0 }
  query_log: true
  rate_limit: { responses_per_second: 0 }   # the flood below is one client
  zones: [ { origin: ringlb.test, records: [ "@ 3600 IN SOA ns1 hostmaster 1 7200 3600 1209600 60", "ns1 3600 IN A 127.0.0.1" ] } ]
`)
	_, rec, r, w := startWithStderrPipe(t, bin, "gslb started", "gslb", "-config", cfg)
	server, admin := rec["dns"].(string), rec["admin"].(string)
	fillPipe(t, r, w)
	query := func() bool {
		m := new(dns.Msg)
		m.SetQuestion("ns1.ringlb.test.", dns.TypeA)
		c := &dns.Client{Net: "udp", Timeout: time.Second}
		resp, _, err := c.Exchange(m, server)
		return err == nil && resp.Rcode == dns.RcodeSuccess && len(resp.Answer) == 1
	}
	// Enough queries to fill the log's queue (4,096 lines): a client that
	// gets no answer moves on after its timeout.
	const flood, tries = 6000, 20
	for range flood {
		m := new(dns.Msg)
		m.SetQuestion("ns1.ringlb.test.", dns.TypeA)
		c := &dns.Client{Net: "udp", Timeout: 50 * time.Millisecond}
		c.Exchange(m, server)
		if scrapeWithin(admin, "ringlb_log_lines_dropped_total") > 0 {
			break
		}
	}
	answered := 0
	for range tries {
		if query() {
			answered++
		}
	}
	dropped := scrapeWithin(admin, "ringlb_log_lines_dropped_total")
	t.Logf("with stderr blocked and the query log on: %d of %d queries answered, %v log lines dropped", answered, tries, dropped)
	if answered != tries {
		t.Errorf("the DNS port answered %d of %d queries while stderr was blocked", answered, tries)
	}
	if dropped <= 0 {
		t.Errorf("ringlb_log_lines_dropped_total = %v, want > 0", dropped)
	}
}
