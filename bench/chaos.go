package bench

// The chaos workload: long-lived ringlb.v1 sessions whose participants send,
// reconnect and resume while the cluster under them changes (an edge added,
// drained, killed), with the accounting that tells whether a session split,
// lost or duplicated a message, and whom each change disconnected. It is a
// client of the wire contract only (docs/CONTRACT.md; the resume
// contract is in sessions/README.md, "Drain").

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/fasthttp/websocket"
)

// ChaosOptions describes a chaos workload. Every loop in it is bounded by
// Duration and by the counts here.
type ChaosOptions struct {
	// Targets are ws:// URLs of balancers; each participant starts on one
	// (round-robin) and alternates over them when it reconnects.
	Targets      []string `json:"targets"`
	Sessions     int      `json:"sessions"`
	Participants int      `json:"participants"` // per session, connected for the whole run
	// Rate is msgs per second per participant, each interval jittered ±50%.
	Rate float64 `json:"rate"`
	// GuestStay > 0 gives every session one more participant slot, filled
	// throughout the run by new participants: one joins after up to
	// GuestAway, stays up to GuestStay (sending like the others), leaves,
	// and the next joins after up to GuestAway again.
	GuestStay time.Duration `json:"guest_stay_ns"`
	GuestAway time.Duration `json:"guest_away_ns"`
	// Sources are local addresses to dial from, round-robin over
	// participants (each 127.0.0.x has its own ephemeral ports); empty lets
	// the kernel choose.
	Sources []net.IP `json:"sources,omitempty"`
	// KeyPrefix makes session keys unique per run.
	KeyPrefix string `json:"key_prefix"`
	// Duration bounds the whole run: every goroutine ends by then even if
	// Stop is never called.
	Duration time.Duration `json:"duration_ns"`
	// DialConcurrency bounds connection set-up at the start (default 64).
	DialConcurrency int `json:"dial_concurrency"`
	// Quiesce bounds Stop's wait for the last acks and deliveries once
	// sending has stopped (default 30s): a liveness bound, generous so a
	// busy machine does not end it early; Stop returns as soon as they are in.
	Quiesce time.Duration `json:"quiesce_ns"`
}

func (o *ChaosOptions) setDefaults() {
	if o.Participants == 0 {
		o.Participants = 3
	}
	if o.Rate == 0 {
		o.Rate = 1
	}
	if o.GuestStay > 0 && o.GuestAway == 0 {
		o.GuestAway = o.GuestStay
	}
	if o.KeyPrefix == "" {
		o.KeyPrefix = fmt.Sprintf("chaos-%x", rand.Uint32())
	}
	if o.Duration == 0 {
		o.Duration = 5 * time.Minute
	}
	if o.DialConcurrency == 0 {
		o.DialConcurrency = 64
	}
	if o.Quiesce == 0 {
		o.Quiesce = 30 * time.Second
	}
}

// validateSessions checks what every WebSocket load of this package has:
// targets, sessions and participants per session.
func validateSessions(targets []string, sessions, participants int) []error {
	var errs []error
	if len(targets) == 0 {
		errs = append(errs, errors.New("at least one target URL is required (-url ws://127.0.0.1:8080/ws)"))
	}
	for _, t := range targets {
		if u, err := url.Parse(t); err != nil || (u.Scheme != "ws" && u.Scheme != "wss") {
			errs = append(errs, fmt.Errorf("target %q must be a ws:// or wss:// URL", t))
		}
	}
	if sessions < 1 || sessions > 100000 {
		errs = append(errs, fmt.Errorf("sessions must be in range [1, 100000], got %d", sessions))
	}
	if participants < 1 || participants > 1000 {
		errs = append(errs, fmt.Errorf("participants must be in range [1, 1000], got %d", participants))
	} else if sessions >= 1 && sessions*participants > maxConnections {
		errs = append(errs, fmt.Errorf("sessions × participants must be at most %d (connections of one process), got %d × %d", maxConnections, sessions, participants))
	}
	return errs
}

// maxConnections bounds a run's connections, sessions × participants
// (each bound alone allows 10^8): one process cannot hold more sockets than
// Linux's default nr_open (2^20 descriptors), and a run sizes its tables
// by the product before it dials.
const maxConnections = 1 << 20

func (o *ChaosOptions) validate() error {
	errs := validateSessions(o.Targets, o.Sessions, o.Participants)
	if o.Rate <= 0 || o.Rate > 1000 {
		errs = append(errs, fmt.Errorf("rate must be in range (0, 1000] per participant, got %g", o.Rate))
	}
	if o.GuestStay < 0 || o.GuestAway < 0 {
		errs = append(errs, errors.New("guest stay and away must not be negative"))
	}
	if o.Duration <= 0 || o.Duration > time.Hour {
		errs = append(errs, fmt.Errorf("duration must be in range (0, 1h], got %s", o.Duration))
	}
	if o.DialConcurrency < 1 || o.DialConcurrency > 4096 {
		errs = append(errs, fmt.Errorf("dial concurrency must be in range [1, 4096], got %d", o.DialConcurrency))
	}
	return errors.Join(errs...)
}

// maxResetDetails bounds ChaosPhase.ResetDetails.
const maxResetDetails = 20

// Client timings. Reconnects back off 20–200 ms and alternate balancers
// until one succeeds; a participant gives up after chaosRedialFor of failed
// dials in a row (or chaosMaxRedials of them, whichever comes first, and
// never past the run's end). The bound is generous on purpose: on a busy
// machine an outage lasts longer, and giving up early would turn a slow
// resume into a failed one.
const (
	chaosBackoffMin  = 20 * time.Millisecond
	chaosBackoffMax  = 200 * time.Millisecond
	chaosRedialFor   = 60 * time.Second
	chaosMaxRedials  = 2000
	chaosDialTimeout = 5 * time.Second
	// chaosWriteTimeout bounds a write the server does not read: at a
	// msg a second of ~60 bytes, only a server that stops reading for
	// minutes fills the socket's buffer. A bound of seconds could end a
	// connection for this client's own stall instead (a goroutine
	// descheduled between setting the deadline and writing finds it
	// passed: a "write timeout" disconnect on a machine stalled for
	// seconds, counted against the step).
	chaosWriteTimeout = 30 * time.Second
	// chaosReadTimeout ends a connection that hears nothing, not even the
	// edge's pings (every 30 s).
	chaosReadTimeout = 75 * time.Second
	// chaosLeaveWait bounds how long a leaving guest waits for the acks of
	// what it sent.
	chaosLeaveWait = 3 * time.Second
)

