// Package bench holds ringlb's load generators (`ringlb bench ws|ring`) and,
// under peers/, the scripts that run the same load against HAProxy, nginx,
// gdnsd and NSD. The generators are clients of the wire contract only.
package bench

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fasthttp/websocket"
)

// WSOptions describes one `ringlb bench ws` run. Every loop in the run is
// bounded by Sessions×Participants connections and by Duration.
type WSOptions struct {
	// Targets are ws:// URLs; participants are spread over them round-robin.
	Targets      []string
	Sessions     int
	Participants int // per session
	// Rate is messages per second per participant; 0 opens idle connections.
	Rate float64
	// Size of each message in bytes (at least 16: send time, sender,
	// sequence); in v1 mode the size of the msg's data, a JSON string (at
	// least 34: the same in hex, quoted).
	Size     int
	Duration time.Duration
	// Ramp spreads connection set-up over this long (default: as fast as the
	// dial concurrency allows).
	Ramp time.Duration
	// KeyIn is "header" or "cookie": where the ctstickiness key goes.
	KeyIn string
	// Mode is "raw" (no subprotocol: binary frames relayed unchanged) or
	// "v1" (ringlb.v1: msg envelopes, sequenced by the edge and acked).
	Mode string
	// Sources are local addresses to dial from, round-robin (each 127.0.0.x
	// has its own ~28k ephemeral ports); empty lets the kernel choose.
	Sources []net.IP
	// KeyPrefix makes session keys unique per run.
	KeyPrefix string
	// Drain bounds the wait after sending stops for messages in flight; it
	// ends as soon as every message sent has reached every other connected
	// participant (and, in v1, its sender's ack is in).
	Drain time.Duration
	// Saturate makes every participant send as fast as the session can
	// deliver (Rate is ignored): each sender keeps at most Window messages
	// that some other participant has not yet received, so the run
	// measures throughput rather than how fast queues overflow (pacing by
	// one receiver only let a slower one's queue overflow: 1013).
	Saturate bool
	Window   int
	// WatchPIDs are processes (a proxy under test, all its workers) whose
	// memory and CPU the run samples.
	WatchPIDs []int
}

func (o *WSOptions) setDefaults() {
	if o.Participants == 0 {
		o.Participants = 3
	}
	if o.Size == 0 {
		o.Size = 256
	}
	if o.KeyIn == "" {
		o.KeyIn = "header"
	}
	if o.Mode == "" {
		o.Mode = "raw"
	}
	if o.Window == 0 {
		o.Window = 64
	}
	if o.Drain == 0 {
		o.Drain = 2 * time.Second
	}
	if o.KeyPrefix == "" {
		o.KeyPrefix = fmt.Sprintf("bench-%x", rand.Uint32())
	}
}

func (o *WSOptions) validate() error {
	errs := validateSessions(o.Targets, o.Sessions, o.Participants)
	if o.Size < 16 || o.Size > 1<<20 {
		errs = append(errs, fmt.Errorf("size must be in range [16, 1048576], got %d", o.Size))
	}
	if o.Duration <= 0 || o.Duration > time.Hour {
		errs = append(errs, fmt.Errorf("duration must be in range (0, 1h], got %s", o.Duration))
	}
	if o.Ramp < 0 || o.Ramp > time.Hour {
		errs = append(errs, fmt.Errorf("ramp must be in range [0, 1h], got %s", o.Ramp))
	}
	// A lost message keeps the run waiting the whole drain.
	if o.Drain < 0 || o.Drain > time.Hour {
		errs = append(errs, fmt.Errorf("drain must be in range [0, 1h], got %s", o.Drain))
	}
	if o.Rate < 0 || o.Rate > 10000 {
		errs = append(errs, fmt.Errorf("rate must be in range [0, 10000] per participant, got %g", o.Rate))
	}
	// Each connection keeps a slot per message of its window: bounded so
	// that sessions × participants windows fit in memory.
	if o.Saturate && (o.Window < 1 || o.Window > maxWindow) {
		errs = append(errs, fmt.Errorf("window must be in range [1, %d], got %d", maxWindow, o.Window))
	}
	if o.KeyIn != "header" && o.KeyIn != "cookie" {
		errs = append(errs, fmt.Errorf("key must be header or cookie, got %q", o.KeyIn))
	}
	switch o.Mode {
	case "raw":
	case "v1":
		if o.Size < v1MinSize {
			errs = append(errs, fmt.Errorf("size must be at least %d in v1 mode (send time, sender and sequence in hex, quoted), got %d", v1MinSize, o.Size))
		}
	default:
		errs = append(errs, fmt.Errorf("mode must be raw or v1, got %q", o.Mode))
	}
	return errors.Join(errs...)
}

