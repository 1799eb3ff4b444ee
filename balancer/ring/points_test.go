package ring

import (
	"bytes"
	"log/slog"
	"slices"
	"strings"
	"testing"
)

// points is what s places on its circle: its members' total weight ×
// the replication it was built with.
func points(s *Snapshot) int { return totalWeight(s.members) * s.cfg.Replication }

// TestRingPointsAreBounded: configs holds the static edges' weights ×
// replication to a bound (configs.MaxRingPoints), but gossip's edges come
// in any number, each announcing its own weight, and the ring placed
// them all: every unit of weight is Replication places to hash, sort and
// walk, 16 bytes each, on every balancer and edge at every membership
// change. A key holder announcing thousands of heavy edges made every
// node's rebuild allocate without bound. The ring as a whole is held to
// MaxPoints now: weights scaled down, and the replication too when the
// members alone are more than fit, with a warning saying so.
func TestRingPointsAreBounded(t *testing.T) {
	const maxPoints = 40_000
	heavy := func(n, weight int) []Member {
		ms := members(n)
		for i := range ms {
			ms[i].Weight = weight
		}
		return ms
	}
	mixed := members(40)
	for i := range mixed {
		mixed[i].Weight = 1 + i%3*4 // 1, 5 and 9
	}
	for _, tt := range []struct {
		name    string
		members []Member
		scaled  bool
	}{
		{"within the bound", heavy(5, 10), false},
		{"at the bound", heavy(10, 10), false}, // 10 × 10 × 400
		{"heavy edges", heavy(30, MaxWeight), true},
		{"mixed weights", mixed, true},
		{"more edges than fit", heavy(500, 10), true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			cfg := Config{Partitions: 7919, Replication: 400, Load: 1.05, MaxPoints: maxPoints,
				Logger: slog.New(slog.NewTextHandler(&logs, nil))}
			announced := normalize(tt.members)
			s := New(cfg).Update(tt.members)
			t.Logf("%d edges announcing %d points: %d placed, replication %d; %s", len(tt.members),
				points(&Snapshot{cfg: cfg, members: announced}), points(s), s.cfg.Replication, strings.TrimSpace(logs.String()))
			if s.Len() != len(tt.members) {
				t.Fatalf("%d members on the ring, want all %d", s.Len(), len(tt.members))
			}
			if got := points(s); got > cfg.MaxPoints {
				t.Errorf("%d points on the circle, at most %d", got, cfg.MaxPoints)
			}
			if said := strings.Contains(logs.String(), "level=WARN") && strings.Contains(logs.String(), "max_points="); said != tt.scaled {
				t.Errorf("warned %v, want %v: %q", said, tt.scaled, logs.String())
			}
			if !tt.scaled {
				if !slices.Equal(s.members, announced) || s.cfg.Replication != cfg.Replication {
					t.Error("a ring within its bound was scaled")
				}
				return
			}
			// Heavier stays heavier, and every node fed the same set
			// builds the same ring.
			for i, m := range s.members {
				for j, o := range s.members {
					if in, jn := announced[i].Weight, announced[j].Weight; in > jn && m.Weight < o.Weight {
						t.Fatalf("%s (weight %d) scaled below %s (weight %d)", m.Name, in, o.Name, jn)
					}
				}
			}
			shuffled := slices.Clone(tt.members)
			slices.Reverse(shuffled)
			again := New(cfg).Update(shuffled)
			ks := keys(2000)
			if !slices.Equal(owners(s, ks), owners(again, ks)) {
				t.Error("the same set in another order places keys otherwise")
			}
			// The same set again is no new version: gossip noise does
			// not churn a scaled ring.
			r := New(cfg)
			first := r.Update(tt.members)
			if next := r.Update(shuffled); next != first {
				t.Error("the same set made a new ring version")
			}
		})
	}
}

// TestRingSaysWhenItsEdgesFitAgain: the warning of scaled weights is
// said once per ring version scaled, and its end too.
func TestRingSaysWhenItsEdgesFitAgain(t *testing.T) {
	var logs bytes.Buffer
	r := New(Config{Partitions: 7919, Replication: 400, Load: 1.05, MaxPoints: 40_000,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	heavy := members(30)
	for i := range heavy {
		heavy[i].Weight = MaxWeight
	}
	r.Update(heavy)
	r.Update(heavy)
	r.Update(members(3))
	t.Log(logs.String())
	if n := strings.Count(logs.String(), "level=WARN"); n != 1 {
		t.Errorf("%d warnings for one ring version scaled, want 1", n)
	}
	if !strings.Contains(logs.String(), "level=INFO msg=\"the ring's edges fit the circle again") {
		t.Error("nothing said when the edges fit again")
	}
}