// ChaosResult is the outcome of a run, written as JSON. Counts are per
// phase: the run starts in phase "steady" and each Event starts another.
type ChaosResult struct {
	Options  ChaosOptions  `json:"options"`
	Started  time.Time     `json:"started"`
	Duration time.Duration `json:"duration_ns"`
	// Participants counts every participant of the run, guests included
	// (each guest that joins is a new one).
	Participants int   `json:"participants"`
	GuestJoins   int   `json:"guest_joins"`
	Sent         int64 `json:"messages_sent"`      // distinct msgs the participants sent
	Sequenced    int64 `json:"messages_sequenced"` // distinct (epoch, seq) the run saw
	Delivered    int64 `json:"messages_delivered"` // msgs received from others
	// Totals over the phases; SplitSessions counts a session once.
	SplitSessions int   `json:"split_sessions"`
	Lost          int64 `json:"messages_lost"`
	LostToReset   int64 `json:"messages_lost_to_reset"`
	Abandoned     int64 `json:"messages_abandoned"`
	Duplicated    int64 `json:"messages_duplicated"`
	Resets        int   `json:"resets"`
	// ProtocolViolations: two different msgs seen at one (epoch, seq), a
	// replayed own msg that is not the oldest unacked one, an ack for
	// nothing sent, a frame that is not JSON: the edge broke the protocol,
	// whatever the phase.
	ProtocolViolations int `json:"protocol_violations"`
	// ProtocolViolationDetails describe the first of them (at most 10):
	// what a failed run's log says besides a count.
	ProtocolViolationDetails []string `json:"protocol_violation_details,omitempty"`
	// GaveUp counts participants that could not reconnect within their
	// bounded retries.
	GaveUp      int           `json:"gave_up"`
	Phases      []ChaosPhase  `json:"phases"`
	CheckPoints []CheckPoint  `json:"checkpoints"`
	Quiesced    bool          `json:"quiesced"` // Stop saw every ack and delivery arrive
	QuiesceTime time.Duration `json:"quiesce_time_ns"`
	// Timeline is the progress line's figures, a tick a second.
	Timeline []ChaosTick `json:"timeline"`
	// Scenario is how a ChaosScenario ran the workload (nil when driven by
	// hand).
	Scenario *ChaosScenarioSettings `json:"scenario,omitempty"`
}

// ChaosTick is one progress line.
type ChaosTick struct {
	At          time.Duration `json:"at_ns"`
	Phase       string        `json:"phase"`
	Live        int64         `json:"live"`
	Delivered   int64         `json:"delivered"`
	Disconnects int64         `json:"disconnects"`
	Redials     int64         `json:"redials"`
	Resets      int64         `json:"resets"`
}

// ChaosPhase is what happened from one event to the next. Everything
// belongs to the phase it was seen in, except msgs that a participant in
// the session to the end never got (the phase they were sequenced in) and
// msgs never sequenced (the phase they were sent in).
type ChaosPhase struct {
	Name string        `json:"name"`
	Edge string        `json:"edge,omitempty"` // the edge the event targets
	At   time.Duration `json:"at_ns"`          // since the run started
	// SessionsOnEdge had a participant connected to Edge when the event began.
	SessionsOnEdge int `json:"sessions_on_edge,omitempty"`
	// SplitSessions: sessions split at a check point of this phase
	// (connected participants on different edges or epochs) or whose
	// epochs sequenced msgs at overlapping times here.
	SplitSessions     int `json:"split_sessions"`
	SplitAtCheckPoint int `json:"split_at_checkpoint"`
	SplitByEpoch      int `json:"split_by_epoch"`
	// SplitDetails says, per split session, what was seen.
	SplitDetails []string `json:"split_details,omitempty"`
	// SessionsDisconnected had a participant get a close or error it did
	// not ask for; DisconnectedElsewhere of them had none on Edge at the
	// event.
	SessionsDisconnected  int            `json:"sessions_disconnected"`
	DisconnectedElsewhere int            `json:"disconnected_elsewhere"`
	DisconnectedKeys      []string       `json:"disconnected_keys,omitempty"`
	Closes                map[string]int `json:"closes,omitempty"` // by close code, or how the connection failed (connEndKind)
	// ClientStalls: connections this client ended for its own stall
	// (endClientStalled), in Closes too but not in SessionsDisconnected.
	ClientStalls int `json:"client_stalls,omitempty"`
	// JoinFailures: participants that never got in (every dial failed);
	// DialFailures: dials that failed or ended before a welcome.
	JoinFailures int            `json:"join_failures"`
	DialFailures int            `json:"dial_failures"`
	DialErrors   map[string]int `json:"dial_errors,omitempty"` // by HTTP status, or the error's last words
	Redials      int            `json:"redials"`               // reconnections made
	// ResumeTime is from the event to the last disconnected session having
	// all its participants welcomed again (Resume: the spread over the
	// sessions); Unresumed never got there.
	ResumeTime time.Duration  `json:"resume_time_ns"`
	Resume     Percentiles    `json:"resume"`
	Unresumed  int            `json:"unresumed"`
	ResumedOn  map[string]int `json:"resumed_on,omitempty"` // edges the disconnected sessions came back on
	// Change is how long the step's action took: from the event until the
	// change was in (e.g. every balancer's ring had it). Settled: every
	// participant was back within the scenario's settle bound (a liveness
	// bound, not a figure: ResumeTime is the figure).
	Change  time.Duration `json:"change_ns,omitempty"`
	Settled bool          `json:"settled,omitempty"`
	// OwnerChecked sessions of those this phase disconnected were looked up
	// on the ring at the phase's check point (ChaosScenario.Owner);
	// OffOwner of them were not (all) on their key's owner then.
	OwnerChecked    int      `json:"owner_checked,omitempty"`
	OffOwner        int      `json:"off_owner,omitempty"`
	OffOwnerDetails []string `json:"off_owner_details,omitempty"`
	Lost            int64    `json:"messages_lost"`
	// LostToReset: msgs of an epoch a participant left by a reset (the
	// history was gone) that it had not received.
	LostToReset int64 `json:"messages_lost_to_reset"`
	// Unsequenced: sent by a participant in the session to the end, never
	// acked nor seen by anyone (counted in Lost). Abandoned: the same, but
	// its sender left (a guest whose stay ended) before it could resend
	// them, e.g. while it could not reconnect.
	Unsequenced          int64 `json:"messages_unsequenced"`
	Abandoned            int64 `json:"messages_abandoned"`
	DuplicatedSequenced  int64 `json:"duplicated_sequenced"`
	DuplicatedDeliveries int64 `json:"duplicated_deliveries"`
	Resets               int   `json:"resets"`
	// ResetReasons counts resets by reason and edge ("epoch on edge-3").
	ResetReasons map[string]int `json:"reset_reasons,omitempty"`
	// ResetDetails: the first resets of the phase, what was resumed and
	// what came instead.
	ResetDetails []string `json:"reset_details,omitempty"`
}

// CheckPoint is one split check: every connected participant's edge and
// epoch, compared within each session.
type CheckPoint struct {
	Name      string        `json:"name"`
	At        time.Duration `json:"at_ns"`
	Connected int           `json:"connected"`
	Split     int           `json:"split_sessions"`
	// SessionsByEdge counts sessions by the edge(s) their participants are on.
	SessionsByEdge map[string]int `json:"sessions_by_edge"`
}

// Chaos is a running chaos workload: StartChaos starts it, Event marks a
// change of the cluster, Settle and CheckPoint observe, Stop ends it and
// returns the result. Its methods may be called from one goroutine at a
// time (the script of the run).
type Chaos struct {
	opts    ChaosOptions
	start   time.Time
	ctx     context.Context // ends at the run's deadline or Stop
	cancel  context.CancelFunc
	dialers []*websocket.Dialer
	log     *lockedWriter // the progress lines and the scenario's notes
	// stopSending is closed by Stop: senders and guest loops end.
	stopSending chan struct{}
	// changed gets a token (never blocking) whenever a participant's
	// connection state or ledger moves: Settle and Stop's quiesce wait on
	// it instead of polling.
	changed     chan struct{}
	wg          sync.WaitGroup // every goroutine of the run
	progressWG  sync.WaitGroup
	progressEnd chan struct{}

	sessions []*chaosSession

	// violations describes the first maxViolationDetails protocol
	// violations; its own lock, taken under a client's or a session's.
	violMu     sync.Mutex
	violations []string

	mu          sync.Mutex // guards the fields below
	phases      []*chaosPhase
	checkpoints []CheckPoint
	clients     []*chaosClient // every participant, guests included
	lastDown    time.Duration  // latest unplanned disconnect
	timeline    []ChaosTick

	// Progress counters.
	live      atomic.Int64
	delivered atomic.Int64
	redials   atomic.Int64
	resets    atomic.Int64
	downs     atomic.Int64
}

