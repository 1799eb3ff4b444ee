package bench

import (
	"context"
	"strings"
	"testing"
	"time"
)

func TestChaosOptionsValidation(t *testing.T) {
	o := ChaosOptions{Targets: []string{"http://x"}, Sessions: 0, Rate: -1, GuestStay: -time.Second, Duration: 2 * time.Hour}
	o.setDefaults()
	err := o.validate()
	if err == nil {
		t.Fatal("bad options accepted")
	}
	for _, want := range []string{"ws:// or wss://", "sessions must be", "rate must be", "guest stay", "duration must be"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	good := ChaosOptions{Targets: []string{"ws://127.0.0.1:1/ws"}, Sessions: 10}
	good.setDefaults()
	if err := good.validate(); err != nil {
		t.Errorf("defaults refused: %v", err)
	}
}

// newTestChaos is a run with one session of n participants, no sockets:
// the client's protocol handlers and the tally, driven by hand.
func newTestChaos(n int) (*Chaos, *chaosSession) {
	// A rate so low that the senders the welcomes start never send.
	w := &Chaos{opts: ChaosOptions{Sessions: 1, Rate: 1e-6}, start: time.Now(), stopSending: make(chan struct{}), changed: make(chan struct{}, 1)}
	w.ctx, w.cancel = context.WithCancel(context.Background())
	w.phases = []*chaosPhase{newChaosPhase("steady", "", 0)}
	s := &chaosSession{key: "k-0", epochs: map[string]*epochLog{}, where: map[msgID]epochSeq{}}
	w.sessions = []*chaosSession{s}
	for range n {
		w.newClient(s, false).joined = func() {}
	}
	return w, s
}

// TestChaosResumeContract: a participant that resumes pops its own msgs
// from the replay (their acks were lost), keeps the rest to resend, and a
// reset into another epoch counts what it missed of the old one.
func TestChaosResumeContract(t *testing.T) {
	w, s := newTestChaos(2)
	defer w.wg.Wait()
	defer w.cancel()
	a, b := s.clients[0], s.clients[1]
	for _, c := range []*chaosClient{a, b} {
		c.onWelcome(nil, &chaosFrame{Type: "welcome", Participant: "p-" + c.id, Edge: "edge-1", Epoch: "E1", Seq: 0})
	}
	// a sent three msgs; only the first was acked before its connection broke.
	a.unacked = []outMsg{{n: 0}, {n: 1}, {n: 2}}
	a.sentOnConn = 3
	s.sent.Store(3) // as send counts them
	a.onAck(1)
	b.onMsg(&chaosFrame{Type: "msg", Seq: 1, From: "p-" + a.id, Data: []byte(`{"c":"0.0","n":0}`)})
	b.onMsg(&chaosFrame{Type: "msg", Seq: 2, From: "p-" + a.id, Data: []byte(`{"c":"0.0","n":1}`)})
	b.onMsg(&chaosFrame{Type: "msg", Seq: 3, From: "p-" + a.id, Data: []byte(`{"c":"0.0","n":1}`)}) // sequenced twice
	a.disconnected("1012")
	a.sentOnConn = 0 // (no socket here: what goLive sends is not counted)
	// Resume after seq 1: msg n=1 comes back in the replay, twice, up to
	// welcome.seq 3; then a goes live with n=2 still unacked.
	a.onWelcome(nil, &chaosFrame{Type: "welcome", Participant: "p2-" + a.id, Edge: "edge-2", Epoch: "E1", Seq: 3})
	if a.state != stateReplay {
		t.Fatalf("state %d after a resume welcome, want replay", a.state)
	}
	a.onMsg(&chaosFrame{Type: "msg", Seq: 2, From: "p-" + a.id, Data: []byte(`{"c":"0.0","n":1}`)})
	a.onMsg(&chaosFrame{Type: "msg", Seq: 3, From: "p-" + a.id, Data: []byte(`{"c":"0.0","n":1}`)})
	if a.state != stateLive || len(a.unacked) != 1 || a.unacked[0].n != 2 || a.last != 3 {
		t.Fatalf("after the replay: state %d unacked %v last %d; want live, [2], 3", a.state, a.unacked, a.last)
	}
	// The second replayed n=1 is not the oldest unacked any more.
	if a.violations != 1 {
		t.Errorf("violations %d, want 1 (own msg replayed twice)", a.violations)
	}
	// b crashes out of E1 at seq 3 while E1 went on to seq 4; it resets into E2.
	a.sentOnConn = 1 // n=2 resent on the new connection
	a.onAck(4)
	b.disconnected("1006")
	b.onWelcome(nil, &chaosFrame{Type: "welcome", Participant: "p2-" + b.id, Edge: "edge-3", Epoch: "E2", Seq: 0})
	b.onReset(&chaosFrame{Type: "reset", Epoch: "E2", Seq: 0, Reason: "epoch"})
	w.Event("end", "")
	res := w.tally()
	steady := res.Phases[0]
	if steady.DuplicatedSequenced != 1 || steady.LostToReset != 1 || steady.Resets != 1 || steady.SessionsDisconnected != 1 {
		t.Errorf("steady phase %+v; want 1 sequenced twice, 1 lost to 1 reset, 1 session disconnected", steady)
	}
	if res.Sequenced != 4 || res.Lost != 0 || res.SplitSessions != 0 {
		t.Errorf("result %s; want 4 sequenced, nothing lost or split", res.Summary())
	}
	if steady.Resume.Samples != 1 || steady.ResumedOn["edge-2+edge-3"] != 1 {
		t.Errorf("resume %+v on %v; want the session back on edge-2 and edge-3", steady.Resume, steady.ResumedOn)
	}
}

// TestChaosSplitDetection: two epochs of one session sequencing at the same
// time is a split; one after the other (a crash) is not; a gap is lost.
func TestChaosSplitDetection(t *testing.T) {
	for _, tc := range []struct {
		name        string
		second      time.Duration // when E2's msgs start; E1's run 1s–5s
		wantSplit   int
		gapLost     bool
		wantLostSum int64
	}{
		{"one after the other", 6 * time.Second, 0, false, 0},
		{"at once", 3 * time.Second, 1, false, 0},
		{"a gap", 6 * time.Second, 0, true, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, s := newTestChaos(1)
			defer w.cancel()
			for i := range 5 {
				s.record("E1", uint64(i+1), msgID{0, uint32(i)}, time.Duration(i+1)*time.Second)
				s.record("E2", uint64(i+1), msgID{0, uint32(10 + i)}, tc.second+time.Duration(i)*time.Second)
			}
			c := s.clients[0]
			c.welcomed, c.epoch, c.state = true, "E2", stateLive
			c.segments = []segment{{epoch: "E2"}}
			for seq := uint64(1); seq <= 5; seq++ {
				if tc.gapLost && (seq == 2 || seq == 3) {
					continue // never came
				}
				c.advance(seq)
			}
			res := w.tally()
			if res.SplitSessions != tc.wantSplit || res.Lost != tc.wantLostSum {
				t.Errorf("split %d lost %d; want %d, %d (%v)", res.SplitSessions, res.Lost, tc.wantSplit, tc.wantLostSum, res.Phases[0].SplitDetails)
			}
		})
	}
}

