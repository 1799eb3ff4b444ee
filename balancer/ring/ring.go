// Package ring is ringlb's consistent ring of edges: bounded-load consistent
// hashing (buraksezer/consistent over xxhash) frozen into immutable snapshots.
//
// Balancers route with it and edges check ownership with it, so both must
// compute the same owner for every key from the same member set, whatever the
// order members joined in. It knows nothing of gossip or HTTP: callers feed it
// member lists (see Follow).
package ring

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/cespare/xxhash/v2"
)

// Member is one edge on the ring.
type Member struct {
	Name string
	// URL is how a balancer reaches the edge, e.g. http://10.0.0.11:7101.
	URL string
	// Weight scales the edge's share of partitions; 0 or less counts as 1.
	Weight int
}

// Config holds the parameters of bounded-load consistent hashing.
type Config struct {
	// Partitions is the number of slots keys hash into; a prime spreads keys
	// evenly. More partitions mean finer balance and a larger table.
	Partitions int
	// Replication is the number of points each member has on the circle.
	Replication int
	// Load bounds the busiest member to Load × the mean partition count.
	Load float64
	// MaxPoints bounds the places on the circle, the members' total weight
	// × Replication (configs.MaxRingPoints in ringlb); 0 leaves it
	// unbounded. See fit.
	MaxPoints int
	// Logger says when the members' weights are scaled to MaxPoints; nil
	// says nothing.
	Logger *slog.Logger `json:"-"`
}

// DefaultConfig returns the measured defaults (TestDefaultConfigMeasurement,
// worst over three member naming schemes): with 3 edges the busiest holds
// ≤ 1.05× the mean, going from 3 to 4 edges moves ≤ 1.03× the ideal quarter
// of keys, and removing any one of 10 edges moves ≤ 1.12× the ideal tenth.
// Replication 100 moved up to 1.29× the ideal tenth on removal, and 200 up
// to 1.16×; 400 points per edge cost ~4× the rebuild time of 100 (milliseconds
// for tens of edges), paid only when membership changes.
func DefaultConfig() Config {
	return Config{Partitions: 7919, Replication: 400, Load: 1.05}
}

// Validate reports every parameter out of range at once.
func (c Config) Validate() error {
	var errs []error
	if c.Partitions < 1 || c.Partitions > 1<<20 {
		errs = append(errs, fmt.Errorf("ring.partitions must be in range [1, %d], got %d", 1<<20, c.Partitions))
	}
	if c.Replication < 1 || c.Replication > 10000 {
		errs = append(errs, fmt.Errorf("ring.replication must be in range [1, 10000], got %d", c.Replication))
	}
	// consistent panics ("not enough room to distribute partitions") when the
	// load bound leaves no slack, so Load must be above 1.
	if !(c.Load > 1.0) || c.Load > 10 {
		errs = append(errs, fmt.Errorf("ring.load must be in range (1.0, 10], got %g", c.Load))
	}
	return errors.Join(errs...)
}

// Ring holds the current snapshot. Lookups read it with one atomic load and
// never lock; Update builds a new snapshot and swaps it in.
type Ring struct {
	cfg     Config
	mu      sync.Mutex // serializes Update
	current atomic.Pointer[Snapshot]
}