type chaosPhase struct {
	ChaosPhase
	onEdge          map[int]bool
	disconnected    map[int]bool
	splitCheckpoint map[int]string  // session → its edges at the check point
	resumeTimes     []time.Duration // per disconnected session, filled at the end
}

// chaosSession is one session key and the ledger of what its participants
// saw. Its mutex guards the ledger; clients is append-only under it.
type chaosSession struct {
	idx int
	key string

	mu      sync.Mutex
	clients []*chaosClient // by slot
	epochs  map[string]*epochLog
	where   map[msgID]epochSeq // where each msg was first seen sequenced
	dupSeq  []time.Duration    // sequencing times of second sequencings
	order   int                // two msgs seen at one (epoch, seq)
	// sent counts the msgs its participants have queued: no msg of the
	// session is numbered past it, and its seqs go past it only by holes.
	sent atomic.Uint64
}

// chaosSeqHoles bounds the seqs of an epoch that name no msg of the run (a
// promoted session's reserve, a few hundred a takeover): a seq further
// past the msgs sent is a violation, not an entry of the session's log.
const chaosSeqHoles = 1 << 14

// farAhead reports whether seq is past any the session's msgs can have
// been given.
func (s *chaosSession) farAhead(seq uint64) bool {
	return seq > s.sent.Load()+chaosSeqHoles
}

type msgID struct {
	slot int32
	n    uint32
}

type epochSeq struct {
	epoch string
	seq   uint64
}

// epochLog is what the run saw of one epoch of a session: the msg at each
// seq (index seq-1) and when its msgs were sequenced.
type epochLog struct {
	entries     []seqEntry
	first, last time.Duration // valid once any entry is set
	sequenced   bool
	edges       map[string]bool // that welcomed participants into it
}

type seqEntry struct {
	id  msgID
	at  time.Duration
	set bool
}

// Client states on a connection.
const (
	stateDown       = iota // no connection (dialing, or between attempts)
	stateReplay            // welcomed with resume: replayed msgs up to replayEnd come first
	stateAwaitReset        // welcomed in another epoch: a reset comes next
	stateLive              // sending
)

// chaosClient is one participant: its connections over time and its
// protocol state. mu guards everything but seen (the reader's own).
type chaosClient struct {
	w     *Chaos
	s     *chaosSession
	slot  int32
	id    string // "c" in data: "<session>.<slot>"
	guest bool
	base  int // round-robin index: first target and source
	// joined is called once, at the first welcome or when giving up.
	joined     func()
	joinedOnce sync.Once

	mu         sync.Mutex
	conn       *websocket.Conn
	state      int
	pids       []string // participant ids of every welcome
	edge       string
	epoch      string
	last       uint64 // last seq seen in epoch (msg or own ack)
	replayEnd  uint64
	welcomed   bool // ever
	unacked    []outMsg
	sentOnConn int // unacked[:sentOnConn] were sent on the current connection
	nextN      uint32
	// writeFailed names why this client closed conn after a failed write
	// ("" when none did): the reader then reports it, not its own error.
	writeFailed string
	leaving     bool          // asked to leave (guest's stay over, or Stop)
	drained     chan struct{} // closed when unacked empties while leaving
	closed      bool          // this side closed it: connection ends are planned
	departed    bool          // left the session before the end (a guest), or never joined
	gaveUp      bool
	outages     []outage
	segments    []segment
	gaps        []gap
	violations  int

	seen map[int32][]uint64 // reader only: bitset of n received per sender slot
}

type outMsg struct {
	n      uint32
	sentAt time.Duration
}

type outage struct {
	down, up time.Duration // up < 0: not welcomed again
	upEdge   string        // the edge that welcomed it again
	phase    int
}

// segment is a stretch of one epoch a participant was in: it should see
// every seq in (start, last]; reset closes it.
type segment struct {
	epoch       string
	start, last uint64
	reset       bool
	resetPhase  int
}

// gap is seqs of an epoch a participant never got: skipped within the
// epoch (found at), or by a reset in the same epoch (history too short).
type gap struct {
	epoch    string
	from, to uint64
	at       time.Duration
	reset    bool
}

// StartChaos connects every participant (bounded by the dial concurrency),
// starts traffic and the guests, and returns once every participant has
// been welcomed or has failed to join. progress gets a line a second; nil
// for none.
func StartChaos(ctx context.Context, opts ChaosOptions, progress io.Writer) (*Chaos, error) {
	opts.setDefaults()
	if err := opts.validate(); err != nil {
		return nil, &OptionsError{err}
	}
	if progress == nil {
		progress = io.Discard
	}
	w := &Chaos{opts: opts, start: time.Now(), log: &lockedWriter{w: progress},
		stopSending: make(chan struct{}), changed: make(chan struct{}, 1), progressEnd: make(chan struct{})}
	w.ctx, w.cancel = context.WithTimeout(ctx, opts.Duration)
	w.phases = []*chaosPhase{newChaosPhase("steady", "", 0)}
	sources := opts.Sources
	if len(sources) == 0 {
		sources = []net.IP{nil}
	}
	for _, ip := range sources {
		nd := &net.Dialer{Timeout: chaosDialTimeout, KeepAlive: -1}
		if ip != nil {
			nd.LocalAddr = &net.TCPAddr{IP: ip}
		}
		w.dialers = append(w.dialers, &websocket.Dialer{
			NetDialContext: nd.DialContext, HandshakeTimeout: chaosDialTimeout,
			Subprotocols: []string{"ringlb.v1"}, ReadBufferSize: 1024, WriteBufferSize: 512,
		})
	}
	w.sessions = make([]*chaosSession, opts.Sessions)
	for i := range w.sessions {
		w.sessions[i] = &chaosSession{idx: i, key: fmt.Sprintf("%s-%d", opts.KeyPrefix, i),
			epochs: map[string]*epochLog{}, where: map[msgID]epochSeq{}}
	}
	w.progressWG.Add(1)
	go w.reportProgress()

	sem := make(chan struct{}, opts.DialConcurrency)
	var joined sync.WaitGroup
	for _, s := range w.sessions {
		for range opts.Participants {
			c := w.newClient(s, false)
			joined.Add(1)
			w.wg.Add(1)
			go func() {
				defer w.wg.Done()
				c.run(sem, joined.Done)
			}()
		}
	}
	joined.Wait()
	if err := w.ctx.Err(); err != nil {
		w.Stop(context.Background())
		return nil, fmt.Errorf("chaos: connecting participants: %w", err)
	}
	if opts.GuestStay > 0 {
		for _, s := range w.sessions {
			w.wg.Add(1)
			go func() {
				defer w.wg.Done()
				w.guests(s)
			}()
		}
	}
	return w, nil
}

func newChaosPhase(name, edge string, at time.Duration) *chaosPhase {
	return &chaosPhase{ChaosPhase: ChaosPhase{Name: name, Edge: edge, At: at, Closes: map[string]int{}, ResumedOn: map[string]int{}, DialErrors: map[string]int{}, ResetReasons: map[string]int{}},
		onEdge: map[int]bool{}, disconnected: map[int]bool{}, splitCheckpoint: map[int]string{}}
}

func (w *Chaos) now() time.Duration { return time.Since(w.start) }

// phaseAt is the index of the phase t falls in. Called with w.mu held.
func (w *Chaos) phaseAt(t time.Duration) int {
	i := len(w.phases) - 1
	for i > 0 && w.phases[i].At > t {
		i--
	}
	return i
}