// WSResult is the outcome of a run, written as JSON.
type WSResult struct {
	Options        WSOptions     `json:"options"`
	Started        time.Time     `json:"started"`
	ConnectTime    time.Duration `json:"connect_time_ns"`
	ConnsOK        int           `json:"connections_ok"`
	ConnsFailed    int           `json:"connections_failed"`
	FirstDialError string        `json:"first_dial_error,omitempty"`
	Sent           int64         `json:"messages_sent"`
	Delivered      int64         `json:"messages_delivered"`
	Expected       int64         `json:"messages_expected"`
	Lost           int64         `json:"messages_lost"`
	Duplicated     int64         `json:"messages_duplicated"`
	Reordered      int64         `json:"messages_reordered"`
	// Foreign counts frames that are not the run's messages (raw mode: a
	// frame that is not binary or not Size bytes), such as the greeting
	// a third-party backend sends first; they are never counted as
	// delivered.
	Foreign int64 `json:"frames_foreign,omitempty"`
	// v1 mode: sequence numbers a participant never saw (as msg or as the
	// ack of its own), summed over participants, and msgs sent but never
	// acked.
	SeqGaps        int64          `json:"seq_gaps,omitempty"`
	Unacked        int64          `json:"messages_unacked,omitempty"`
	DeliveredPerS  float64        `json:"delivered_per_second"`
	SplitSessions  int            `json:"split_sessions"`
	ClosedEarly    int            `json:"connections_closed_early"`
	Latency        Percentiles    `json:"latency"`
	LatencyCDF     []CDFPoint     `json:"latency_cdf"`
	SessionsByEdge map[string]int `json:"sessions_by_edge"`
	Timeline       []Tick         `json:"timeline"`
	// Watched processes, summed: RSS before connecting and with every
	// connection open, and CPU seconds spent while messages flowed.
	WatchRSSBefore    int64   `json:"watch_rss_before_bytes,omitempty"`
	WatchRSSConnected int64   `json:"watch_rss_connected_bytes,omitempty"`
	WatchRSSPerConn   float64 `json:"watch_rss_per_connection_bytes,omitempty"`
	WatchCPUSeconds   float64 `json:"watch_cpu_seconds,omitempty"`
}

// Percentiles of end-to-end latency (send → delivered to another participant).
type Percentiles struct {
	P50, P90, P99, Max time.Duration
	Samples            int
}

// Tick is one second of the run, for progress and charts.
type Tick struct {
	At          time.Duration `json:"at_ns"`
	Connections int64         `json:"connections"`
	Delivered   int64         `json:"delivered"`
}

// Summary is the one line printed at the end of a run.
func (r *WSResult) Summary() string {
	ms := func(d time.Duration) string { return fmt.Sprintf("%.3fms", float64(d)/1e6) }
	mode := ""
	if r.Options.Mode == "v1" {
		mode = " (v1)"
	}
	foreign := ""
	if r.Foreign > 0 {
		foreign = fmt.Sprintf(" (foreign frames=%d)", r.Foreign)
	}
	return fmt.Sprintf("ws%s: connections ok=%d failed=%d | %.0f msgs/s delivered | latency p50=%s p90=%s p99=%s max=%s | split sessions=%d lost=%d duplicated=%d",
		mode, r.ConnsOK, r.ConnsFailed, r.DeliveredPerS, ms(r.Latency.P50), ms(r.Latency.P90), ms(r.Latency.P99), ms(r.Latency.Max),
		r.SplitSessions, r.Lost, r.Duplicated) + foreign
}

type wsClient struct {
	session, index int
	conn           *websocket.Conn
	edge           string
	sent           atomic.Int64
	// per-sender receive state, indexed by the sender's participant
	// index: next is one past the highest sequence received, and bit k of
	// seen is set when sequence next-1-k was received (the last 64)
	next      []uint32
	seen      []uint64
	received  int64
	foreign   int64
	dup       int64
	reordered int64
	latencies latencySample
	closedErr error
	v1        v1State // v1 mode only
	arrivals  *arrivals
	// window holds one token per message in flight (Saturate): the sender
	// puts one in before sending; the last of its receivers to get the
	// message takes it out. unreceived[seq%Window] counts the receivers
	// still to get message seq (at most Window are in flight, so slots are
	// not reused early).
	window     chan struct{}
	unreceived []atomic.Int32
	peers      []*wsClient // the session's participants, by index
}

