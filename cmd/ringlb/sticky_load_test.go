package main

// The workload of the third-party session test (sticky_test.go): live
// sessions of raw WebSocket participants in front of backends that know
// nothing of ringlb (bench/peers/wsrelay), with the accounting that says whether
// a session split. A backend answers every connection first with its name
// and its process's instance, so each participant knows where it landed.

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fasthttp/websocket"
)

// stickyOptions describes the workload.
type stickyOptions struct {
	fronts       []string // ws:// URLs of the balancers (or HAProxy instances)
	sources      []net.IP // local addresses dialed from, round-robin
	sessions     int
	participants int           // per session, connected for the whole run
	rate         float64       // msgs per second per participant
	guestStay    time.Duration // a guest slot per session: stays up to this long,
	guestAway    time.Duration // then is away up to this long before the next joins
	// churnEvery starts a new short session this often (0: none): two
	// participants at once, one through each of the first two fronts,
	// staying churnStay. They place new keys while the cluster changes.
	churnEvery time.Duration
	churnStay  time.Duration
	// quietEvery makes every quietEvery-th session quiet (0: none): no
	// guests, nobody joins; once every other phase (blip), one of its
	// participants reconnects, as after a network blip, long after the
	// session's last join.
	quietEvery int
	keyPrefix  string
	timings    stickyTimings
}

// Client timings: a dial attempt's bound, the reconnect backoff and the
// liveness bound on a silent connection.
const (
	stickyDialTimeout = 5 * time.Second
	stickyBackoffMin  = 20 * time.Millisecond
	stickyBackoffMax  = 200 * time.Millisecond
	stickyReadTimeout = 60 * time.Second
	stickyDialers     = 64 // connection set-up at the start, at once
)

// stickyPhase is what happened from one change to the next.
type stickyPhase struct {
	Name string
	// Joins counts connections of the live sessions (participants
	// reconnecting, guests joining) that reached a backend.
	Joins int
	// SplitJoins counts joins that landed on another backend than a
	// participant of their session still connected: the session split.
	SplitJoins    int
	SplitSessions map[string]bool
	// SplitAtCheckPoint counts sessions whose connected participants were
	// on two backends at the phase's check point.
	SplitAtCheckPoint int
	// Disconnected counts, by backend, sessions of which the phase closed
	// a connection (not the workload's own leaving guests).
	Disconnected map[string]map[string]bool
	// Moved counts, by the backend they left, sessions whose participants
	// came back on another backend than the one they had been on.
	Moved map[string]map[string]bool
	// Churn: new sessions started in the phase, and those of them whose
	// two first participants did not meet on one backend.
	ChurnStarted, ChurnSplit int
	// Conflicts is the balancers' ringlb_balancer_session_table_conflicts_total
	// over the phase (ringlb only).
	Conflicts float64
	// RelaySplit counts keys hosted by two backends at once at the check
	// point, as the backends themselves report (GET /keys).
	RelaySplit int
}

func newStickyPhase(name string) *stickyPhase {
	return &stickyPhase{Name: name, SplitSessions: map[string]bool{}, Disconnected: map[string]map[string]bool{}, Moved: map[string]map[string]bool{}}
}

// stickySession is one key and its connected participants.
type stickySession struct {
	key   string
	churn bool
	quiet bool
	// blip, for a quiet session, tells its first participant to reconnect.
	blip  chan struct{}
	conns map[*stickyConn]string // connected participant → "name instance" of its backend
	// home is the backend name its participants were last on.
	home string
}

type stickyConn struct {
	guest bool
	blip  chan struct{} // the test asks this participant to reconnect
}

// stickyLoad runs the workload until stop.
type stickyLoad struct {
	o    stickyOptions
	stop chan struct{}
	wg   sync.WaitGroup
	src  atomic.Uint32

	mu       sync.Mutex
	phases   []*stickyPhase
	sessions []*stickySession
	dead     map[string]bool // backend instances killed: nothing is connected to them any more
	started  atomic.Int64    // participants connected at least once
	sent     atomic.Int64
	received atomic.Int64
	churnN   int
	stopped  bool
}