func (w *Chaos) newClient(s *chaosSession, guest bool) *chaosClient {
	w.mu.Lock()
	base := len(w.clients)
	c := &chaosClient{w: w, s: s, guest: guest, base: base, seen: map[int32][]uint64{}}
	w.clients = append(w.clients, c)
	w.mu.Unlock()
	s.mu.Lock()
	c.slot = int32(len(s.clients))
	s.clients = append(s.clients, c)
	s.mu.Unlock()
	c.id = fmt.Sprintf("%d.%d", s.idx, c.slot)
	return c
}

// Event starts a new phase named name, now; edge names the edge the event
// targets ("" for none), whose sessions are remembered so the result tells
// apart the sessions it disconnected from the others. Call it just before
// acting (e.g. right before the kill).
func (w *Chaos) Event(name, edge string) {
	p := newChaosPhase(name, edge, w.now())
	if edge != "" {
		for _, s := range w.sessions {
			for _, v := range s.connected() {
				if v.edge == edge {
					p.onEdge[s.idx] = true
				}
			}
		}
		p.SessionsOnEdge = len(p.onEdge)
	}
	w.mu.Lock()
	w.phases = append(w.phases, p)
	w.mu.Unlock()
}

// where is one connected participant's edge and epoch.
type where struct{ edge, epoch string }

// connected returns where the session's connected participants are.
func (s *chaosSession) connected() []where {
	s.mu.Lock()
	clients := s.clients
	s.mu.Unlock()
	var out []where
	for _, c := range clients {
		c.mu.Lock()
		if c.state != stateDown && !c.closed {
			out = append(out, where{c.edge, c.epoch})
		}
		c.mu.Unlock()
	}
	return out
}

// Settle waits until every participant that lost its connection is
// welcomed again (or has left) and no connection has been lost for quiet.
// It wakes on the participants' own state changes, not on a clock. It
// returns an error saying how many are still down when ctx ends first.
func (w *Chaos) Settle(ctx context.Context, quiet time.Duration) error {
	quietTimer := time.NewTimer(quiet)
	defer quietTimer.Stop()
	for {
		down := 0
		w.mu.Lock()
		clients, lastDown := w.clients, w.lastDown
		w.mu.Unlock()
		for _, c := range clients {
			c.mu.Lock()
			if c.welcomed && !c.closed && !c.gaveUp && c.state != stateLive {
				down++
			}
			c.mu.Unlock()
		}
		var quietDone <-chan time.Time
		if down == 0 {
			left := quiet - (w.now() - lastDown)
			if left <= 0 {
				return nil
			}
			quietTimer.Reset(left)
			quietDone = quietTimer.C
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not settled: %d participants still reconnecting: %w", down, ctx.Err())
		case <-w.ctx.Done():
			return fmt.Errorf("not settled: %d participants still reconnecting: run over: %w", down, w.ctx.Err())
		case <-w.changed:
		case <-quietDone:
		}
	}
}

// kick tells a waiter in Settle or quiesce that something changed.
func (w *Chaos) kick() {
	select {
	case w.changed <- struct{}{}:
	default:
	}
}

// CheckPoint checks every session for a split now: its connected
// participants must all be on one edge, in one epoch. It returns what it
// found and records the split sessions in the current phase.
func (w *Chaos) CheckPoint(name string) CheckPoint {
	cp := CheckPoint{Name: name, At: w.now(), SessionsByEdge: map[string]int{}}
	split := map[int]string{}
	for _, s := range w.sessions {
		edges, epochs := map[string]bool{}, map[string]bool{}
		for _, v := range s.connected() {
			edges[v.edge], epochs[v.epoch] = true, true
			cp.Connected++
		}
		if len(edges) > 1 || len(epochs) > 1 {
			split[s.idx] = fmt.Sprintf("%s in %d epochs", joinSorted(edges), len(epochs))
		}
		if len(edges) > 0 {
			cp.SessionsByEdge[joinSorted(edges)]++
		}
	}
	cp.Split = len(split)
	w.mu.Lock()
	p := w.phases[len(w.phases)-1]
	for i, edges := range split {
		p.splitCheckpoint[i] = edges
	}
	w.checkpoints = append(w.checkpoints, cp)
	w.mu.Unlock()
	return cp
}

// joinSorted names a set of edges: "edge-1", or "edge-1+edge-4" for a split.
func joinSorted(set map[string]bool) string {
	names := make([]string, 0, len(set))
	for e := range set {
		names = append(names, e)
	}
	slices.Sort(names)
	return strings.Join(names, "+")
}

// SessionEdges returns, by session key, the edges its connected
// participants are on now ("edge-1", or "edge-1+edge-4" when split).
func (w *Chaos) SessionEdges() map[string]string {
	out := make(map[string]string, len(w.sessions))
	for _, s := range w.sessions {
		edges := map[string]bool{}
		for _, v := range s.connected() {
			edges[v.edge] = true
		}
		out[s.key] = joinSorted(edges)
	}
	return out
}

// Stop ends the run: no more sends or guests, a wait (bounded by Quiesce)
// for the last acks and deliveries, a final check point, then every
// connection closed. It returns the result; call it once.
func (w *Chaos) Stop(ctx context.Context) *ChaosResult {
	close(w.stopSending)
	quiesceStart := w.now()
	quiesced := w.quiesce(ctx)
	quiesceTime := w.now() - quiesceStart
	w.CheckPoint("end")
	w.mu.Lock()
	clients := w.clients
	w.mu.Unlock()
	for _, c := range clients {
		c.close()
	}
	w.cancel()
	w.wg.Wait()
	close(w.progressEnd)
	w.progressWG.Wait()
	res := w.tally()
	res.Quiesced, res.QuiesceTime = quiesced, quiesceTime
	return res
}

// quiesce waits until every participant still in the run is live with
// nothing unacked and has seen its epoch's last seq; it wakes on acks,
// deliveries and connection changes.
func (w *Chaos) quiesce(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, w.opts.Quiesce)
	defer cancel()
	for {
		if w.quiet() {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-w.ctx.Done():
			return false
		case <-w.changed:
		}
	}
}

func (w *Chaos) quiet() bool {
	for _, s := range w.sessions {
		s.mu.Lock()
		clients := s.clients
		maxSeq := map[string]uint64{}
		for e, l := range s.epochs {
			maxSeq[e] = uint64(len(l.entries))
		}
		s.mu.Unlock()
		for _, c := range clients {
			c.mu.Lock()
			busy := !c.closed && !c.departed && !c.gaveUp && (c.state != stateLive || len(c.unacked) > 0 || c.last < maxSeq[c.epoch])
			c.mu.Unlock()
			if busy {
				return false
			}
		}
	}
	return true
}

// guests fills a session's guest slot with one new participant after
// another until sending stops.
func (w *Chaos) guests(s *chaosSession) {
	for {
		if !w.pause(randDuration(0, w.opts.GuestAway)) {
			return
		}
		c := w.newClient(s, true)
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			c.run(nil, func() {})
		}()
		w.pause(randDuration(0, w.opts.GuestStay))
		c.leave()
	}
}

// pause waits d, or until sending stops (false).
func (w *Chaos) pause(d time.Duration) bool { return w.wait(d, w.stopSending) }

// sleep waits d unless the run ends first (false).
func (w *Chaos) sleep(d time.Duration) bool { return w.wait(d, nil) }

// wait waits d, or until stop is closed or the run ends (false).
func (w *Chaos) wait(d time.Duration, stop <-chan struct{}) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-stop:
		return false
	case <-w.ctx.Done():
		return false
	}
}

func randDuration(lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	return lo + rand.N(hi-lo)
}