// arrivals counts what the readers receive of the messages sent
// (deliveries, and acks in v1), so the drain ends when nothing is left in
// flight instead of after a fixed wait.
type arrivals struct {
	n    atomic.Int64
	want atomic.Int64  // math.MaxInt64 until the senders are done
	done chan struct{} // gets a token once n reaches want
}

func newArrivals() *arrivals {
	a := &arrivals{done: make(chan struct{}, 1)}
	a.want.Store(math.MaxInt64)
	return a
}

func (a *arrivals) add() {
	if a.n.Add(1) >= a.want.Load() {
		select {
		case a.done <- struct{}{}:
		default:
		}
	}
}

// wait waits until want have arrived, or for at most d.
func (a *arrivals) wait(want int64, d time.Duration) {
	a.want.Store(want)
	t := time.NewTimer(d)
	defer t.Stop()
	for a.n.Load() < want {
		select {
		case <-a.done:
		case <-t.C:
			return
		}
	}
}

// maxWindow bounds Saturate's Window: far beyond an edge's send queue
// (edge.send_queue, 256 by default), past which a window only overflows it.
const maxWindow = 1 << 16

// maxSamples bounds the latency samples kept per receiver.
const maxSamples = 4096

// RunWS runs the load and reports what it measured. progress gets one line a
// second; nil for none.
func RunWS(ctx context.Context, opts WSOptions, progress io.Writer) (*WSResult, error) {
	opts.setDefaults()
	if err := opts.validate(); err != nil {
		return nil, &OptionsError{err}
	}
	if progress == nil {
		progress = io.Discard
	}
	res := &WSResult{Options: opts, Started: time.Now(), SessionsByEdge: map[string]int{}}
	epoch := time.Now()
	if len(opts.WatchPIDs) > 0 {
		rss, _, err := sampleProcs(opts.WatchPIDs)
		if err != nil {
			return nil, err
		}
		res.WatchRSSBefore = rss
	}

	// Connect, bounded in concurrency and spread over the ramp.
	total := opts.Sessions * opts.Participants
	clients := make([]*wsClient, total)
	var failed atomic.Int64
	var firstErr atomic.Value
	var connected atomic.Int64
	dialCtx, cancelDial := context.WithTimeout(ctx, opts.Duration+opts.Ramp+30*time.Second)
	defer cancelDial()
	sem := make(chan struct{}, 64)
	var wg sync.WaitGroup
	var pace time.Duration
	if opts.Ramp > 0 {
		pace = opts.Ramp / time.Duration(total)
	}
	res.Timeline = append(res.Timeline, Tick{}) // the chart's origin
	stopTicker := startProgress(progress, epoch, &connected, nil, res, total)
	for i := 0; i < total; i++ {
		if pace > 0 {
			// A pause Ctrl-C ends: a long ramp over few connections
			// paces them minutes apart.
			select {
			case <-dialCtx.Done():
			case <-time.After(pace):
			}
		}
		if dialCtx.Err() != nil {
			break
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := dialOne(dialCtx, opts, i)
			if err != nil {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, err.Error())
				return
			}
			clients[i] = c
			connected.Add(1)
		}()
	}
	wg.Wait()
	stopTicker()
	res.ConnectTime = time.Since(epoch)
	res.Timeline = append(res.Timeline, Tick{At: res.ConnectTime, Connections: connected.Load()})
	res.ConnsOK, res.ConnsFailed = int(connected.Load()), int(failed.Load())
	if e, ok := firstErr.Load().(string); ok {
		res.FirstDialError = e
	}
	defer func() {
		for _, c := range clients {
			if c != nil {
				c.conn.Close()
			}
		}
	}()

	// Split check: every connected participant of a session on one edge.
	for s := 0; s < opts.Sessions; s++ {
		edges := map[string]bool{}
		for _, c := range clients[s*opts.Participants : (s+1)*opts.Participants] {
			if c != nil {
				edges[c.edge] = true
			}
		}
		if len(edges) > 1 {
			res.SplitSessions++
		}
		for e := range edges {
			res.SessionsByEdge[e]++
		}
	}

	var cpuBefore float64
	if len(opts.WatchPIDs) > 0 {
		rss, cpu, err := sampleProcs(opts.WatchPIDs)
		if err != nil {
			return nil, err
		}
		res.WatchRSSConnected, cpuBefore = rss, cpu
		if res.ConnsOK > 0 {
			// Each participant is one client connection to the target.
			res.WatchRSSPerConn = float64(rss-res.WatchRSSBefore) / float64(res.ConnsOK)
		}
	}

	// Send and receive.
	runStart := time.Now()
	var delivered atomic.Int64
	stopTicker = startProgress(progress, epoch, &connected, &delivered, res, total)
	sendCtx, stopSending := context.WithTimeout(ctx, opts.Duration)
	defer stopSending()
	var senders, readers sync.WaitGroup
	arrived := newArrivals()
	// Set every client up before any goroutine reads another's fields.
	for _, c := range clients {
		if c == nil {
			continue
		}
		c.arrivals = arrived
		c.next = make([]uint32, opts.Participants)
		c.seen = make([]uint64, opts.Participants)
		c.latencies.max = maxSamples
		c.peers = clients[c.session*opts.Participants : (c.session+1)*opts.Participants]
		if opts.Saturate {
			c.window = make(chan struct{}, opts.Window)
			c.unreceived = make([]atomic.Int32, opts.Window)
		}
	}
	for _, c := range clients {
		if c == nil {
			continue
		}
		readers.Add(1)
		go func() {
			defer readers.Done()
			if opts.Mode == "v1" {
				c.readV1(runStart, &delivered, opts.Participants, opts.Size)
			} else {
				c.read(runStart, &delivered, opts.Participants, opts.Size)
			}
		}()
		if opts.Rate > 0 || opts.Saturate {
			senders.Add(1)
			go func() {
				defer senders.Done()
				c.send(sendCtx, opts, runStart)
			}()
		}
	}
	senders.Wait()
	sendTime := time.Since(runStart)
	if len(opts.WatchPIDs) > 0 {
		if _, cpu, err := sampleProcs(opts.WatchPIDs); err == nil {
			res.WatchCPUSeconds = cpu - cpuBefore
		}
	}
	// Let messages in flight arrive, then stop the readers.
	var want int64
	for s := 0; s < opts.Sessions; s++ {
		group := clients[s*opts.Participants : (s+1)*opts.Participants]
		receivers := int64(0)
		for _, c := range group {
			if c != nil {
				receivers++
			}
		}
		for _, c := range group {
			if c == nil {
				continue
			}
			want += c.sent.Load() * (receivers - 1)
			if opts.Mode == "v1" {
				want += c.sent.Load() // its acks
			}
		}
	}
	arrived.wait(want, opts.Drain)
	drainEnd := time.Now()
	for _, c := range clients {
		if c != nil {
			c.conn.SetReadDeadline(drainEnd)
		}
	}
	readers.Wait()
	stopTicker()
	res.Timeline = append(res.Timeline, Tick{At: time.Since(epoch), Connections: connected.Load(), Delivered: delivered.Load()})

	// Tally.
	var samples []*latencySample
	var deliveredTwice int64 // duplicates counted in Delivered
	for s := 0; s < opts.Sessions; s++ {
		group := clients[s*opts.Participants : (s+1)*opts.Participants]
		var sessionSent int64
		for _, c := range group {
			if c != nil {
				sessionSent += c.sent.Load()
			}
		}
		for _, c := range group {
			if c == nil {
				continue
			}
			res.Sent += c.sent.Load()
			res.Expected += sessionSent - c.sent.Load()
			res.Delivered += c.received
			res.Duplicated += c.dup + c.v1.dups
			deliveredTwice += c.dup
			res.Reordered += c.reordered
			res.Foreign += c.foreign
			res.SeqGaps += c.v1.gaps
			if opts.Mode == "v1" {
				res.Unacked += c.sent.Load() - c.v1.acked
			}
			if c.closedErr != nil {
				res.ClosedEarly++
			}
			samples = append(samples, &c.latencies)
		}
	}
	res.Lost = max(res.Expected-(res.Delivered-deliveredTwice), 0)
	res.DeliveredPerS = float64(res.Delivered) / sendTime.Seconds()
	lat := mergeLatencies(samples)
	res.Latency = lat.percentiles()
	res.LatencyCDF = lat.cdf()
	return res, nil
}