// New returns an empty ring. An invalid cfg is replaced field by field with
// DefaultConfig's values; validate configuration before (configs does).
func New(cfg Config) *Ring {
	def := DefaultConfig()
	if cfg.Partitions < 1 || cfg.Partitions > 1<<20 {
		cfg.Partitions = def.Partitions
	}
	if cfg.Replication < 1 {
		cfg.Replication = def.Replication
	}
	if !(cfg.Load > 1.0) {
		cfg.Load = def.Load
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	r := &Ring{cfg: cfg}
	r.current.Store(&Snapshot{cfg: cfg, partitions: uint64(cfg.Partitions), load: cfg.Load})
	return r
}

// Snapshot returns the current immutable snapshot.
func (r *Ring) Snapshot() *Snapshot { return r.current.Load() }

// Locate returns the owner of key in the current snapshot.
func (r *Ring) Locate(key []byte) (Member, bool) { return r.current.Load().Locate(key) }

// Update makes members the ring's member set. The order of members does not
// matter. An unchanged set returns the current snapshot without a new version,
// so gossip noise does not churn the ring.
func (r *Ring) Update(members []Member) *Snapshot {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.update(members)
}

// Rebuild is Update(members()) with members read under the lock that
// serializes updates. Callers that rebuild from the membership as it is
// now (a balancer's static monitors, its gossip follower, a reload) then
// each apply a view no older than the one applied before them: read first,
// a view read before another caller's rebuild was applied after it, and
// the ring stayed on a stale membership until the next change.
func (r *Ring) Rebuild(members func() []Member) *Snapshot {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.update(members())
}

// update is Update with r.mu held.
func (r *Ring) update(members []Member) *Snapshot {
	norm := normalize(members)
	cfg, announced := fit(r.cfg, norm)
	cur := r.current.Load()
	if slices.Equal(cur.members, norm) && cur.cfg.Replication == cfg.Replication {
		return cur
	}
	next := build(cfg, norm, cur.version+1, newFamily(norm), nil)
	next.announced = announced
	switch {
	case announced > 0:
		r.cfg.Logger.Warn("the ring's edges weigh more than the circle holds: weights scaled down",
			"version", next.version, "edges", len(norm), "weight", announced, "replication", r.cfg.Replication,
			"max_points", r.cfg.MaxPoints, "placed_weight", totalWeight(norm), "placed_replication", cfg.Replication)
	case cur.announced > 0:
		r.cfg.Logger.Info("the ring's edges fit the circle again: weights as announced", "version", next.version, "edges", len(norm))
	}
	r.current.Store(next)
	return next
}

// fit holds the places on the circle, members' total weight ×
// Replication, to cfg.MaxPoints: configs bounds the static edges' so
// (configs.MaxRingPoints), but gossip's edges come in any number, each
// announcing its own weight, and every unit of weight is Replication
// places, 16 bytes each, hashed, sorted and walked by every balancer and
// edge at every membership change. A key holder announcing 500 edges of
// weight 10 made 2 million places, 2.3 s and 31 MB a rebuild at the
// default partitions; 10,000 such edges at 1<<20 partitions would be 40
// million, 640 MB of circle alone (TestRingPointsAreBounded). Past the bound, weights are scaled down,
// weight 1 kept and heavier kept heavier; with more members than fit at
// weight 1, each is weight 1 and Replication is lowered. It depends only
// on the member set, so every node fed the same set builds the same ring.
// It scales members' weights in place and returns the config to build
// with and the members' total weight as announced, or 0 when they fit.
func fit(cfg Config, members []Member) (Config, int) {
	total := totalWeight(members)
	// Compared by division: total × Replication may overflow.
	room, n := cfg.MaxPoints/cfg.Replication, len(members)
	if cfg.MaxPoints <= 0 || total <= room {
		return cfg, 0
	}
	if n > room {
		for i := range members {
			members[i].Weight = 1
		}
		cfg.Replication = max(1, cfg.MaxPoints/n)
		return cfg, total
	}
	// Each weight's units beyond the first shrink alike, so the total is
	// at most n + (room-n) = room.
	for i := range members {
		members[i].Weight = 1 + (members[i].Weight-1)*(room-n)/(total-n)
	}
	return cfg, total
}

// MaxWeight caps a member's weight. Weights arrive in gossip metadata, and
// every unit of weight is Replication more points for consistent to place and
// sort, so an unbounded weight from one node could stall every balancer's
// rebuild. ringlb holds edges to a smaller weight (configs.MaxEdgeWeight,
// in its files and in what gossip is believed of); this bounds what any
// other caller hands the ring, and fit bounds the ring as a whole.
const MaxWeight = 100

// normalize sorts by name, keeps one member per name (the least by URL, then
// weight: a rule that does not depend on input order, so balancers fed the
// same duplicates agree) and clamps weights to [1, MaxWeight].
func normalize(members []Member) []Member {
	out := make([]Member, 0, len(members))
	for _, m := range members {
		m.Weight = min(max(m.Weight, 1), MaxWeight)
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b Member) int {
		if c := strings.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		if c := strings.Compare(a.URL, b.URL); c != 0 {
			return c
		}
		return a.Weight - b.Weight
	})
	return slices.CompactFunc(out, func(a, b Member) bool { return a.Name == b.Name })
}

