package main

import (
	"context"
	"encoding/json"
	"encoding/xml"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ringlb/ringlb/bench"
	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/sessions"
)

// startTestEdge runs a relay on a free loopback port and returns its
// ws:// URL.
func startTestEdge(t *testing.T) string {
	t.Helper()
	cfg := configs.Edge{}
	cfg.Provision()
	srv := sessions.New(cfg, "edge-b", "east", nil, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		<-served
	})
	return "ws://" + ln.Addr().String() + "/ws"
}

// Both modes of `bench ws` account for every message against a real edge:
// nothing lost, duplicated or split, and in v1 every seq seen once and
// every msg acked. The drain is a liveness bound: the run ends as soon as
// every message is in, so a busy machine only makes it slower.
func TestBenchWSModes(t *testing.T) {
	url := startTestEdge(t)
	for _, mode := range []string{"raw", "v1"} {
		for _, saturate := range []bool{false, true} {
			o := bench.WSOptions{
				Targets: []string{url}, Sessions: 4, Participants: 3, Rate: 20, Size: 100,
				Duration: 500 * time.Millisecond, Drain: time.Minute, Mode: mode, Saturate: saturate, Window: 8,
			}
			res, err := bench.RunWS(t.Context(), o, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s saturate=%v: %s", mode, saturate, res.Summary())
			if res.ConnsOK != 12 || res.Delivered == 0 || res.Delivered != res.Expected || res.Lost != 0 ||
				res.Duplicated != 0 || res.Reordered != 0 || res.SeqGaps != 0 || res.Unacked != 0 ||
				res.SplitSessions != 0 || res.ClosedEarly != 0 || res.Latency.Samples == 0 {
				t.Errorf("%s saturate=%v: %+v", mode, saturate, res)
			}
		}
	}
}

// `ringlb bench ws|ring` write the JSON and, beside it, a well-formed SVG.
func TestBenchWritesJSONAndSVG(t *testing.T) {
	dir := t.TempDir()
	url := startTestEdge(t)
	for _, args := range [][]string{
		{"bench", "ws", "-url", url, "-sessions", "3", "-participants", "2", "-rate", "10", "-duration", "300ms", "-drain", "500ms", "-mode", "v1", "-json", filepath.Join(dir, "ws.json")},
		{"bench", "ring", "-partitions", "271", "-replication", "20", "-load", "1.25", "-keys", "1000", "-lookup-time", "1ms", "-json", filepath.Join(dir, "ring.json")},
	} {
		var out, errOut strings.Builder
		if code := run(t.Context(), args, &out, &errOut); code != 0 {
			t.Fatalf("%v: exit %d\n%s%s", args, code, out.String(), errOut.String())
		}
		kind := args[1]
		if !strings.HasPrefix(out.String(), kind) {
			t.Errorf("%s summary: %q", kind, out.String())
		}
		var res map[string]any
		data, err := os.ReadFile(filepath.Join(dir, kind+".json"))
		if err != nil || json.Unmarshal(data, &res) != nil {
			t.Fatalf("%s json: %v %s", kind, err, data)
		}
		svg, err := os.ReadFile(filepath.Join(dir, kind+".svg"))
		if err != nil {
			t.Fatal(err)
		}
		dec := xml.NewDecoder(strings.NewReader(string(svg)))
		for {
			if _, err := dec.Token(); err == io.EOF {
				break
			} else if err != nil {
				t.Fatalf("%s.svg: %v", kind, err)
			}
		}
		if !strings.Contains(errOut.String(), "wrote "+filepath.Join(dir, kind+".svg")) {
			t.Errorf("%s: stderr does not name the chart:\n%s", kind, errOut.String())
		}
	}
}

func TestBenchKindsHaveHelp(t *testing.T) {
	for _, c := range benchCommands() {
		var out strings.Builder
		if code := run(t.Context(), []string{"bench", c.name, "-h"}, &out, &out); code != 0 || !strings.Contains(out.String(), "Usage: ringlb bench "+c.name) || !strings.Contains(out.String(), "-svg") {
			t.Errorf("bench %s -h: exit %d\n%s", c.name, code, out.String())
		}
	}
}

// `ringlb bench ring -config FILE` takes the ring of the file's
// cluster.ring, as the nodes do (balancer.ring where it is unset), and
// what -partitions, -replication and -load give beside it wins over the
// file: before, the file silently replaced them, and the help named
// balancer.ring.
func TestBenchRingFlagsGivenWinOverTheConfig(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ name, ring string }{
		{"cluster.ring", "cluster: { bind: 127.0.0.1:7946, ring: { partitions: 211, replication: 50, load: 1.5 } }\n"},
		{"balancer.ring", "cluster: { bind: 127.0.0.1:7946 }\nbalancer: { ring: { partitions: 211, replication: 50, load: 1.5 } }\n"},
	} {
		file := filepath.Join(dir, "ring.yaml")
		writeFile(t, file, tc.ring)
		for _, c := range []struct {
			flags []string
			want  string
		}{
			{nil, "211 partitions, replication 50, load 1.5 "},
			{[]string{"-partitions", "101"}, "101 partitions, replication 50, load 1.5 "},
			{[]string{"-replication", "20", "-load", "1.25"}, "211 partitions, replication 20, load 1.25 "},
		} {
			var out, errOut strings.Builder
			args := append([]string{"bench", "ring", "-config", file, "-edges", "3", "-keys", "1000", "-lookup-time", "1ms"}, c.flags...)
			code := run(t.Context(), args, &out, &errOut)
			if code != 0 || !strings.Contains(out.String(), c.want) {
				t.Errorf("%s, %v: exit %d, want %q in:\n%s%s", tc.name, c.flags, code, c.want, out.String(), errOut.String())
			}
		}
	}
	var help strings.Builder
	run(t.Context(), []string{"bench", "ring", "-h"}, &help, &help)
	if !strings.Contains(help.String(), "cluster.ring") || !strings.Contains(help.String(), "win over the file") {
		t.Errorf("bench ring -h does not say where the file's ring is read, nor that flags win:\n%s", help.String())
	}
}