func dialOne(ctx context.Context, opts WSOptions, i int) (*wsClient, error) {
	session, index := i/opts.Participants, i%opts.Participants
	key := fmt.Sprintf("%s-%d", opts.KeyPrefix, session)
	h := http.Header{}
	if opts.KeyIn == "header" {
		h.Set("ctstickiness", key)
	} else {
		h.Set("Cookie", "ctstickiness="+key)
	}
	nd := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: -1}
	if len(opts.Sources) > 0 {
		nd.LocalAddr = &net.TCPAddr{IP: opts.Sources[i%len(opts.Sources)]}
	}
	d := websocket.Dialer{
		NetDialContext:   nd.DialContext,
		HandshakeTimeout: 10 * time.Second,
		ReadBufferSize:   max(opts.Size+64, 1024),
		WriteBufferSize:  max(opts.Size+64, 1024),
	}
	if opts.Mode == "v1" {
		d.Subprotocols = []string{protocolV1}
		d.ReadBufferSize = max(opts.Size+v1EnvelopeRoom, 1024)
	}
	target := opts.Targets[i%len(opts.Targets)]
	conn, resp, err := d.DialContext(ctx, target, h)
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("dial %s: %w (HTTP %d)", target, err, resp.StatusCode)
		}
		return nil, fmt.Errorf("dial %s: %w", target, err)
	}
	c := &wsClient{session: session, index: index, conn: conn, edge: resp.Header.Get("X-Ringlb-Edge")}
	if opts.Mode == "v1" {
		if err := c.welcome(); err != nil {
			conn.Close()
			return nil, fmt.Errorf("dial %s: %w", target, err)
		}
	}
	return c, nil
}