// pointName names unit w of a member for consistent, which hashes
// name+decimal(replica) for each replica. Plain names collide there:
// "edge-1" replica 10 and "edge-11" replica 0 both hash "edge-110", so with
// eleven or more edges named edge-N, edge-1 silently lost most of its points
// to edge-1x (measured: 0.11× its fair share among 20 edges). The length
// prefix and the closing ':' make every (name, unit, replica) string distinct.
func pointName(name string, w int) string {
	return strconv.Itoa(len(name)) + ":" + name + "#" + strconv.Itoa(w) + ":"
}

// build builds the snapshot of members. With c (the circle of a set of
// members that holds them all: its family's, for Without) the partitions
// are walked on c, passing over the others' points, instead of on a circle
// of their own hashed and sorted again: the same circle less those points,
// so the same owners (TestWithoutMatchesBuild), at the cost of the walk
// alone.
func build(cfg Config, members []Member, version uint64, fam *family, c *circle) *Snapshot {
	s := &Snapshot{cfg: cfg, version: version, members: members, partitions: uint64(cfg.Partitions), load: cfg.Load, fam: fam}
	if len(members) == 0 {
		return s
	}
	s.owners, s.load = distribute(cfg, members, pointsOf(members), c)
	counts := make([]int, len(members))
	for _, idx := range s.owners {
		counts[idx]++
	}
	s.shares = make(map[string]float64, len(members))
	for i, m := range members {
		s.shares[m.Name] = float64(counts[i]) / float64(cfg.Partitions)
	}
	return s
}

// totalWeight is the members' weights summed: their points on the
// circle (pointsOf), each at Replication places.
func totalWeight(members []Member) int {
	total := 0
	for _, m := range members {
		total += m.Weight
	}
	return total
}

// pointsOf returns members' points: a member of weight w is w points, so
// a heavier edge owns proportionally more partitions.
func pointsOf(members []Member) []point {
	var points []point
	for i, m := range members {
		for w := range m.Weight {
			points = append(points, point{name: pointName(m.Name, w), member: int32(i)})
		}
	}
	return points
}

// point is one unit of a member's weight: a consistent member.
type point struct {
	name   string // pointName
	member int32  // index into Snapshot.members
}

// vnode is one of a point's Replication places on the circle.
type vnode struct {
	hash  uint64
	point int32 // index into points
}

// distribute returns the owner (index into members) of every partition and
// the load bound it achieved. It places partitions exactly as
// consistent.New(points, …) followed by GetPartitionOwner does
// (TestPlacementMatchesConsistent), so every ringlb release agrees on every
// owner, but builds the circle once: consistent re-sorts its whole circle
// after adding each member, which made a ring of 1000 edges take 20 s or more
// to build and one of 1000 edges of weight 10 never finish.
//
// consistent's bounded-load walk finds no member with room always when
// there are more points than partitions, or a single member with
// replication 1, and occasionally with very few points. Config.Validate
// keeps load above 1, which rules out the common case; for the rest the
// load bound is relaxed (doubled, up to three times) and, failing that,
// partitions go to the point of highest random weight without a bound.
// Every balancer takes the same path for the same member set, so they
// still agree on every owner.
func distribute(cfg Config, members []Member, points []point, c *circle) ([]int32, float64) {
	owners := make([]int32, cfg.Partitions)
	// With more points than partitions consistent's bound (see walk) is 0
	// whatever the load: no walk can succeed, so none is tried.
	if cfg.Partitions >= len(points) {
		if c == nil {
			c, _ = newCircle(cfg, members, points)
		}
		keep := c.indexes(members)
		loads := make([]int, len(c.points))
		load := cfg.Load
		for range 4 {
			if walk(load, c, keep, len(points), loads, owners) {
				return owners, load
			}
			load *= 2
		}
	}
	// rendezvous(partition, point name): the bytes it hashes laid out
	// once and only the partition rewritten: one hash call per pair, as
	// there are partitions × points of them.
	inputs := make([][]byte, len(points))
	for i, pt := range points {
		in := binary.LittleEndian.AppendUint64(make([]byte, 8, 16+len(pt.name)), 8)
		inputs[i] = append(in, pt.name...)
	}
	for p := range owners {
		var best uint64
		for i, in := range inputs {
			binary.LittleEndian.PutUint64(in, uint64(p))
			if score := xxhash.Sum64(in); i == 0 || score > best {
				best, owners[p] = score, points[i].member
			}
		}
	}
	return owners, 0
}