// `bench ws -saturate` refuses a window it cannot keep, as a usage error,
// before it dials anything. Before, -window -1 panicked (makechan: size out
// of range) once every connection was open, and a window of two billion
// sized an 8 GB slot table per connection.
func TestBenchWSRefusesAWindowOutOfRange(t *testing.T) {
	url := startTestEdge(t)
	for _, window := range []string{"-1", "2000000000"} {
		var out, errOut strings.Builder
		code := run(t.Context(), []string{"bench", "ws", "-url", url, "-sessions", "1", "-participants", "2", "-saturate", "-window", window, "-duration", "200ms"}, &out, &errOut)
		if code != 2 || !strings.Contains(errOut.String(), "window must be in range") {
			t.Errorf("-window %s: exit %d\n%s%s", window, code, out.String(), errOut.String())
		}
	}
}

// `bench ws` that could open no connection at all failed (exit 1, the
// first dial error said), as the scripts' readiness loops (wait_ws in
// bench/peers/ws-compare.sh: "until a WebSocket through PORT reaches a
// backend") take it. Before, it exited 0 with "connections ok=0", so each
// loop returned at its first try, nothing up yet, and the measurement
// began against a front that was not listening.
func TestBenchWSFailsWhenNothingConnects(t *testing.T) {
	var out, errOut strings.Builder
	code := run(t.Context(), []string{"bench", "ws", "-url", "ws://" + freeAddr(t) + "/ws", "-sessions", "1", "-participants", "2", "-rate", "10", "-duration", "200ms", "-drain", "200ms"}, &out, &errOut)
	if code != 1 || !strings.Contains(errOut.String(), "connection refused") || !strings.Contains(out.String(), "connections ok=0 failed=2") {
		t.Errorf("bench ws to a port nobody listens on: exit %d\n%s%s", code, out.String(), errOut.String())
	}
}

// `bench ws` refuses more connections than one process can hold, as a
// usage error, before it sizes anything by them. Before, 100000 sessions
// of 1000 participants (each in range alone) sized an 800 MB table up
// front and then dialled for as long as the run was let.
func TestBenchWSRefusesMoreConnectionsThanAProcessHolds(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	var out, errOut strings.Builder
	code := run(ctx, []string{"bench", "ws", "-url", "ws://" + freeAddr(t) + "/ws", "-sessions", "100000", "-participants", "1000", "-rate", "1", "-duration", "200ms", "-drain", "200ms"}, &out, &errOut)
	if code != 2 || !strings.Contains(errOut.String(), "sessions × participants must be at most") {
		t.Errorf("100000 sessions × 1000 participants: exit %d\n%s%s", code, out.String(), errOut.String())
	}
}