func newStickyLoad(o stickyOptions) *stickyLoad {
	if o.keyPrefix == "" {
		o.keyPrefix = fmt.Sprintf("s%x", rand.Uint32())
	}
	l := &stickyLoad{o: o, stop: make(chan struct{}), phases: []*stickyPhase{newStickyPhase("steady")}, dead: map[string]bool{}}
	for i := range o.sessions {
		s := &stickySession{key: fmt.Sprintf("%s-%05d", o.keyPrefix, i), conns: map[*stickyConn]string{}}
		if o.quietEvery > 0 && i%o.quietEvery == o.quietEvery-1 {
			s.quiet, s.blip = true, make(chan struct{}, 1)
		}
		l.sessions = append(l.sessions, s)
	}
	return l
}

// start connects every participant (stickyDialers at a time) and returns
// once all are connected or ctx ends; guests and churn start then.
func (l *stickyLoad) start(ctx context.Context) error {
	sem := make(chan struct{}, stickyDialers)
	for i, s := range l.sessions {
		for p := range l.o.participants {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return ctx.Err()
			}
			var blip chan struct{}
			if p == 0 {
				blip = s.blip
			}
			l.wg.Add(1)
			go func() {
				defer l.wg.Done()
				l.participant(s, &stickyConn{blip: blip}, i*l.o.participants+p, time.Time{}, func() { <-sem })
			}()
		}
	}
	for range stickyDialers {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if l.o.guestStay > 0 {
		for i, s := range l.sessions {
			if s.quiet {
				continue
			}
			l.wg.Add(1)
			go func() {
				defer l.wg.Done()
				l.guests(s, i)
			}()
		}
	}
	if l.o.churnEvery > 0 {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			l.churn()
		}()
	}
	return nil
}

// guests fills one guest slot of s until stop.
func (l *stickyLoad) guests(s *stickySession, n int) {
	for {
		if !l.sleep(time.Duration(rand.Int64N(int64(l.o.guestAway)) + 1)) {
			return
		}
		stay := time.Now().Add(time.Duration(rand.Int64N(int64(l.o.guestStay)) + 1))
		l.participant(s, &stickyConn{guest: true}, n, stay, nil)
	}
}

// churn starts a new short session every churnEvery until stop.
func (l *stickyLoad) churn() {
	t := time.NewTicker(l.o.churnEvery)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
		}
		l.mu.Lock()
		l.churnN++
		s := &stickySession{key: fmt.Sprintf("%s-new-%05d", l.o.keyPrefix, l.churnN), churn: true, conns: map[*stickyConn]string{}}
		l.phases[len(l.phases)-1].ChurnStarted++
		l.mu.Unlock()
		stay := time.Now().Add(l.o.churnStay)
		for f := range min(2, len(l.o.fronts)) {
			l.wg.Add(1)
			go func() {
				defer l.wg.Done()
				l.participant(s, &stickyConn{guest: true}, f, stay, nil)
			}()
		}
	}
}

func (l *stickyLoad) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-l.stop:
		return false
	case <-t.C:
		return true
	}
}

// participant connects to s through the fronts (starting with front n,
// alternating on every reconnect) and stays until stop, or until leaveAt
// when it is set; connected is called once after its first connection.
func (l *stickyLoad) participant(s *stickySession, c *stickyConn, n int, leaveAt time.Time, connected func()) {
	front := n % len(l.o.fronts)
	backoff := stickyBackoffMin
	for {
		if !leaveAt.IsZero() && !time.Now().Before(leaveAt) {
			break
		}
		conn, backend, err := l.dial(s.key, l.o.fronts[front])
		front = (front + 1) % len(l.o.fronts)
		if err != nil {
			if !l.sleep(backoff) {
				break
			}
			backoff = min(2*backoff, stickyBackoffMax)
			continue
		}
		backoff = stickyBackoffMin
		l.joined(s, c, backend)
		if connected != nil {
			connected()
			connected = nil
		}
		end := l.run(conn, leaveAt, c.blip)
		l.left(s, c, backend, end != endServer)
		if end == endLeft || l.isStopped() {
			break
		}
	}
	if connected != nil {
		connected()
	}
}