// Message layout: send time (ns since run start), sender index, sequence, padding.
func (c *wsClient) send(ctx context.Context, opts WSOptions, start time.Time) {
	buf, stamp := newRawMessage(opts.Size)
	kind := websocket.BinaryMessage
	if opts.Mode == "v1" {
		buf, stamp = newV1Message(opts.Size)
		kind = websocket.TextMessage
	}
	// Paced (not Saturate): message seq is due at due, a schedule kept
	// whatever the target does. A write the target holds up is followed
	// by the messages due meanwhile, each stamped with when it was due, so
	// its wait is in their latency, not left out of the run (a ticker drops
	// the ticks a blocked sender misses: coordinated omission).
	var interval time.Duration
	var due time.Time
	var wait *time.Timer
	if !opts.Saturate {
		interval = time.Duration(float64(time.Second) / opts.Rate)
		// First sends spread over one interval so the load is smooth.
		due = time.Now().Add(time.Duration(rand.Int64N(int64(interval))))
		wait = time.NewTimer(0)
		defer wait.Stop()
	}
	receivers := int32(0)
	for _, p := range c.peers {
		if p != nil && p != c {
			receivers++
		}
	}
	if opts.Mode == "v1" {
		receivers++ // the sender's own ack, which waits in its queue too
	}
	for seq := uint32(0); ; seq++ {
		var at time.Duration // when the message is stamped sent
		if !opts.Saturate {
			if d := time.Until(due); d > 0 {
				wait.Reset(d)
				select {
				case <-ctx.Done():
					return
				case <-wait.C:
				}
			} else if ctx.Err() != nil {
				return
			}
			at = due.Sub(start)
			due = due.Add(interval)
		} else {
			select {
			case <-ctx.Done():
				return
			case c.window <- struct{}{}:
			}
			c.unreceived[int(seq)%len(c.unreceived)].Store(receivers)
			at = time.Since(start)
		}
		stamp(buf, at, uint32(c.index), seq)
		c.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if err := c.conn.WriteMessage(kind, buf); err != nil {
			return
		}
		c.sent.Add(1)
	}
}