func TestChaosScenarioValidation(t *testing.T) {
	do := func(context.Context) error { return nil }
	s := ChaosScenario{
		Options: ChaosOptions{Targets: []string{"ws://127.0.0.1:1/ws"}, Sessions: 1},
		Steps:   []ChaosStep{{Name: "drain", Do: do}, {Name: "drain", Do: do}, {Name: "steady", Do: do}, {Name: "crash"}, {Do: do}},
		Hold:    -time.Second, SettleTimeout: time.Millisecond,
	}
	s.setDefaults()
	err := s.validate()
	if err == nil {
		t.Fatal("bad scenario accepted")
	}
	for _, want := range []string{`step 2: name "drain" is taken`, `step 3: name "steady" is taken`, `step "crash" has no action`, "step 5 has no name", "hold must be", "settle timeout must be"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	// A failed check comes back from Run before anything is dialed.
	if _, err := s.Run(t.Context()); err == nil {
		t.Error("Run accepted the bad scenario")
	}
}

// A scenario's run is bounded by what its script may take, unless told.
func TestChaosScenarioDuration(t *testing.T) {
	do := func(context.Context) error { return nil }
	s := ChaosScenario{Steps: []ChaosStep{{Name: "a", Do: do}, {Name: "b", Do: do}}}
	s.setDefaults()
	want := 3*defaultChaosHold + 2*2*defaultChaosSettleTimeout + s.Options.Quiesce + chaosConnectAllowance
	if s.Options.Duration != want {
		t.Errorf("duration %s, want %s", s.Options.Duration, want)
	}
	s = ChaosScenario{Options: ChaosOptions{Duration: time.Minute}}
	s.setDefaults()
	if s.Options.Duration != time.Minute {
		t.Errorf("duration %s, want the 1m given", s.Options.Duration)
	}
}

func TestNewChaosAdmin(t *testing.T) {
	a, err := NewChaosAdmin([]string{"http://127.0.0.1:9090/", " https://[::1]:9091"}, "")
	if err != nil || a.URLs[0] != "http://127.0.0.1:9090" || a.URLs[1] != "https://[::1]:9091" {
		t.Errorf("good URLs: %v %v", a, err)
	}
	for _, bad := range []string{"127.0.0.1:9090", "ws://127.0.0.1:9090", "http://127.0.0.1:9090/api/ring", "http://"} {
		if _, err := NewChaosAdmin([]string{bad}, ""); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if _, err := NewChaosAdmin(nil, ""); err == nil {
		t.Error("no URL accepted")
	}
}