// run is the participant's life: join, read until the connection ends,
// reconnect (resuming) until it leaves, the run ends or its bounded redials
// are spent. joined is called once, when it is first welcomed or gives up;
// sem (nil: none) bounds concurrent dials before the first welcome.
func (c *chaosClient) run(sem chan struct{}, joined func()) {
	w := c.w
	c.joined = joined
	defer c.joinedOnce.Do(joined)
	failures := 0
	var failingSince time.Duration
	for attempt := 0; ; attempt++ {
		if !c.wantConnection() {
			return
		}
		c.mu.Lock()
		joining := !c.welcomed
		c.mu.Unlock()
		if sem != nil && joining {
			select {
			case sem <- struct{}{}:
			case <-w.ctx.Done():
				return
			}
		}
		conn, err := c.dial(attempt)
		if sem != nil && joining {
			<-sem
		}
		if err != nil {
			w.count(func(p *chaosPhase) {
				p.DialFailures++
				p.DialErrors[dialErrorKind(err)]++
			})
			if failures++; failures == 1 {
				failingSince = w.now()
			}
			if failures >= chaosMaxRedials || w.now()-failingSince >= chaosRedialFor {
				c.mu.Lock()
				if joining {
					c.departed = true // never joined: not part of the session
					w.count(func(p *chaosPhase) { p.JoinFailures++ })
				} else {
					c.gaveUp = true
				}
				c.mu.Unlock()
				w.kick()
				return
			}
			if !w.sleep(randDuration(chaosBackoffMin, chaosBackoffMax)) {
				return
			}
			continue
		}
		failures = 0
		if !joining {
			w.redials.Add(1)
			w.count(func(p *chaosPhase) { p.Redials++ })
		}
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			conn.Close()
			return
		}
		c.conn = conn
		c.mu.Unlock()
		if !c.disconnected(c.read(conn)) {
			return
		}
		if !w.sleep(randDuration(chaosBackoffMin, chaosBackoffMax)) {
			return
		}
	}
}

// wantConnection: not left, and either still in the run or leaving with
// msgs to get acked.
func (c *chaosClient) wantConnection() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.departed || c.gaveUp || c.w.ctx.Err() != nil {
		return false
	}
	return !c.leaving || len(c.unacked) > 0
}

// dial opens a connection through the next balancer, resuming when this
// participant was welcomed before.
func (c *chaosClient) dial(attempt int) (*websocket.Conn, error) {
	w := c.w
	target := w.opts.Targets[(c.base+attempt)%len(w.opts.Targets)]
	c.mu.Lock()
	if c.welcomed {
		target += "?resume=" + strconv.FormatUint(c.last, 10) + "&epoch=" + url.QueryEscape(c.epoch)
	}
	c.mu.Unlock()
	ctx, cancel := context.WithTimeout(w.ctx, chaosDialTimeout)
	defer cancel()
	conn, resp, err := w.dialers[c.base%len(w.dialers)].DialContext(ctx, target, http.Header{"Ctstickiness": {c.s.key}})
	if err != nil {
		de := &dialError{err: fmt.Errorf("dial %s: %w", target, err)}
		if resp != nil {
			de.status, de.owner, de.edge = resp.StatusCode, resp.Header.Get("X-Ringlb-Owner"), resp.Header.Get("X-Ringlb-Edge")
		}
		return nil, de
	}
	if conn.Subprotocol() != "ringlb.v1" {
		conn.Close()
		return nil, &dialError{err: fmt.Errorf("dial %s: subprotocol %q, want ringlb.v1", target, conn.Subprotocol())}
	}
	return conn, nil
}

// dialError is a failed dial: the HTTP status when the server answered.
type dialError struct {
	status      int
	owner, edge string // X-Ringlb-Owner and X-Ringlb-Edge of the answer
	err         error
}

func (e *dialError) Error() string {
	if e.status != 0 {
		return fmt.Sprintf("%v (HTTP %d)", e.err, e.status)
	}
	return e.err.Error()
}

func (e *dialError) Unwrap() error { return e.err }

// dialErrorKind names a dial failure for counting: "HTTP 421 from edge-3
// owner edge-2", "HTTP 502", "timeout", "refused", or "error".
func dialErrorKind(err error) string {
	var de *dialError
	var ne net.Error
	switch {
	case errors.As(err, &de) && de.status != 0:
		kind := "HTTP " + strconv.Itoa(de.status)
		if de.edge != "" {
			kind += " from " + de.edge
		}
		if de.owner != "" {
			kind += " owner " + de.owner
		}
		return kind
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case strings.Contains(err.Error(), "connection refused"):
		return "refused"
	default:
		return "error"
	}
}

// chaosFrame is any server frame of ringlb.v1 (the fields this client reads).
type chaosFrame struct {
	Type        string          `json:"type"`
	Seq         uint64          `json:"seq"`
	Epoch       string          `json:"epoch"`
	Edge        string          `json:"edge"`
	Participant string          `json:"participant"`
	From        string          `json:"from"`
	TS          int64           `json:"ts"`
	Data        json.RawMessage `json:"data"`
	Reason      string          `json:"reason"`
}

type chaosData struct {
	C string `json:"c"`
	N uint32 `json:"n"`
}

// read handles conn's frames until it ends; it reports why it ended
// (connEndKind).
func (c *chaosClient) read(conn *websocket.Conn) (reason string) {
	defer conn.Close()
	var data []byte
	for {
		_ = conn.SetReadDeadline(time.Now().Add(chaosReadTimeout))
		_, r, err := conn.NextReader()
		ok := true
		if err == nil {
			// Bounded as the v1 load's frames: the target (an edge under
			// test, a balancer, or whatever a run is pointed at) would
			// otherwise have the run hold a frame whole, however long.
			data, ok, err = readAll(r, data[:0], v1MaxWelcome)
		}
		if err != nil {
			c.mu.Lock()
			wrote := c.writeFailed
			c.writeFailed = ""
			c.mu.Unlock()
			return connEndKind(conn, err, wrote)
		}
		if !ok {
			c.mu.Lock()
			c.violate("a frame longer than a welcome can be (over %d bytes), dropped", v1MaxWelcome)
			c.mu.Unlock()
			continue
		}
		var f chaosFrame
		if json.Unmarshal(data, &f) != nil {
			c.mu.Lock()
			c.violate("a frame that is not JSON (%d bytes)", len(data))
			c.mu.Unlock()
			continue
		}
		switch f.Type {
		case "welcome":
			c.onWelcome(conn, &f)
		case "reset":
			c.onReset(&f)
		case "ack":
			c.onAck(f.Seq)
		case "msg":
			c.onMsg(&f)
		}
	}
}

// disconnected records the end of a connection. It reports whether to
// reconnect.
func (c *chaosClient) disconnected(reason string) bool {
	w := c.w
	at := w.now()
	c.mu.Lock()
	c.conn = nil
	wasUp := c.state != stateDown
	c.state = stateDown
	c.sentOnConn = 0
	planned := c.closed || w.ctx.Err() != nil
	welcomed := c.welcomed
	c.mu.Unlock()
	if wasUp {
		w.live.Add(-1)
	}
	w.kick()
	switch {
	case planned:
		return false
	case !welcomed:
		w.count(func(p *chaosPhase) { // ended before its first welcome
			p.DialFailures++
			p.DialErrors["closed "+reason]++
		})
	default:
		w.downs.Add(1)
		w.mu.Lock()
		i := w.phaseAt(at)
		p := w.phases[i]
		if reason == endClientStalled {
			p.ClientStalls++ // back it must come, but the step did not end it
		} else {
			p.disconnected[c.s.idx] = true
		}
		p.Closes[reason]++
		w.lastDown = at
		w.mu.Unlock()
		c.mu.Lock()
		c.outages = append(c.outages, outage{down: at, up: -1, phase: i})
		c.mu.Unlock()
	}
	return c.wantConnection()
}