// read counts the messages that arrive, until the connection ends or its
// read deadline passes. A message is a binary frame of exactly size bytes
// (what send writes) from another participant; anything else is foreign
// (a backend's own frames), however its first bytes look.
func (c *wsClient) read(start time.Time, delivered *atomic.Int64, participants, size int) {
	for {
		kind, r, err := c.conn.NextReader()
		if err != nil {
			var ne net.Error
			if !(errors.As(err, &ne) && ne.Timeout()) {
				c.closedErr = err
			}
			return
		}
		var head [16]byte
		n, _ := io.ReadFull(r, head[:])
		rest, _ := io.Copy(io.Discard, r)
		if kind != websocket.BinaryMessage || int64(n)+rest != int64(size) {
			c.foreign++
			continue
		}
		sentAt := time.Duration(binary.LittleEndian.Uint64(head[0:]))
		from := int(binary.LittleEndian.Uint32(head[8:]))
		seq := binary.LittleEndian.Uint32(head[12:])
		if from >= participants || from == c.index {
			c.foreign++
			continue
		}
		c.delivered(start, delivered, from, seq, sentAt)
	}
}

// delivered records one message from participant from (its sequence seq,
// sent at sentAt since start): order per sender and latency.
func (c *wsClient) delivered(start time.Time, delivered *atomic.Int64, from int, seq uint32, sentAt time.Duration) {
	c.received++
	delivered.Add(1)
	c.arrivals.add()
	if sender := c.peers[from]; sender != nil {
		sender.received1(seq)
	}
	switch next := c.next[from]; {
	case seq >= next:
		// The newest so far. Those it skipped are reordered when they
		// come, lost (in the tally) when they never do.
		if shift := seq - next + 1; shift < 64 {
			c.seen[from] = c.seen[from]<<shift | 1
		} else {
			c.seen[from] = 1
		}
		c.next[from] = seq + 1
	case next-1-seq < 64 && c.seen[from]&(1<<(next-1-seq)) == 0:
		c.seen[from] |= 1 << (next - 1 - seq)
		c.reordered++
	default:
		// Received before, or too far back to tell: a replay is likelier
		// than a msg 64 others overtook.
		c.dup++
	}
	c.latencies.add(time.Since(start) - sentAt)
}

// received1 records that one more receiver got this client's message seq
// (Saturate): the last one frees its slot in the window.
func (c *wsClient) received1(seq uint32) {
	if c.window != nil && c.unreceived[int(seq)%len(c.unreceived)].Add(-1) == 0 {
		select {
		case <-c.window:
		default:
		}
	}
}

// newRawMessage returns a raw-mode message of size bytes and the function
// that stamps it: send time (ns since start), sender index, sequence, then
// padding.
func newRawMessage(size int) ([]byte, func([]byte, time.Duration, uint32, uint32)) {
	buf := make([]byte, size)
	for i := 16; i < len(buf); i++ {
		buf[i] = 'a' + byte(i%26)
	}
	return buf, func(b []byte, at time.Duration, from, seq uint32) {
		binary.LittleEndian.PutUint64(b[0:], uint64(at))
		binary.LittleEndian.PutUint32(b[8:], from)
		binary.LittleEndian.PutUint32(b[12:], seq)
	}
}

// latencySample keeps at most max of the latencies added, each one added
// as likely to be kept as any other (reservoir sampling): the percentiles
// of a long run are those of all of it, not of its first seconds.
type latencySample struct {
	max  int
	seen int
	d    []time.Duration
}

func (s *latencySample) add(d time.Duration) {
	s.seen++
	if len(s.d) < s.max {
		s.d = append(s.d, d)
	} else if j := rand.IntN(s.seen); j < s.max {
		s.d[j] = d
	}
}

// latencies is a run's latency sample as its percentiles and CDF read it,
// sorted by latency.
type latencies []countedLatency

// countedLatency is one latency kept, with cum the observations it and
// every latency before it stand for (each stands for what its reservoir
// saw per latency it kept).
type countedLatency struct {
	d   time.Duration
	cum float64
}

// mergeLatencies joins reservoirs so that every observation counts alike:
// a latency kept by a reservoir that saw n and kept k stands for n/k. Not
// one for one: in a saturated run one receiver gets many times the
// deliveries of another, and its maxSamples would weigh no more than the
// other's.
func mergeLatencies(samples []*latencySample) latencies {
	n := 0
	for _, s := range samples {
		n += len(s.d)
	}
	l := make(latencies, 0, n)
	for _, s := range samples {
		w := float64(s.seen) / float64(max(len(s.d), 1))
		for _, d := range s.d {
			l = append(l, countedLatency{d, w})
		}
	}
	slices.SortFunc(l, func(a, b countedLatency) int { return cmp.Compare(a.d, b.d) })
	for i := 1; i < len(l); i++ {
		l[i].cum += l[i-1].cum
	}
	return l
}