// circle is consistent's circle of a member set (makeCircle) and where
// each partition's walk starts on it. A ring version's family keeps its
// own once a ring without some of its members is asked for (Without), and
// every such ring is walked on it: a joining edge asks for the ring
// without each member in turn (sessions' previousOwners), and hashing and
// sorting a circle for each made 300 edges' rings take 11 s and 1000
// edges' 147 s; walking this one, 84 ms and 0.5 s for all
// (TestWithoutEveryMemberCost).
type circle struct {
	replication int
	members     []Member // sorted by name; the points' members index them
	points      []point
	vnodes      []vnode
	start       []int32 // partition → the first vnode at or past its hash
}

// newCircle returns the circle of members' points. shared reports hashes
// held by two vnodes: makeCircle gives both the last one's point, which a
// ring without that point's member would not, so such a circle is walked
// only for members as a whole (Without builds the rest from scratch).
func newCircle(cfg Config, members []Member, points []point) (c *circle, shared bool) {
	c = &circle{replication: cfg.Replication, members: members, points: points}
	c.vnodes, shared = makeCircle(cfg.Replication, points)
	c.start = make([]int32, cfg.Partitions)
	var pid [8]byte
	for p := range c.start {
		binary.LittleEndian.PutUint64(pid[:], uint64(p))
		key := xxhash.Sum64(pid[:])
		idx, _ := slices.BinarySearchFunc(c.vnodes, key, func(v vnode, k uint64) int { return cmp.Compare(v.hash, k) })
		if idx >= len(c.vnodes) {
			idx = 0
		}
		c.start[p] = int32(idx)
	}
	return c, shared
}

// indexes maps each of c's members to its index in members (sorted by
// name, all of them c's), or -1 for those left out.
func (c *circle) indexes(members []Member) []int32 {
	keep := make([]int32, len(c.members))
	j := 0
	for i, m := range c.members {
		keep[i] = -1
		if j < len(members) && members[j].Name == m.Name {
			keep[i] = int32(j)
			j++
		}
	}
	return keep
}

// makeCircle returns consistent's circle: every point's Replication hashes
// of name+decimal(replica), sorted; shared reports a hash held twice.
func makeCircle(replication int, points []point) (circle []vnode, shared bool) {
	circle = make([]vnode, 0, len(points)*replication)
	var buf []byte
	for i, pt := range points {
		for r := range replication {
			buf = strconv.AppendInt(append(buf[:0], pt.name...), int64(r), 10)
			circle = append(circle, vnode{hash: xxhash.Sum64(buf), point: int32(i)})
		}
	}
	// consistent maps a hash to the point added last with it (its ring is a
	// map written in add order) but keeps every copy in its sorted set.
	slices.SortStableFunc(circle, func(a, b vnode) int { return cmp.Compare(a.hash, b.hash) })
	for i := len(circle) - 2; i >= 0; i-- {
		if circle[i].hash == circle[i+1].hash {
			circle[i].point = circle[i+1].point
			shared = true
		}
	}
	return circle, shared
}

// walk is consistent's distributePartitions on the circle of the members
// keep names (points of them, each on c Replication times), passing over
// the others' vnodes: each partition goes to the first point clockwise
// from its hash with room under the bound. It reports false where
// consistent panics ("not enough room to distribute partitions").
func walk(load float64, c *circle, keep []int32, points int, loads []int, owners []int32) bool {
	clear(loads)
	// consistent's bound: the integer mean of partitions per point, times
	// load, rounded up.
	bound := math.Ceil(float64(len(owners)/points) * load)
	size := points * c.replication // vnodes on the circle walked
	for p := range owners {
		idx := int(c.start[p])
		for count := 1; ; {
			v := c.vnodes[idx]
			if m := keep[c.points[v.point].member]; m >= 0 {
				if count >= size {
					return false
				}
				if float64(loads[v.point]+1) <= bound {
					loads[v.point]++
					owners[p] = m
					break
				}
				count++
			}
			if idx++; idx >= len(c.vnodes) {
				idx = 0
			}
		}
	}
	return true
}