func (c *chaosClient) onWelcome(conn *websocket.Conn, f *chaosFrame) {
	at := c.w.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn != conn {
		return
	}
	defer c.w.kick()
	c.pids = append(c.pids, f.Participant)
	c.edge = f.Edge
	c.s.welcomedOn(f.Epoch, f.Edge)
	if n := len(c.outages); n > 0 && c.outages[n-1].up < 0 {
		c.outages[n-1].up, c.outages[n-1].upEdge = at, f.Edge
	}
	c.w.live.Add(1)
	switch {
	case !c.welcomed:
		c.welcomed = true
		c.epoch, c.last = f.Epoch, f.Seq
		c.segments = append(c.segments, segment{epoch: f.Epoch, start: f.Seq, last: f.Seq})
		c.goLive()
		c.w.wg.Add(1) // the run goroutine, counted, is still running
		go func() {
			defer c.w.wg.Done()
			c.send()
		}()
		c.joinedOnce.Do(c.joined)
	case f.Epoch == c.epoch && f.Seq >= c.last:
		c.replayEnd = f.Seq
		c.state = stateReplay
		if f.Seq == c.last {
			c.goLive()
		}
	default:
		c.state = stateAwaitReset
	}
}

func (c *chaosClient) onReset(f *chaosFrame) {
	w := c.w
	w.resets.Add(1)
	at := w.now()
	defer w.kick()
	c.mu.Lock()
	defer c.mu.Unlock()
	w.mu.Lock()
	i := w.phaseAt(at)
	w.phases[i].Resets++
	p := w.phases[i]
	p.ResetReasons[f.Reason+" on "+c.edge]++
	if len(p.ResetDetails) < maxResetDetails {
		p.ResetDetails = append(p.ResetDetails, fmt.Sprintf("%s at %.3fs: resumed epoch %s seq %d on %s, got %s seq %d (%s)",
			c.s.key, at.Seconds(), c.epoch, c.last, c.edge, f.Epoch, f.Seq, f.Reason))
	}
	w.mu.Unlock()
	seg := &c.segments[len(c.segments)-1]
	seg.reset, seg.resetPhase = true, i
	if f.Epoch == c.epoch && f.Seq > c.last {
		// Same epoch, history too short: what it skips is lost to the reset.
		c.gaps = append(c.gaps, gap{epoch: c.epoch, from: c.last + 1, to: f.Seq, at: at, reset: true})
	}
	c.epoch, c.last = f.Epoch, f.Seq
	c.segments = append(c.segments, segment{epoch: f.Epoch, start: f.Seq, last: f.Seq})
	c.goLive()
}

// goLive sends every unacked msg again (in order) and lets new ones go out.
// Called with c.mu held.
func (c *chaosClient) goLive() {
	c.state = stateLive
	c.sentOnConn = 0
	for _, m := range c.unacked {
		if !c.write(m.n) {
			break
		}
		c.sentOnConn++
	}
}

// write sends msg n on the current connection. Called with c.mu held.
func (c *chaosClient) write(n uint32) bool {
	if c.conn == nil {
		return false
	}
	b := make([]byte, 0, 64)
	b = append(b, `{"type":"msg","data":{"c":"`...)
	b = append(b, c.id...)
	b = append(b, `","n":`...)
	b = strconv.AppendUint(b, uint64(n), 10)
	b = append(b, "}}"...)
	_ = c.conn.SetWriteDeadline(time.Now().Add(chaosWriteTimeout))
	if err := c.conn.WriteMessage(websocket.TextMessage, b); err != nil {
		// The reader ends now and the participant reconnects.
		c.writeFailed = writeEndKind(c.conn, err)
		c.conn.Close()
		return false
	}
	return true
}

// endClientStalled is how a connection ended that this client closed
// because a deadline passed while its own process did not run — a write
// timeout with nothing unacknowledged on the socket, a read timeout with
// bytes waiting to be read (socketQueues) —, as on a machine stalled for
// tens of seconds. The server held nothing back: the session's
// participant reconnects, and the step is not counted as having
// disconnected it (ChaosPhase.ClientStalls).
const endClientStalled = "client stalled"

// connEndKind names why conn ended, its read having failed with err, for
// counting: its close code ("1012"), what writeEndKind named when this
// client closed it after a failed write (wrote), else how the read
// failed: "read timeout" ("client stalled" when the server's bytes were
// there, unread), "reset", "eof", or "error".
func connEndKind(conn *websocket.Conn, err error, wrote string) string {
	var ce *websocket.CloseError
	switch {
	case errors.As(err, &ce):
		return strconv.Itoa(ce.Code)
	case wrote != "":
		return wrote
	}
	if in, _ := socketQueues(conn.NetConn()); in > 0 && errors.Is(err, os.ErrDeadlineExceeded) {
		return endClientStalled
	}
	return "read " + netErrorKind(err)
}

// writeEndKind names a write on conn that failed with err: "write timeout"
// ("client stalled" when the server had acknowledged every byte written
// before, so nothing could block this write), "write reset", and so on.
func writeEndKind(conn *websocket.Conn, err error) string {
	if _, out := socketQueues(conn.NetConn()); out == 0 && errors.Is(err, os.ErrDeadlineExceeded) {
		return endClientStalled
	}
	return "write " + netErrorKind(err)
}

// netErrorKind names a failed read or write: "timeout" (its deadline
// passed — on a stalled machine, possibly before the call ran), "reset",
// "eof", or "error".
func netErrorKind(err error) string {
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		return "timeout"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "reset"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "eof"
	default:
		return "error"
	}
}

// advance moves the seq seen in the current epoch to seq: within an epoch
// seqs arrive contiguous, so a jump is a gap. Called with c.mu held.
func (c *chaosClient) advance(seq uint64) {
	if seq > c.last+1 {
		c.gaps = append(c.gaps, gap{epoch: c.epoch, from: c.last + 1, to: seq - 1, at: c.w.now()})
	}
	c.last = seq
	c.segments[len(c.segments)-1].last = seq
}

func (c *chaosClient) onAck(seq uint64) {
	at := c.w.now()
	defer c.w.kick()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != stateLive || c.sentOnConn == 0 || seq <= c.last {
		c.violate("ack %d in state %d with %d sent on this connection, last seq %d", seq, c.state, c.sentOnConn, c.last)
		return
	}
	if c.s.farAhead(seq) {
		c.violate("ack %d, past the %d msgs the session sent", seq, c.s.sent.Load())
		return
	}
	m := c.unacked[0]
	c.unacked = c.unacked[1:]
	c.sentOnConn--
	c.recordAt(seq, msgID{c.slot, m.n}, at)
	c.advance(seq)
	c.ackedOne()
}

// violate counts a protocol violation seen by c, described in the
// result's details while there is room. Called with c.mu held.
func (c *chaosClient) violate(format string, args ...any) {
	c.violations++
	c.w.noteViolation(fmt.Sprintf("%s slot %d on %s (epoch %s): ", c.s.key, c.slot, c.edge, c.epoch) + fmt.Sprintf(format, args...))
}

// recordAt records msg id at seq of c's epoch in the session's ledger; a
// seq that names another msg is a violation, described. Called with c.mu
// held.
func (c *chaosClient) recordAt(seq uint64, id msgID, at time.Duration) {
	if other, twice := c.s.record(c.epoch, seq, id, at); twice {
		c.w.noteViolation(fmt.Sprintf("%s (epoch %s): seq %d names two msgs, %v and %v (the second seen by slot %d on %s)", c.s.key, c.epoch, seq, other, id, c.slot, c.edge))
	}
}

