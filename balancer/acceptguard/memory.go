package acceptguard

import (
	"context"
	"log/slog"
	"math"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"time"
)

// Memory pressure. Every buffer of a node has its bound, and their sums
// have theirs (connections, send queues, messages arriving, histories), but
// those are sized in a config file, not against the memory the process
// has: budgets sized for a large machine, run in a small container, let a
// client make the process grow until the kernel kills it — every session
// and tunnel with it. So the process's memory limit (the Go runtime's:
// GOMEMLIMIT, which a node derives from its cgroup's limit when the
// environment sets none) is watched, and near it a node degrades instead:
// listeners refuse new connections, an edge sheds the largest holders (a
// participant that does not read, a message too large to make room for)
// and relays the rest — as HAProxy refuses connections it cannot allocate
// for under its -m limit, and Envoy's overload manager stops accepting.
const (
	// memoryLowShare of the limit in use makes the process low on memory,
	// and it stays low until use falls below memoryRecoveredShare: room
	// above for what is already being allocated (the runtime's garbage
	// collector works to keep the process under the limit itself), and a
	// gap below so that one connection closing does not flip it back.
	memoryLowShare       = 0.90
	memoryRecoveredShare = 0.80
	// memoryEvery is how often use is sampled.
	memoryEvery = 50 * time.Millisecond
	// memoryCollectAfter: low, with no garbage collection for this long,
	// the watcher runs one, so that memory given back shows (the live heap
	// is measured by the collector).
	memoryCollectAfter = time.Second
)

// CgroupShare is the share of a memory cgroup's limit that the processes
// in it may hold together, as counted by WatchWithCgroup (and what
// cmd/ringlb derives a process's own limit with): the rest is for what the
// kernel charges the cgroup besides their heaps and stacks (socket
// buffers, page cache) and for the room between the low mark and the
// limit.
const CgroupShare = 0.9

// minLimitShare: however much the cgroup's other processes hold, a
// process's limit is not lowered below this share of its own — below it
// the collector would do little else (it still caps its own work at half
// the CPU).
const minLimitShare = 1.0 / 16

// ReasonMemory is the reason label value of a connection refused while the
// process is low on memory, in each role's rejected-connections counter
// (what operators alert on).
const ReasonMemory = "memory"

// Log messages, stable so operators can alert on them.
const (
	msgLowMemory       = "low on memory: refusing new connections and shedding the largest holders"
	msgMemoryRecovered = "memory recovered: accepting connections again"
	msgRefusedMemory   = "connection refused: low on memory"
	msgLimitShared     = "memory limit lowered: other processes of the memory cgroup hold memory"
	msgLimitOwn        = "memory limit back to the process's own"
)

// Memory says whether the process is low on memory. The zero value (and
// nil) never is: only Watch makes it follow the process.
type Memory struct {
	limit     atomic.Int64 // the runtime's memory limit; 0: not watched
	low       atomic.Bool
	untracked atomic.Int64 // in use, less what the trackers counted (sample)

	trackMu  sync.Mutex
	trackers atomic.Pointer[[]*tracker]
}

type tracker struct{ bytes func() int64 }

// Process is the memory of this process: what its listeners and budgets
// consult. cmd/ringlb watches it; in a test binary it is never low.
var Process = &Memory{}

// Low reports whether the process is low on memory (as of the last sample).
func (m *Memory) Low() bool { return m != nil && m.low.Load() }

// LowFor reports whether the process is low on memory, or would be with n
// more bytes counted by a tracker: fresh for what the trackers count (the
// large buffers a client can make a node allocate), where Low is as of the
// last sample.
func (m *Memory) LowFor(n int64) bool {
	if m == nil {
		return false
	}
	limit := m.limit.Load()
	if limit == 0 {
		return false
	}
	return m.low.Load() || m.untracked.Load()+m.tracked()+n >= LowMemoryMark(limit)
}

// Track adds bytes, a count of buffers the caller holds (read at any time,
// from any goroutine), to what LowFor counts fresh; untrack removes it.
func (m *Memory) Track(bytes func() int64) (untrack func()) {
	t := &tracker{bytes: bytes}
	m.trackMu.Lock()
	defer m.trackMu.Unlock()
	list := append(m.trackerList(), t)
	m.trackers.Store(&list)
	return func() {
		m.trackMu.Lock()
		defer m.trackMu.Unlock()
		var kept []*tracker
		for _, o := range m.trackerList() {
			if o != t {
				kept = append(kept, o)
			}
		}
		m.trackers.Store(&kept)
	}
}

func (m *Memory) trackerList() []*tracker {
	if p := m.trackers.Load(); p != nil {
		return *p
	}
	return nil
}

func (m *Memory) tracked() int64 {
	var n int64
	for _, t := range m.trackerList() {
		n += t.bytes()
	}
	return n
}

// LowMemoryMark is the memory in use, of limit, from which the process is low.
func LowMemoryMark(limit int64) int64 { return int64(float64(limit) * memoryLowShare) }
func recoveredMark(limit int64) int64 { return int64(float64(limit) * memoryRecoveredShare) }

// Watch follows the process's memory against the runtime's memory limit
// until ctx ends; it returns at once when the process has none. Call it
// once, after the limit is set.
func (m *Memory) Watch(ctx context.Context, log *slog.Logger) { m.watch(ctx, log, false) }

