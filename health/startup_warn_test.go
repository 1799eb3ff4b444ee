package health

import (
	"bytes"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"
)

// A member that answers this node's liveness challenges only a few probe
// intervals after it joined — as every member of a cluster starting
// together does, its own view of the others still filling — is no cause for
// a warning: each demo start logged five, one probe interval after each
// join. One that never answers (here: a member that answers memberlist's
// probes and no challenge, as a replay of a node that is gone does, or a
// node of the release before whose UDP is lost on its way to it: it knows
// no challenge over the stream) is warned of, once it has stayed
// unanswered well beyond a start-up.
func TestLateAnswerAtStartUpIsNotWarnedOf(t *testing.T) {
	for _, tt := range []struct {
		name     string
		deafFor  time.Duration // 0: it never answers a challenge
		wantWarn bool
	}{
		{"answers three probe intervals late", 300 * time.Millisecond, false},
		{"never answers", 0, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var warned atomic.Int64
			logs := writerFunc(func(p []byte) (int, error) {
				if bytes.Contains(p, []byte("level=WARN")) && bytes.Contains(p, []byte("does not answer this node's liveness challenges")) {
					warned.Add(1)
				}
				return len(p), nil
			})
			cfg := testCluster("target")
			cfg.SecretKeyFile = writeKey(t, 32)
			target, err := Join(t.Context(), cfg, Meta{Role: RoleBalancer, Region: "east", State: StateAlive},
				slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
			if err != nil {
				t.Fatal(err)
			}
			stopAtCleanup(t, target)

			if tt.deafFor == 0 {
				meta := edgeMeta(1)
				meta.PeerSigning = PeerSigningLive
				startRecordedMember(t, "late", cfg.SecretKeyFile, meta, target.Addr())
				deadline := time.Now().Add(30 * time.Second)
				for warned.Load() == 0 {
					if time.Now().After(deadline) {
						t.Fatal("no warning of a member unanswered for 30 s")
					}
					if hasMember("late")(target.Members()) {
						t.Fatal("a member that never answered was believed")
					}
					time.Sleep(10 * time.Millisecond)
				}
				return
			}
			cutWhenStarted(t, "late", func(cut *cutTransport) {
				cut.deaf.Store(true) // packets to it are lost; its streams work
				// From its start: its Join waits for the target to answer.
				hear := time.AfterFunc(tt.deafFor, func() { cut.deaf.Store(false) })
				t.Cleanup(func() { hear.Stop() })
			})
			lateCfg := testCluster("late", target.Addr())
			lateCfg.SecretKeyFile = cfg.SecretKeyFile
			late, err := Join(t.Context(), lateCfg, edgeMeta(1), nil)
			testHookTransport = nil
			if err != nil {
				t.Fatal(err)
			}
			stopAtCleanup(t, late)
			waitAll(t, []*Membership{target}, hasMember("late"))
			time.Sleep(500 * time.Millisecond) // any warning's time to be written
			if n := warned.Load(); n > 0 {
				t.Fatalf("%d warnings of a member that answered %s after it joined", n, tt.deafFor)
			}
		})
	}
}