func (l *stickyLoad) isStopped() bool {
	select {
	case <-l.stop:
		return true
	default:
		return false
	}
}

// dial connects to key's session through front and reads the backend's
// first frame: "name instance".
func (l *stickyLoad) dial(key, front string) (*websocket.Conn, string, error) {
	d := websocket.Dialer{HandshakeTimeout: stickyDialTimeout}
	if len(l.o.sources) > 0 {
		src := l.o.sources[int(l.src.Add(1))%len(l.o.sources)]
		d.NetDial = func(network, addr string) (net.Conn, error) {
			return (&net.Dialer{Timeout: stickyDialTimeout, LocalAddr: &net.TCPAddr{IP: src}}).Dial(network, addr)
		}
	}
	h := http.Header{}
	h.Set("ctstickiness", key)
	ctx, cancel := context.WithTimeout(context.Background(), stickyDialTimeout)
	defer cancel()
	conn, resp, err := d.DialContext(ctx, front, h)
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	if err != nil {
		return nil, "", err
	}
	conn.SetReadDeadline(time.Now().Add(stickyDialTimeout))
	_, first, err := conn.ReadMessage()
	if err != nil {
		conn.Close()
		return nil, "", err
	}
	return conn, string(first), nil
}

// How a connection ended: the participant left (or the run stopped), it
// reconnects on the test's word (blip), or the other side closed it.
const (
	endLeft = iota
	endBlip
	endServer
)

// run sends and reads on conn until it ends, stop, leaveAt or a blip, and
// says which.
func (l *stickyLoad) run(conn *websocket.Conn, leaveAt time.Time, blip <-chan struct{}) int {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			conn.SetReadDeadline(time.Now().Add(stickyReadTimeout))
			if _, _, err := conn.ReadMessage(); err != nil {
				return
			}
			l.received.Add(1)
		}
	}()
	var leave <-chan time.Time
	if !leaveAt.IsZero() {
		t := time.NewTimer(time.Until(leaveAt))
		defer t.Stop()
		leave = t.C
	}
	every := time.Duration(float64(time.Second) / l.o.rate)
	tick := time.NewTimer(time.Duration(rand.Int64N(int64(every))) + 1)
	defer tick.Stop()
	msg := []byte(strings.Repeat("x", 64))
	for {
		select {
		case <-done:
			conn.Close()
			return endServer
		case <-l.stop:
			conn.Close()
			<-done
			return endLeft
		case <-blip:
			conn.Close()
			<-done
			return endBlip
		case <-leave:
			conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
			conn.Close()
			<-done
			return endLeft
		case <-tick.C:
			conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
			if err := conn.WriteMessage(websocket.TextMessage, msg); err != nil {
				conn.Close()
				<-done
				return endServer
			}
			l.sent.Add(1)
			tick.Reset(every/2 + time.Duration(rand.Int64N(int64(every))))
		}
	}
}

// joined records a connection of s that reached backend ("name instance").
func (l *stickyLoad) joined(s *stickySession, c *stickyConn, backend string) {
	name := backendName(backend)
	l.mu.Lock()
	defer l.mu.Unlock()
	p := l.phases[len(l.phases)-1]
	split := false
	for _, other := range s.conns {
		if other != backend && !l.dead[other] {
			split = true
		}
	}
	if s.churn {
		if split {
			p.ChurnSplit++
		}
	} else {
		p.Joins++
		if split {
			p.SplitJoins++
			p.SplitSessions[s.key] = true
		}
		if s.home != "" && s.home != name && !split {
			mark(p.Moved, s.home, s.key)
		}
	}
	s.home = name
	s.conns[c] = backend
}