// Snapshot is one immutable state of the ring.
type Snapshot struct {
	cfg        Config
	version    uint64
	members    []Member // sorted by name
	owners     []int32  // partition → index into members
	partitions uint64
	shares     map[string]float64
	load       float64 // the bound achieved; 0 when none could be (see distribute)
	announced  int     // members' total weight as announced when fit scaled it, else 0

	// without caches the snapshots of this member set less one member
	// (Without), each built on first use; fam bounds them and its mu
	// guards the map and its number (family.maps, from 1).
	fam       *family
	without   map[string]*withoutEntry
	withoutID uint64
}

// withoutBudget bounds the bytes of Without rings that one ring version
// and the rings derived from it keep (ringBytes each). Unbounded, every
// edge a balancer failed to dial before gossip dropped it cost one whole
// ring for as long as the version lasted: 4 MB each at 1<<20 partitions.
// 64 MiB keeps ~2,000 rings of 10 edges at the default 7919 partitions,
// ~400 of 1000 edges, 15 at 1<<20 partitions. Past it rings make room
// for the one asked for (family.add): built for each call alone instead, a
// suspect owner's ring was a whole build on every request routed to it
// while more edges were suspect than the budget keeps rings for.
const withoutBudget = 64 << 20

// family is what a ring version shares with the rings Without derives from
// it, and theirs in turn.
type family struct {
	// mu guards the without maps of the family's rings, the list of
	// their entries and the bytes counted; it is never held across a
	// build.
	mu sync.Mutex
	// left is how many more bytes of Without rings (and the circle) they
	// may keep; kept is what the rings in the list hold of the rest.
	left, kept int64
	// recent heads the list of kept Without rings, the most recently
	// used first: the last is the one evicted.
	recent withoutEntry
	// forgotten are the last rings evicted never asked for again (add),
	// by owner and name; maps numbers the rings' without maps for it.
	forgotten     [forgottenKept]forgottenRing
	nextForgotten int
	maps          uint64
	// building, set by tests, is called before each Without ring is built.
	building func(name string)

	// members are the ring version's, and circle their circle, made by
	// the first Without (circleOnce) and kept while the family lives: nil
	// when of no use (more points than partitions, or shared hashes).
	members    []Member
	circleOnce sync.Once
	circle     *circle
}

// walked returns the family's circle, made on first use, or nil. It is
// kept within the family's budget, as its rings are: 6.5 MB for 1000 edges
// at the defaults; the largest circle (4 million points) does not fit, and
// its Without rings are built from scratch.
func (f *family) walked(cfg Config) *circle {
	f.circleOnce.Do(func() {
		points := totalWeight(f.members)
		size := 16*int64(points)*int64(cfg.Replication) + 4*int64(cfg.Partitions) + 64*int64(points)
		if cfg.Partitions < points || !f.keep(size) {
			return
		}
		if c, shared := newCircle(cfg, f.members, pointsOf(f.members)); !shared {
			f.circle = c
			return
		}
		f.mu.Lock()
		f.left += size
		f.mu.Unlock()
	})
	return f.circle
}

// keep reports whether n bytes fit in what is left, and takes their room
// if so.
func (f *family) keep(n int64) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if n > f.left {
		return false
	}
	f.left -= n
	return true
}

// forgottenKept is how many rings evicted never asked for again add
// remembers: more than the suspect owners asked for in turn, far fewer
// than the rings of a scan that does not fit.
const forgottenKept = 8

// forgottenRing names a ring evicted: its owner's without map and its name.
type forgottenRing struct {
	owner uint64
	name  string
}