// WatchWithCgroup is Watch for a process that shares its memory cgroup:
// two processes of one unit during a hitless upgrade (the new one started
// by the old), or any other process beside it. Each took its limit as if
// it were alone — 90 % of the cgroup's — so together they could pass the
// cgroup's limit, and the kernel kills one of them, neither near its own.
// So what the cgroup's other processes hold (its anonymous memory less
// this process's) comes out of this one's limit: the runtime's limit is
// brought down to CgroupShare of the cgroup's limit less that, never above
// the limit it was given, and back up as they give it back; the low mark
// follows it, and the collector keeps the process under it. Without a
// cgroup limit (or off Linux) it is Watch.
func (m *Memory) WatchWithCgroup(ctx context.Context, log *slog.Logger) { m.watch(ctx, log, true) }

func (m *Memory) watch(ctx context.Context, log *slog.Logger, withCgroup bool) {
	limit := debug.SetMemoryLimit(-1)
	if limit <= 0 || limit == math.MaxInt64 {
		return
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := memorySampler{m: m, limit: limit, own: limit, log: log}
	if withCgroup {
		cg, err := openCgroup()
		if err != nil {
			log.Warn("memory cgroup not read: the memory its other processes hold is not counted", "err", err)
		}
		if cg != nil {
			defer cg.close()
			s.cg = cg
			log.Info("memory limit shared with the memory cgroup's other processes", "cgroups", cg.dirs(), "share", CgroupShare)
		}
	}
	m.limit.Store(limit)
	defer func() {
		m.limit.Store(0)
		m.low.Store(false)
		if s.limit != s.own {
			debug.SetMemoryLimit(s.own)
		}
	}()
	tick := time.NewTicker(memoryEvery)
	defer tick.Stop()
	for {
		s.sample(time.Now())
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// memorySampler is Watch's state between samples.
type memorySampler struct {
	m *Memory
	// limit is the runtime's limit now: own, less what the cgroup's other
	// processes hold (cg).
	limit, own  int64
	cg          *cgroup
	log         *slog.Logger
	samples     [len(memoryMetrics)]metrics.Sample
	cycles      uint64
	cycleAt     time.Time // when cycles last changed
	trackedAtGC int64     // the trackers' count when cycles last changed
}

// The runtime's figures a sample reads. In use is the live heap (measured
// by the last garbage collection) and what the runtime holds besides heap
// objects (stacks, its own metadata): the heap's free and unused spans and
// the garbage not yet collected are room the collector makes use of
// before the limit, not use.
var memoryMetrics = [...]string{
	"/gc/heap/live:bytes",
	"/memory/classes/total:bytes",
	"/memory/classes/heap/released:bytes",
	"/memory/classes/heap/free:bytes",
	"/memory/classes/heap/objects:bytes",
	"/memory/classes/heap/unused:bytes",
	"/gc/cycles/total:gc-cycles",
}

func (s *memorySampler) sample(now time.Time) {
	if s.cg != nil {
		s.shareCgroup()
	}
	if s.samples[0].Name == "" {
		for i, name := range memoryMetrics {
			s.samples[i].Name = name
		}
	}
	metrics.Read(s.samples[:])
	var v [len(memoryMetrics)]uint64
	for i, smp := range s.samples {
		if smp.Value.Kind() == metrics.KindUint64 {
			v[i] = smp.Value.Uint64()
		}
	}
	live, total, released, free, objects, unused, cycles := v[0], v[1], v[2], v[3], v[4], v[5], v[6]
	nonHeap := int64(total - released - free - objects - unused)
	// The live heap is as of the last collection, the trackers' counts are
	// now: what the live heap holds of theirs is their count when it was
	// measured, taken as the count at the first sample after it. Off by
	// what changed in between: what they took then is missed until the
	// next collection (at most a sampling interval's worth of buffers),
	// what they gave back is counted twice until the next collection —
	// while low, one is forced within memoryCollectAfter.
	tracked := s.m.tracked()
	if cycles != s.cycles {
		s.cycles, s.cycleAt, s.trackedAtGC = cycles, now, tracked
	}
	untracked := max(int64(live)-s.trackedAtGC, 0) + nonHeap
	s.m.untracked.Store(untracked)
	use := untracked + tracked
	switch low := s.m.low.Load(); {
	case !low && use >= LowMemoryMark(s.limit):
		s.m.low.Store(true)
		s.log.Warn(msgLowMemory, "in_use", use, "limit", s.limit)
	case low && use < recoveredMark(s.limit):
		s.m.low.Store(false)
		s.log.Info(msgMemoryRecovered, "in_use", use, "limit", s.limit)
	case low && now.Sub(s.cycleAt) >= memoryCollectAfter:
		// Low and idle: only a collection shows what was given back.
		runtime.GC()
		s.cycleAt = now
	}
}

// shareCgroup brings the runtime's limit to the room the cgroup leaves this
// process (WatchWithCgroup). Changes under 1/64 of the process's own limit
// are let be, but the way back to it: the runtime retunes its collector on
// every change.
func (s *memorySampler) shareCgroup() {
	room, cgLimit, ok := s.cg.read(CgroupShare)
	if !ok {
		return
	}
	limit := min(s.own, max(room, int64(float64(s.own)*minLimitShare)))
	if d := limit - s.limit; limit == s.limit || (limit != s.own && max(d, -d) < s.own/64) {
		return
	}
	was := s.limit
	s.limit = limit
	debug.SetMemoryLimit(limit)
	s.m.limit.Store(limit)
	others := int64(CgroupShare*float64(cgLimit)) - room
	switch {
	case limit == s.own:
		s.log.Info(msgLimitOwn, "limit", limit, "cgroup_limit", cgLimit, "others", others)
	case was == s.own:
		s.log.Warn(msgLimitShared, "limit", limit, "own_limit", s.own, "cgroup_limit", cgLimit, "others", others)
	}
}
