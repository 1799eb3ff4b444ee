package sessions

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/ringlb/ringlb/configs"
)

// handoffShapes are hand-off bodies of about 2 MiB (a drain's batch bound),
// as a drain writes them and as a member could shape them to cost the most
// to read: a lost seq's null 400,000 times, 40,000 sessions without history,
// envelopes that are strings of escapes.
func handoffShapes() map[string][]byte {
	const size = 2 << 20
	bodies := map[string][]byte{"drain": encodedBatch(26, 1000).appendJSON(nil)}

	n := size / 5
	nulls := handoffRequest{From: "edge-b", Sessions: []handoffSession{{Key: "k", Epoch: "e", Seq: uint64(n), History: make([]json.RawMessage, n)}}}
	bodies["nulls"] = nulls.appendJSON(nil)

	tiny := handoffRequest{From: "edge-b"}
	for i := range size / 52 {
		tiny.Sessions = append(tiny.Sessions, handoffSession{Key: fmt.Sprintf("k%07d", i), Epoch: "e"})
	}
	bodies["sessions"] = tiny.appendJSON(nil)

	esc := `"` + strings.Repeat(`\u0041`, 1000) + `"`
	escapes := handoffRequest{From: "edge-b", Sessions: []handoffSession{{Key: "k", Epoch: "e", Seq: uint64(size / len(esc))}}}
	for range size / len(esc) {
		escapes.Sessions[0].History = append(escapes.Sessions[0].History, json.RawMessage(esc))
	}
	bodies["escapes"] = escapes.appendJSON(nil)
	return bodies
}

// BenchmarkHandoffReceive: what a new owner spends on one hand-off body
// (serveHandoff): decoding it, then installing its sessions.
func BenchmarkHandoffReceive(b *testing.B) {
	for name, body := range handoffShapes() {
		b.Run(name+"/decode", func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				var req handoffRequest
				if err := json.Unmarshal(body, &req); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(name+"/install", func(b *testing.B) {
			var req handoffRequest
			if err := json.Unmarshal(body, &req); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				b.StopTimer()
				s := New(provisioned(configs.Edge{}), "edge-a", "east", slog.New(slog.DiscardHandler), nil)
				b.StartTimer()
				for _, hs := range req.Sessions {
					s.hub.install(hs, "", goneEdges{})
				}
				// Each server shut down: New tracks its histories in
				// acceptguard.Process, which would count every
				// iteration's (and keep them from the collector) for
				// the rest of the process.
				b.StopTimer()
				if err := s.Shutdown(context.Background()); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		})
	}
}