// add keeps e, a ring of e.size bytes, in the list, evicting the rings
// used least recently to make room; false, and nothing evicted, when it
// would not fit with every other ring evicted. With f.mu held.
//
// A ring that took the room of one never asked for again since it was
// built goes last in its place, not first: a joining edge asks for the
// ring without each member in turn at every claim (sessions'
// previousOwners), and with more members than rings fit, first in line
// each evicted the ring its next claim asked for first, and every ring
// was walked again at every claim (0.86 s a claim at 1000 edges, where
// keeping the first ones kept walked only the others: 0.21 s). Asked for
// again, it goes first (used), as a suspect owner's ring is, request
// after request. So does one evicted so a moment ago (forgotten): two
// suspect owners asked for in turn each took the other's place last in
// line, and both were built on every request.
func (f *family) add(e *withoutEntry) bool {
	if e.size > f.left+f.kept {
		return false
	}
	last := !slices.Contains(f.forgotten[:], forgottenRing{e.owner, e.name})
	evicted := false
	for f.left < e.size {
		old := f.recent.prev
		evicted = evicted || !old.asked
		f.evict(old)
	}
	f.left -= e.size
	f.kept += e.size
	if last && evicted {
		f.link(e, f.recent.prev)
	} else {
		f.link(e, &f.recent)
	}
	return true
}

// used makes e the most recently used. With f.mu held.
func (f *family) used(e *withoutEntry) {
	e.asked = true
	e.prev.next, e.next.prev = e.next, e.prev
	f.link(e, &f.recent)
}

// link puts e after at in the list. With f.mu held.
func (f *family) link(e, at *withoutEntry) {
	e.prev, e.next = at, at.next
	e.prev.next, e.next.prev = e, e
}

// evict forgets e: later calls for its name build it again. Its ring's
// own Without rings stay in the list until they are evicted in turn.
// With f.mu held.
func (f *family) evict(e *withoutEntry) {
	e.prev.next, e.next.prev = e.next, e.prev
	e.prev, e.next = nil, nil
	delete(e.in, e.name)
	if !e.asked {
		f.forgotten[f.nextForgotten] = forgottenRing{e.owner, e.name}
		f.nextForgotten = (f.nextForgotten + 1) % forgottenKept
	}
	f.left += e.size
	f.kept -= e.size
}

func newFamily(members []Member) *family {
	f := &family{members: members, left: withoutBudget}
	f.recent.prev, f.recent.next = &f.recent, &f.recent
	return f
}

// ringBytes estimates what a snapshot of n members keeps: its partition
// table, its members and its shares.
func ringBytes(cfg Config, n int) int64 {
	return 4*int64(cfg.Partitions) + 128*int64(n)
}

// Without returns the ring of this snapshot's members less the one named
// name — exactly the ring every node builds once gossip has dropped that
// member (with s's weights: where fit scaled them, the set less one may
// scale otherwise) — or s itself when name is not a member. It is built on first use
// and kept within withoutBudget, so later calls cost a map lookup under a
// lock; past the budget the ring used least recently is forgotten to make
// room (family.add; a ring larger than all the budget the circle leaves
// is built for each call). The first build of a ring version makes its
// circle (milliseconds, like any rebuild; seconds
// at the largest rings); the others walk it again (walked), fractions of
// a millisecond. A build holds up only the callers
// of the same name: the others' rings, cached, are on the request path
// (Candidates). The result has s's version.
func (s *Snapshot) Without(name string) *Snapshot {
	i, ok := slices.BinarySearchFunc(s.members, name, func(m Member, n string) int { return strings.Compare(m.Name, n) })
	if !ok {
		return s
	}
	f := s.fam
	f.mu.Lock()
	e := s.without[name]
	if e != nil {
		f.used(e)
	} else {
		if s.without == nil {
			f.maps++
			s.without, s.withoutID = make(map[string]*withoutEntry), f.maps
		}
		e = &withoutEntry{in: s.without, owner: s.withoutID, name: name, size: ringBytes(s.cfg, len(s.members)-1)}
		if f.add(e) {
			s.without[name] = e
		} else {
			e = nil
		}
	}
	f.mu.Unlock()
	if e == nil {
		return s.buildWithout(i)
	}
	e.once.Do(func() { e.ring = s.buildWithout(i) })
	return e.ring
}

// withoutEntry is one cached Without ring, built once by its first caller.
type withoutEntry struct {
	once sync.Once
	ring *Snapshot

	// Under the family's mu: the map that holds it (its snapshot's: not
	// the snapshot, so an evicted ring's own entries, still in the list,
	// keep no evicted ring's partition table alive) and its number, its
	// name there, its bytes (ringBytes), whether it was asked for again
	// once kept, and its place in the family's list.
	in         map[string]*withoutEntry
	owner      uint64
	name       string
	size       int64
	asked      bool
	prev, next *withoutEntry
}