// maxViolationDetails bounds ChaosResult.ProtocolViolationDetails.
const maxViolationDetails = 10

// noteViolation keeps desc among the first violations described.
func (w *Chaos) noteViolation(desc string) {
	w.violMu.Lock()
	defer w.violMu.Unlock()
	if len(w.violations) < maxViolationDetails {
		w.violations = append(w.violations, desc)
	}
}

// ackedOne tells a leaving participant waiting for its acks when the last
// came. Called with c.mu held.
func (c *chaosClient) ackedOne() {
	if len(c.unacked) == 0 && c.drained != nil {
		close(c.drained)
		c.drained = nil
	}
}

func (c *chaosClient) onMsg(f *chaosFrame) {
	w := c.w
	var d chaosData
	if json.Unmarshal(f.Data, &d) != nil {
		c.mu.Lock()
		c.violate("msg %d with data that is not a chaos msg", f.Seq)
		c.mu.Unlock()
		return
	}
	slot, ok := c.s.slotOf(d.C)
	at := time.UnixMilli(f.TS).Sub(w.start)
	defer w.kick()
	c.mu.Lock()
	defer c.mu.Unlock()
	if !ok || (c.state != stateLive && c.state != stateReplay) {
		c.violate("msg %d from sender %q in state %d (a known sender: %v)", f.Seq, d.C, c.state, ok)
		return
	}
	if f.Seq <= c.last {
		return // a replay of what came live: dropped by seq
	}
	// Each kept as an entry of the session's log, or a bit of what it
	// received of the sender: only numbers the run's msgs can have.
	if sent := c.s.sent.Load(); uint64(d.N) >= sent || c.s.farAhead(f.Seq) {
		c.violate("msg n=%d at seq %d, past the %d msgs the session sent", d.N, f.Seq, sent)
		return
	}
	id := msgID{slot, d.N}
	if slices.Contains(c.pids, f.From) {
		// Its own msg, sequenced before its ack could arrive: acked now.
		if len(c.unacked) == 0 || c.sentOnConn > 0 || slot != c.slot || c.unacked[0].n != d.N {
			c.violate("own msg n=%d replayed at seq %d: %d unacked, %d sent on this connection", d.N, f.Seq, len(c.unacked), c.sentOnConn)
		} else {
			c.unacked = c.unacked[1:]
			c.ackedOne()
		}
	} else {
		words := c.seen[slot]
		if need := int(d.N/64) + 1; len(words) < need {
			words = append(words, make([]uint64, need-len(words))...)
			c.seen[slot] = words
		}
		if words[d.N/64]&(1<<(d.N%64)) != 0 {
			w.count(func(p *chaosPhase) { p.DuplicatedDeliveries++ })
		}
		words[d.N/64] |= 1 << (d.N % 64)
		w.delivered.Add(1)
	}
	c.recordAt(f.Seq, id, at)
	c.advance(f.Seq)
	if c.state == stateReplay && f.Seq >= c.replayEnd {
		c.goLive()
	}
}

// send sends a msg every 1/Rate (±50%) until sending stops or it leaves;
// while disconnected msgs queue and go out on resume.
func (c *chaosClient) send() {
	w := c.w
	interval := time.Duration(float64(time.Second) / w.opts.Rate)
	for {
		if !w.pause(randDuration(interval/2, interval*3/2)) {
			return
		}
		c.mu.Lock()
		if c.leaving || c.closed || c.gaveUp {
			c.mu.Unlock()
			return
		}
		c.unacked = append(c.unacked, outMsg{n: c.nextN, sentAt: w.now()})
		c.nextN++
		c.s.sent.Add(1)
		// Only in order: after every earlier msg went out on this connection.
		if c.state == stateLive && c.sentOnConn == len(c.unacked)-1 && c.write(c.unacked[len(c.unacked)-1].n) {
			c.sentOnConn++
		}
		c.mu.Unlock()
	}
}

// leave ends a guest's stay: no more sends, a bounded wait for the acks of
// what it sent (through a reconnect if need be), then a close.
func (c *chaosClient) leave() {
	c.mu.Lock()
	c.leaving = true
	var drained chan struct{}
	if len(c.unacked) > 0 {
		drained = make(chan struct{})
		c.drained = drained
	}
	c.mu.Unlock()
	if drained != nil {
		t := time.NewTimer(chaosLeaveWait)
		select {
		case <-drained:
		case <-t.C:
		case <-c.w.ctx.Done():
		}
		t.Stop()
	}
	c.mu.Lock()
	c.departed = true
	c.mu.Unlock()
	c.close()
}

// close ends the participant's connection from this side; it does not
// reconnect.
func (c *chaosClient) close() {
	c.mu.Lock()
	c.leaving, c.closed = true, true
	conn := c.conn
	c.mu.Unlock()
	c.w.kick()
	if conn != nil {
		_ = conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "leaving"), time.Now().Add(time.Second))
		conn.Close()
	}
}