// left records that c's connection to backend ended; byUs says the
// participant ended it.
func (l *stickyLoad) left(s *stickySession, c *stickyConn, backend string, byUs bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(s.conns, c)
	if !byUs && !l.stopped && !s.churn {
		mark(l.phases[len(l.phases)-1].Disconnected, backendName(backend), s.key)
	}
}

func mark(m map[string]map[string]bool, backend, key string) {
	if m[backend] == nil {
		m[backend] = map[string]bool{}
	}
	m[backend][key] = true
}

// backendName is the name in a backend's "name instance" greeting.
func backendName(greeting string) string {
	name, _, _ := strings.Cut(greeting, " ")
	return name
}

// killed says that backend instance is gone (kill -9): its connections are
// dead, so a session is not split by participants still counted on it.
func (l *stickyLoad) killed(instance string) {
	l.mu.Lock()
	l.dead[instance] = true
	l.mu.Unlock()
}

// checkPoint counts the sessions whose connected participants are on two
// live backends now, into the current phase.
func (l *stickyLoad) checkPoint() {
	l.mu.Lock()
	defer l.mu.Unlock()
	p := l.phases[len(l.phases)-1]
	for _, s := range l.sessions {
		seen := ""
		for _, b := range s.conns {
			if l.dead[b] {
				continue
			}
			if seen != "" && b != seen {
				p.SplitAtCheckPoint++
				p.SplitSessions[s.key] = true
				break
			}
			seen = b
		}
	}
}

// blipQuiet makes one participant of half the quiet sessions (alternating
// halves with the phase) reconnect.
func (l *stickyLoad) blipQuiet() (n int) {
	l.mu.Lock()
	phase := len(l.phases)
	l.mu.Unlock()
	q := 0
	for _, s := range l.sessions {
		if !s.quiet {
			continue
		}
		if q%2 == phase%2 {
			select {
			case s.blip <- struct{}{}:
				n++
			default:
			}
		}
		q++
	}
	return n
}

// next starts a new phase.
func (l *stickyLoad) next(name string) {
	l.mu.Lock()
	l.phases = append(l.phases, newStickyPhase(name))
	l.mu.Unlock()
}

// current returns the phase now running.
func (l *stickyLoad) current() *stickyPhase {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.phases[len(l.phases)-1]
}

// finish stops every participant and waits for them.
func (l *stickyLoad) finish() {
	l.mu.Lock()
	l.stopped = true
	l.mu.Unlock()
	close(l.stop)
	l.wg.Wait()
}

// homes returns, for every live session, the backend name its participants
// are on now ("" when none is connected).
func (l *stickyLoad) homes() map[string]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]string{}
	for _, s := range l.sessions {
		for _, b := range s.conns {
			if !l.dead[b] {
				out[s.key] = backendName(b)
				break
			}
		}
	}
	return out
}

// stickyReport is one front's run: its phases, in order.
type stickyReport struct {
	Front  string
	Phases []*stickyPhase
	Sent   int64
	Recv   int64
}

func (l *stickyLoad) report(front string) *stickyReport {
	l.mu.Lock()
	defer l.mu.Unlock()
	return &stickyReport{Front: front, Phases: slices.Clone(l.phases), Sent: l.sent.Load(), Recv: l.received.Load()}
}

func countKeys(m map[string]map[string]bool) (n int) {
	for _, keys := range m {
		n += len(keys)
	}
	return n
}

// byBackend renders {backend: sessions} sorted by backend.
func byBackend(m map[string]map[string]bool) string {
	var names []string
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	for i, n := range names {
		if i > 0 {
			b.WriteString(" ")
		}
		fmt.Fprintf(&b, "%s:%d", n, len(m[n]))
	}
	return b.String()
}

// churnStarted counts the new sessions started over the run.
func (r *stickyReport) churnStarted() (n int) {
	for _, p := range r.Phases {
		n += p.ChurnStarted
	}
	return n
}