func (s *Snapshot) buildWithout(i int) *Snapshot {
	if f := s.fam.building; f != nil {
		f(s.members[i].Name)
	}
	return build(s.cfg, slices.Delete(slices.Clone(s.members), i, i+1), s.version, s.fam, s.fam.walked(s.cfg))
}

// Version counts real membership changes: 0 for the empty ring at start.
func (s *Snapshot) Version() uint64 { return s.version }

// Len is the number of members.
func (s *Snapshot) Len() int { return len(s.members) }

// Members returns the members sorted by name (a copy: the snapshot stays
// immutable), with the weights placed: scaled down when the set weighs
// more than Config.MaxPoints allows (fit).
func (s *Snapshot) Members() []Member { return slices.Clone(s.members) }

// Load is the load bound the snapshot was built with: the configured one,
// higher when the member set left consistent no room (see distribute), or 0
// when no bound could be kept.
func (s *Snapshot) Load() float64 { return s.load }

// Member returns the member named name.
func (s *Snapshot) Member(name string) (Member, bool) {
	i, ok := slices.BinarySearchFunc(s.members, name, func(m Member, n string) int { return strings.Compare(m.Name, n) })
	if !ok {
		return Member{}, false
	}
	return s.members[i], true
}

// Shares returns the fraction of partitions each member owns.
func (s *Snapshot) Shares() map[string]float64 { return maps.Clone(s.shares) }

// Partition returns the partition key hashes into (same as consistent's FindPartitionID).
func (s *Snapshot) Partition(key []byte) int { return int(xxhash.Sum64(key) % s.partitions) }

// Locate returns the owner of key; ok is false on an empty ring.
func (s *Snapshot) Locate(key []byte) (Member, bool) { return s.LocateHash(xxhash.Sum64(key)) }

// LocateHash is Locate by the key's xxhash, for a caller that keeps hashes
// and not keys (the balancer's live-session table).
func (s *Snapshot) LocateHash(h uint64) (Member, bool) {
	if len(s.members) == 0 {
		return Member{}, false
	}
	return s.members[s.owners[h%s.partitions]], true
}

// Candidates appends to dst the owner of key, then the key's owner on the
// ring without that owner (Without: where the key goes once gossip drops a
// dead owner, so a session that fails over early lands where its later
// participants will be sent too), then every other member in an order that
// depends only on the key and the member set (highest random weight of
// xxhash(key, name)). Every balancer tries the same fallbacks after a failed
// dial. It does not allocate when dst has room, after the first call per
// owner has built its Without ring (kept within withoutBudget).
func (s *Snapshot) Candidates(key []byte, dst []Member) []Member {
	owner, ok := s.Locate(key)
	if !ok {
		return dst
	}
	dst = append(dst, owner)
	var next Member
	if len(s.members) > 1 {
		next, _ = s.Without(owner.Name).Locate(key)
		dst = append(dst, next)
	}
	base := len(dst)
	// Insertion sort by descending score of the first 64 others (member
	// lists are small); any beyond stay in name order.
	var scores [64]uint64
	n := 0
	for _, m := range s.members {
		if m.Name == owner.Name || m.Name == next.Name {
			continue
		}
		dst = append(dst, m)
		if n < len(scores) {
			scores[n] = rendezvous(key, m.Name)
			for j := n; j > 0 && scores[j-1] < scores[j]; j-- {
				scores[j-1], scores[j] = scores[j], scores[j-1]
				dst[base+j-1], dst[base+j] = dst[base+j], dst[base+j-1]
			}
		}
		n++
	}
	return dst
}

func rendezvous(key []byte, name string) uint64 {
	var d xxhash.Digest
	d.Reset()
	d.Write(key)
	var sep [8]byte
	binary.LittleEndian.PutUint64(sep[:], uint64(len(key)))
	d.Write(sep[:])
	d.WriteString(name)
	return d.Sum64()
}

// Follow keeps r in step with a membership source: it applies members() once
// at start and again on every receive from changes, until ctx is done or
// changes is closed. Run it on a goroutine owned by whoever owns changes.
func Follow(ctx context.Context, r *Ring, changes <-chan struct{}, members func() []Member) {
	r.Rebuild(members)
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-changes:
			if !ok {
				return
			}
			r.Rebuild(members)
		}
	}
}