// slotOf parses "<session>.<slot>" for this session.
func (s *chaosSession) slotOf(c string) (int32, bool) {
	sess, slot, ok := strings.Cut(c, ".")
	if !ok || sess != strconv.Itoa(s.idx) {
		return 0, false
	}
	n, err := strconv.ParseInt(slot, 10, 32)
	if err != nil || n < 0 {
		return 0, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return int32(n), int(n) < len(s.clients)
}

// epoch returns the log of epoch, new if need be. Called with s.mu held.
func (s *chaosSession) epoch(epoch string) *epochLog {
	l := s.epochs[epoch]
	if l == nil {
		l = &epochLog{edges: map[string]bool{}}
		s.epochs[epoch] = l
	}
	return l
}

// welcomedOn notes that edge welcomed a participant into epoch.
func (s *chaosSession) welcomedOn(epoch, edge string) {
	s.mu.Lock()
	s.epoch(epoch).edges[edge] = true
	s.mu.Unlock()
}

// record notes msg id at (epoch, seq), sequenced at about at.
// sequencedIn counts the seqs from..to of l at which a msg was seen.
func sequencedIn(l *epochLog, from, to uint64) int64 {
	if l == nil {
		return 0
	}
	var n int64
	for seq := max(from, 1); seq <= to && seq <= uint64(len(l.entries)); seq++ {
		if l.entries[seq-1].set {
			n++
		}
	}
	return n
}

func (s *chaosSession) record(epoch string, seq uint64, id msgID, at time.Duration) (other msgID, twice bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.epoch(epoch)
	for uint64(len(l.entries)) < seq {
		l.entries = append(l.entries, seqEntry{})
	}
	e := &l.entries[seq-1]
	if e.set {
		if e.id != id {
			s.order++
			return e.id, true
		}
		return msgID{}, false
	}
	*e = seqEntry{id: id, at: at, set: true}
	if !l.sequenced {
		l.first, l.last, l.sequenced = at, at, true
	}
	l.first, l.last = min(l.first, at), max(l.last, at)
	if prev, ok := s.where[id]; !ok {
		s.where[id] = epochSeq{epoch, seq}
	} else if prev != (epochSeq{epoch, seq}) {
		s.dupSeq = append(s.dupSeq, at)
	}
	return msgID{}, false
}

// count applies f to the phase now.
func (w *Chaos) count(f func(*chaosPhase)) {
	at := w.now()
	w.mu.Lock()
	f(w.phases[w.phaseAt(at)])
	w.mu.Unlock()
}

// reportProgress writes a line a second and keeps its figures for the
// result's timeline.
func (w *Chaos) reportProgress() {
	defer w.progressWG.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var last int64
	for {
		select {
		case <-w.progressEnd:
			return
		case <-t.C:
		}
		tick := ChaosTick{At: w.now(), Live: w.live.Load(), Delivered: w.delivered.Load(),
			Disconnects: w.downs.Load(), Redials: w.redials.Load(), Resets: w.resets.Load()}
		w.mu.Lock()
		tick.Phase = w.phases[len(w.phases)-1].Name
		total := len(w.clients)
		w.timeline = append(w.timeline, tick)
		w.mu.Unlock()
		w.logf("%-9s live %d/%d  delivered %d (%d/s)  disconnects %d  redials %d  resets %d",
			tick.Phase, tick.Live, total, tick.Delivered, tick.Delivered-last, tick.Disconnects, tick.Redials, tick.Resets)
		last = tick.Delivered
	}
}

// logf writes one progress line, stamped with the time since the start.
func (w *Chaos) logf(format string, args ...any) {
	fmt.Fprintf(w.log, "[%5.1fs] "+format+"\n", append([]any{w.now().Seconds()}, args...)...)
}

// lockedWriter serializes the progress lines of the reporter and of the
// script of the run.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// tally computes the result once every goroutine has ended.
func (w *Chaos) tally() *ChaosResult {
	res := &ChaosResult{Options: w.opts, Started: w.start, Duration: w.now(), Participants: len(w.clients),
		Delivered: w.delivered.Load(), CheckPoints: w.checkpoints, Timeline: w.timeline}
	phases := w.phases
	split := map[int]bool{}
	for _, s := range w.sessions {
		// Two epochs of one session sequencing at overlapping times: its
		// participants were in two incarnations at once.
		var logs []*epochLog
		for _, l := range s.epochs {
			res.Sequenced += int64(len(l.entries))
			if l.sequenced {
				logs = append(logs, l)
			}
		}
		byEpoch := map[int]bool{}
		for i, a := range logs {
			for _, b := range logs[i+1:] {
				if from := max(a.first, b.first); from < min(a.last, b.last) {
					k := w.phaseAt(from)
					if !byEpoch[k] {
						phases[k].SplitDetails = append(phases[k].SplitDetails, fmt.Sprintf("%s: epochs on %s (%.3fs–%.3fs) and on %s (%.3fs–%.3fs) at once",
							s.key, joinSorted(a.edges), a.first.Seconds(), a.last.Seconds(), joinSorted(b.edges), b.first.Seconds(), b.last.Seconds()))
					}
					byEpoch[k] = true
				}
			}
		}
		for _, at := range s.dupSeq {
			phases[w.phaseAt(at)].DuplicatedSequenced++
		}
		res.ProtocolViolations += s.order
		// The phase a missing seq was sequenced in, else (nobody saw it)
		// the fallback.
		seqPhase := func(epoch string, seq uint64, fallback int) int {
			if l := s.epochs[epoch]; l != nil && seq >= 1 && seq <= uint64(len(l.entries)) && l.entries[seq-1].set {
				return w.phaseAt(l.entries[seq-1].at)
			}
			return fallback
		}
		resumedOn := make([]map[string]bool, len(phases))
		resumedAt := make([]time.Duration, len(phases))
		for _, c := range s.clients {
			res.ProtocolViolations += c.violations
			res.Sent += int64(c.nextN)
			if c.gaveUp {
				res.GaveUp++
			}
			if c.guest && c.welcomed {
				res.GuestJoins++
			}
			for _, g := range c.gaps {
				// Only seqs some participant saw a msg at: a seq the edge
				// left empty (a promoted session's reserve) held nothing.
				missed := sequencedIn(s.epochs[g.epoch], g.from, g.to)
				if p := phases[w.phaseAt(g.at)]; g.reset {
					p.LostToReset += missed
				} else {
					p.Lost += missed
				}
			}
			for k, seg := range c.segments {
				l := s.epochs[seg.epoch]
				end := uint64(0)
				if l != nil {
					end = uint64(len(l.entries))
				}
				switch {
				case seg.reset && end > seg.last:
					// It moved to another epoch: what it had not got of
					// this one was lost with that epoch's history.
					phases[seg.resetPhase].LostToReset += sequencedIn(l, seg.last+1, end)
				case k == len(c.segments)-1 && !c.departed && !c.gaveUp:
					// In the session to the end: it should have got all.
					for seq := seg.last + 1; seq <= end; seq++ {
						if l.entries[seq-1].set {
							phases[seqPhase(seg.epoch, seq, len(phases)-1)].Lost++
						}
					}
				}
			}
			for _, m := range c.unacked {
				if _, ok := s.where[msgID{c.slot, m.n}]; !ok {
					switch p := phases[w.phaseAt(m.sentAt)]; {
					case c.departed:
						p.Abandoned++
					default:
						p.Unsequenced++
						p.Lost++
					}
				}
			}
			for _, o := range c.outages {
				p := phases[o.phase]
				switch {
				case o.up >= 0:
					resumedAt[o.phase] = max(resumedAt[o.phase], o.up-p.At)
					if resumedOn[o.phase] == nil {
						resumedOn[o.phase] = map[string]bool{}
					}
					resumedOn[o.phase][o.upEdge] = true
				case !c.departed:
					p.Unresumed++
				}
			}
		}
		for i, p := range phases {
			if byEpoch[i] {
				p.SplitByEpoch++
			}
			if edges := p.splitCheckpoint[s.idx]; edges != "" {
				p.SplitDetails = append(p.SplitDetails, fmt.Sprintf("%s: on %s at a check point", s.key, edges))
			}
			if byEpoch[i] || p.splitCheckpoint[s.idx] != "" {
				p.SplitSessions++
				split[s.idx] = true
			}
			if !p.disconnected[s.idx] {
				continue
			}
			p.DisconnectedKeys = append(p.DisconnectedKeys, s.key)
			if p.Edge != "" && !p.onEdge[s.idx] {
				p.DisconnectedElsewhere++
			}
			if len(resumedOn[i]) > 0 {
				p.ResumedOn[joinSorted(resumedOn[i])]++
				p.resumeTimes = append(p.resumeTimes, resumedAt[i])
			}
		}
	}
	res.SplitSessions = len(split)
	for _, p := range phases {
		p.SessionsDisconnected = len(p.disconnected)
		p.SplitAtCheckPoint = len(p.splitCheckpoint)
		p.Resume = percentiles(p.resumeTimes)
		p.ResumeTime = p.Resume.Max
		res.Lost += p.Lost
		res.LostToReset += p.LostToReset
		res.Abandoned += p.Abandoned
		res.Duplicated += p.DuplicatedSequenced + p.DuplicatedDeliveries
		res.Resets += p.Resets
		res.Phases = append(res.Phases, p.ChaosPhase)
	}
	w.violMu.Lock()
	res.ProtocolViolationDetails = slices.Clone(w.violations)
	w.violMu.Unlock()
	return res
}

// Summary is a one-line account of the run.
func (r *ChaosResult) Summary() string {
	return fmt.Sprintf("chaos: %d sessions, %d participants (%d guest joins), %d msgs sent, %d delivered | split sessions=%d lost=%d lost-to-reset=%d duplicated=%d resets=%d protocol-violations=%d gave-up=%d",
		r.Options.Sessions, r.Participants, r.GuestJoins, r.Sent, r.Delivered,
		r.SplitSessions, r.Lost, r.LostToReset, r.Duplicated, r.Resets, r.ProtocolViolations, r.GaveUp)
}