// percentiles of samples that each count once.
func percentiles(d []time.Duration) Percentiles {
	return mergeLatencies([]*latencySample{{seen: len(d), d: d}}).percentiles()
}

func (l latencies) percentiles() Percentiles {
	if len(l) == 0 {
		return Percentiles{}
	}
	at := func(q float64) time.Duration { return l[l.rank(q)].d }
	return Percentiles{P50: at(0.50), P90: at(0.90), P99: at(0.99), Max: l[len(l)-1].d, Samples: len(l)}
}

// rank is the index of the q-quantile by nearest rank: the first latency
// with at least q of the observations at or below it. The summary's
// percentiles and the chart's CDF both read it, so a run's p50 is the
// latency its CDF plots at 0.5. The tolerance keeps a product that float
// arithmetic puts a hair above a whole number (0.07·100) on that number.
func (l latencies) rank(q float64) int {
	total := l[len(l)-1].cum
	target := q*total - total*1e-12
	i, _ := slices.BinarySearchFunc(l, target, func(e countedLatency, t float64) int { return cmp.Compare(e.cum, t) })
	return min(i, len(l)-1)
}

// startProgress prints a line a second and records the timeline; the
// returned function stops it.
func startProgress(w io.Writer, epoch time.Time, conns, delivered *atomic.Int64, res *WSResult, total int) func() {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		var last int64
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			tick := Tick{At: time.Since(epoch), Connections: conns.Load()}
			line := fmt.Sprintf("[%5.1fs] connections %d/%d", tick.At.Seconds(), tick.Connections, total)
			if delivered != nil {
				tick.Delivered = delivered.Load()
				line += fmt.Sprintf("  delivered %d (%d/s)", tick.Delivered, tick.Delivered-last)
				last = tick.Delivered
			}
			res.Timeline = append(res.Timeline, tick)
			fmt.Fprintln(w, line)
		}
	}()
	return func() { close(done); <-finished }
}

// ParseSources expands "127.0.0.1-127.0.0.8" or a comma list into addresses.
func ParseSources(s string) ([]net.IP, error) {
	if s == "" {
		return nil, nil
	}
	var out []net.IP
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a := net.ParseIP(strings.TrimSpace(lo)).To4()
		if a == nil {
			return nil, fmt.Errorf("source %q is not an IPv4 address", lo)
		}
		if !isRange {
			out = append(out, a)
			continue
		}
		b := net.ParseIP(strings.TrimSpace(hi)).To4()
		if b == nil || binary.BigEndian.Uint32(b) < binary.BigEndian.Uint32(a) || binary.BigEndian.Uint32(b)-binary.BigEndian.Uint32(a) >= 1024 {
			return nil, fmt.Errorf("source range %q must be LOW-HIGH IPv4 with at most 1024 addresses", part)
		}
		for v := binary.BigEndian.Uint32(a); v <= binary.BigEndian.Uint32(b); v++ {
			ip := make(net.IP, 4)
			binary.BigEndian.PutUint32(ip, v)
			out = append(out, ip)
		}
	}
	return out, nil
}

// sampleProcs sums the resident memory (bytes) and CPU time (seconds) of pids
// from /proc.
func sampleProcs(pids []int) (rss int64, cpu float64, err error) {
	const clockTicks = 100 // USER_HZ on Linux
	pageSize := int64(os.Getpagesize())
	for _, pid := range pids {
		statm, err := os.ReadFile(fmt.Sprintf("/proc/%d/statm", pid))
		if err != nil {
			return 0, 0, fmt.Errorf("watch process %d: %w", pid, err)
		}
		var size, resident int64
		if _, err := fmt.Sscan(string(statm), &size, &resident); err != nil {
			return 0, 0, fmt.Errorf("watch process %d: statm: %w", pid, err)
		}
		rss += resident * pageSize
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return 0, 0, fmt.Errorf("watch process %d: %w", pid, err)
		}
		// Fields after the command name (which may hold spaces) start at ")".
		fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		if len(fields) < 13 {
			return 0, 0, fmt.Errorf("watch process %d: short stat", pid)
		}
		var utime, stime float64
		fmt.Sscan(fields[11], &utime)
		fmt.Sscan(fields[12], &stime)
		cpu += (utime + stime) / clockTicks
	}
	return rss, cpu, nil
}
