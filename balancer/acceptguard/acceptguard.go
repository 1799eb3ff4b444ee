// Package acceptguard keeps a server's accept loop alive when the process
// runs out of file descriptors (or buffers, or memory), keeps descriptors
// for the process's own work by capping how many connections a listener
// holds open, keeps one client from taking every one of them, and closes
// the connections it accepted with a linger, so that a client still sending
// does not lose its answer to a reset (linger.go).
//
// Its Listener is for the fasthttp and miekg/dns servers of ringlb
// (balancer, edge, gslb TCP): fasthttp's Serve returns on EMFILE, which
// ended the process, and miekg/dns retries at once, spinning a core. The
// admin ports (net/http, whose Serve backs off by itself) use it for its
// per-client cap alone. PerAddr is the one bookkeeping of per-client
// limits: the Listener's (at Accept) and the balancer's data port's
// (behind PROXY protocol, on a connection's first read) count with it.
package acceptguard

import (
	"container/list"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// The backoff after a failed Accept, as net/http's Server.Serve: 5 ms,
// doubling up to 1 s, reset by the next accepted connection.
const (
	minDelay = 5 * time.Millisecond
	maxDelay = time.Second
)

// DefaultLogEvery is how often, at most, a Listener logs failed accepts (and,
// separately, refused connections) when Config.LogEvery is zero.
const DefaultLogEvery = 10 * time.Second

// refusalWriteTimeout bounds writing a refusal. The answer is small and the
// socket fresh, so it fits the send buffer at once; the bound only keeps a
// broken socket from stalling the accept loop.
const refusalWriteTimeout = 100 * time.Millisecond

// Log messages, stable so operators can alert on them.
const (
	msgAcceptFailed = "accept failed; backing off"
	msgRefused      = "connection refused: max_connections reached"
	msgRefusedPerIP = "connection refused: max_connections_per_ip reached"
)

// Counter is what a Listener counts with (a prometheus.Counter is one).
type Counter interface{ Inc() }

// Config is what Wrap needs; every field is optional.
type Config struct {
	// Name names the listener in log lines, e.g. "balancer data".
	Name   string
	Logger *slog.Logger
	// Errors counts failed Accept calls, each of which is retried.
	Errors Counter
	// MaxConns caps the connections accepted and not yet closed; 0: no
	// cap. SetMax changes it.
	MaxConns int
	// Budget, when set, is the cap instead of MaxConns (unused then): one
	// count of open connections that every listener given it shares, so
	// that the ports of a process together stay within what its
	// descriptors allow. SetMax of any of them changes it.
	Budget *Budget
	// Refused counts connections refused at the cap.
	Refused Counter
	// Refusal is written to a connection refused at the cap before it is
	// closed (HTTPAnswer builds one); nil: closed without a word.
	Refusal []byte
	// MaxConnsPerIP caps the connections one client (ClientNetwork: an
	// IPv4 address, an IPv6 /64) holds open, so that one client cannot
	// take every slot under MaxConns; 0: no cap. SetMaxPerIP changes it.
	MaxConnsPerIP int
	// RefusedPerIP counts connections refused at MaxConnsPerIP.
	RefusedPerIP Counter
	// RefusalPerIP is written to a connection refused at MaxConnsPerIP
	// before it is closed; nil: closed without a word.
	RefusalPerIP []byte
	// Clients, when set, counts each client's connections instead of a
	// PerAddr of MaxConnsPerIP's (which is then unused): a user's own
	// PerAddr, or a policy over one. Its refusals are counted and answered
	// as MaxConnsPerIP's; PerIPSetting names its limit in their log line
	// (default "max_connections_per_ip").
	Clients      Clients
	PerIPSetting string
	// Spill admits a connection beyond its client's share (MaxConnsPerIP,
	// Clients: TooManyOpen) while the listener is under its cap, instead
	// of refusing it; at the cap a new connection takes the place of a
	// spilled one that has not been served yet (Conn.ReleaseClient),
	// preferably one on which no request is arriving: the client holding
	// the most loses its oldest, counted by RefusedPerIP (spill.go).
	// A share then bounds what a client holds only when others need the
	// room, and a burst from one address (a balancer forwarding a wave of
	// reconnections) is not refused while there is room for it.
	Spill bool
	// EndWaiting: at the cap, a new connection within its client's share
	// takes the place of the connection that has waited the longest for
	// its client's next request — accepted, answered (written to) or
	// waiting again (Conn.Waiting), and no request read whole since (the
	// server says so: Conn.Serving) — and has no bytes unread
	// (waiting.go): ended as a spilled one is (its reads end, ErrEnded;
	// its slot passes on), counted by EndedWaiting. For a server of requests and answers whose clients
	// reconnect when an idle connection closes (DNS over TCP): waiting
	// connections, whoever's, cannot hold every slot, nor can requests
	// trickled a byte at a time. Not with Spill (Spill wins).
	EndWaiting   bool
	EndedWaiting Counter
	// EndStalledWrites, with EndWaiting: a connection whose write has
	// waited this long for its client to read (the socket's buffers full)
	// waits on its client as an idle one does, and may be ended to make
	// room so too, whatever is unread on its socket (a client that
	// pipelines requests and reads no answer has them), its write ended
	// with it — until the write completes. Else a client that never reads
	// holds its slot for the server's whole write deadline, and clients
	// reconnecting at once hold every slot (gslb's
	// TestTCPBlockedWritersCannotHoldEverySlot). 0: a writing connection
	// is never ended.
	EndStalledWrites time.Duration
	// LingerAtStop: connections go on lingering as they close once the
	// listener is closed, for a server whose stop closes its listener
	// first and then ends its connections with requests still unread on
	// them — a DNS server's, whose clients pipeline queries: closed at
	// once, each of those connections was reset, and its client's kernel
	// dropped the answers it had not read yet. Each linger stays bounded
	// (lingerTime, lingerBytes, lingerMax), in the closer's own goroutine,
	// which the server's stop waits for within its own bound.
	LingerAtStop bool
	// Memory, when it is low (Process: near the process's memory limit),
	// refuses every new connection, counted by RefusedMemory and written
	// RefusalMemory (nil: closed without a word); nil: not consulted.
	Memory        *Memory
	RefusedMemory Counter
	RefusalMemory []byte
	// LogEvery bounds logging to one line per LogEvery for failed accepts
	// and one for each kind of refusal, each line with the count it
	// stands for (default DefaultLogEvery).
	LogEvery time.Duration
}

// Listener wraps a net.Listener: Accept retries failures after a backoff
// instead of returning them, and refuses connections beyond the cap. Only
// closing the listener ends Accept with an error. Create it with Wrap.
type Listener struct {
	net.Listener
	name   string
	log    *slog.Logger
	errs   Counter
	budget *Budget
	perIP  Clients
	own    *PerAddr // perIP when it is the listener's own (SetMaxPerIP)
	mem    *Memory
	spill  *spill // nil: Config.Spill unset
	// waiting is the connections waiting for a request (Config.EndWaiting);
	// nil: unset, or Spill.
	waiting      *waiting
	endedWaiting Counter
	// stall is Config.EndStalledWrites (0 without waiting).
	stall time.Duration
	// perIPMsg and perIPSetting are the per-client refusal's log line and
	// the name of its limit there.
	perIPMsg, perIPSetting string

	// atCap, perClient and lowMemory are the three reasons a connection
	// is refused.
	atCap, perClient, lowMemory refusalKind

	done      chan struct{} // closed by Close: a backoff in progress ends
	closeOnce sync.Once

	// lingering is the connections being closed with a linger
	// (linger.go): at most lingerMax at once, ended by Close unless
	// lingerAtStop.
	lingering    lingering
	lingerAtStop bool

	errLog, evictLog LogLimit

	// waited, when set (tests), is told each backoff before it is slept.
	waited func(time.Duration)
}

// Wrap guards ln as cfg says.
func Wrap(ln net.Listener, cfg Config) *Listener {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.LogEvery <= 0 {
		cfg.LogEvery = DefaultLogEvery
	}
	l := &Listener{
		Listener: ln, name: cfg.Name, log: cfg.Logger, errs: cfg.Errors,
		perIP:        cfg.Clients,
		perIPMsg:     msgRefusedPerIP,
		perIPSetting: "max_connections_per_ip",
		mem:          cfg.Memory,
		atCap:        refusalKind{count: cfg.Refused, answer: cfg.Refusal, log: LogLimit{Every: cfg.LogEvery}},
		perClient:    refusalKind{count: cfg.RefusedPerIP, answer: cfg.RefusalPerIP, log: LogLimit{Every: cfg.LogEvery}},
		lowMemory:    refusalKind{count: cfg.RefusedMemory, answer: cfg.RefusalMemory, log: LogLimit{Every: cfg.LogEvery}},
		done:         make(chan struct{}),
		errLog:       LogLimit{Every: cfg.LogEvery},
		evictLog:     LogLimit{Every: cfg.LogEvery},
	}
	if cfg.Spill {
		l.spill = &spill{}
	} else if cfg.EndWaiting {
		l.waiting, l.endedWaiting, l.stall = &waiting{}, cfg.EndedWaiting, cfg.EndStalledWrites
	}
	if l.perIP == nil {
		l.own = NewPerAddr(PerAddrLimits{MaxConns: cfg.MaxConnsPerIP})
		l.perIP = l.own
	}
	if cfg.PerIPSetting != "" {
		l.perIPSetting = cfg.PerIPSetting
		l.perIPMsg = "connection refused: " + cfg.PerIPSetting + " reached"
	}
	l.lingering.timeout = lingerTime
	l.lingerAtStop = cfg.LingerAtStop
	l.budget = cfg.Budget
	if l.budget == nil {
		l.budget = NewBudget(cfg.MaxConns)
	}
	return l
}

// Budget is a cap on open connections shared by listeners (Config.Budget).
type Budget struct{ max, open atomic.Int64 }

// NewBudget returns a budget of max connections; 0: no cap.
func NewBudget(max int) *Budget {
	b := &Budget{}
	b.max.Store(int64(max))
	return b
}

// SetMax changes the cap for connections accepted from now on; 0: no cap.
func (b *Budget) SetMax(n int) { b.max.Store(int64(n)) }

// Max is the cap; 0: no cap.
func (b *Budget) Max() int { return int(b.max.Load()) }

// Accept returns the next connection under the caps. A failed accept is
// counted, logged at a bounded rate and retried after a backoff, whatever
// the error: EMFILE and ENFILE (descriptors), ENOBUFS and ENOMEM (kernel
// memory) pass once connections close, ECONNABORTED and the network errors
// accept(2) passes on concern one connection, and a fault that does not
// pass must not end the process either: it shows in the log and the
// metric. Only a closed listener ends Accept.
func (l *Listener) Accept() (net.Conn, error) {
	var delay time.Duration
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil, err
			}
			if l.closed() {
				// A failure that raced with Close: the server must see the
				// closed listener, not an error it would report.
				return nil, &net.OpError{Op: "accept", Net: l.Addr().Network(), Addr: l.Addr(), Err: net.ErrClosed}
			}
			delay = nextDelay(delay)
			l.failed(err, delay)
			l.sleep(delay)
			continue
		}
		if l.mem.Low() {
			l.lowMemory.refuse(l, c, msgRefusedMemory)
			continue
		}
		took := l.admit()
		if !took && l.waiting == nil {
			if !l.evict() {
				l.atCap.refuse(l, c, msgRefused, "max_connections", l.budget.max.Load())
				continue
			}
			took = true // the evicted connection's slot
		}
		slot, spilled, ok := l.admitClient(c)
		if !ok {
			if took {
				l.budget.open.Add(-1)
			}
			continue
		}
		// EndWaiting at the cap: the client's share is checked first, so
		// that a client beyond it cannot end another's connection.
		if !took && !l.endWaiting() {
			l.perIP.Release(slot)
			l.atCap.refuse(l, c, msgRefused, "max_connections", l.budget.max.Load())
			continue
		}
		conn := &Conn{Conn: c, l: l, slot: slot}
		if spilled.IsValid() {
			l.spill.add(spilled, conn)
		}
		if l.waiting != nil {
			l.waiting.wait(conn) // for its first request
		}
		return conn, nil
	}
}

// nextDelay is the backoff after one more failure, following d.
func nextDelay(d time.Duration) time.Duration {
	if d == 0 {
		return minDelay
	}
	return min(2*d, maxDelay)
}

// admit takes a slot under the cap, if there is one.
func (l *Listener) admit() bool {
	for {
		n, max := l.budget.open.Load(), l.budget.max.Load()
		if max > 0 && n >= max {
			return false
		}
		if l.budget.open.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// evict makes room under the cap by ending a spilled connection
// (Config.Spill), whose slot passes to the one being accepted; false: none
// is spilled.
func (l *Listener) evict() bool {
	if l.spill == nil {
		return false
	}
	c, client := l.spill.evict()
	if c == nil {
		return false
	}
	if l.perClient.count != nil {
		l.perClient.count.Inc()
	}
	l.evictLog.Warn(l.log, msgEvicted, "listener", l.name, "client", client, l.perIPSetting, l.perIP.Limits().MaxConns)
	return true
}

// endWaiting makes room under the cap by ending the connection that has
// waited the longest for a request (Config.EndWaiting), whose slot passes to
// the one being accepted; false: none waits.
func (l *Listener) endWaiting() bool {
	if l.waiting.end() == nil {
		return false
	}
	if l.endedWaiting != nil {
		l.endedWaiting.Inc()
	}
	l.evictLog.Warn(l.log, msgEndedWaiting, "listener", l.name, "max_connections", l.budget.max.Load())
	return true
}

// admitClient takes a slot of c's client under the per-client cap, or
// admits c beyond it (Config.Spill: spilled is its client), or refuses c.
// A connection without an IP address (a Unix socket) is not counted.
func (l *Listener) admitClient(c net.Conn) (slot Slot, spilled netip.Addr, ok bool) {
	ta, ok := c.RemoteAddr().(*net.TCPAddr)
	if !ok {
		return Slot{}, netip.Addr{}, true
	}
	addr := ta.AddrPort().Addr()
	slot, v := l.perIP.Admit(addr, time.Now())
	if v == Admitted {
		return slot, netip.Addr{}, true
	}
	if v == TooManyOpen && l.spill != nil {
		return Slot{}, ClientNetwork(addr), true
	}
	l.perClient.refuse(l, c, l.perIPMsg, "client", ClientNetwork(addr), l.perIPSetting, l.perIP.Limits().MaxConns)
	return Slot{}, netip.Addr{}, false
}

func (l *Listener) failed(err error, delay time.Duration) {
	if l.errs != nil {
		l.errs.Inc()
	}
	l.errLog.Warn(l.log, msgAcceptFailed, "listener", l.name, "err", err, "retry_in", delay)
}

// sleep waits d, or less if the listener is closed meanwhile.
func (l *Listener) sleep(d time.Duration) {
	if l.waited != nil {
		l.waited(d)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-l.done:
	}
}

// refusalKind is one reason a Listener refuses connections: what counts
// them, the answer they get (nil: closed without a word) and the spacing of
// their log line.
type refusalKind struct {
	count  Counter
	answer []byte
	log    LogLimit
}

// refuse counts c, logs msg (spaced) with the listener's name and attrs,
// and answers and closes c.
func (k *refusalKind) refuse(l *Listener, c net.Conn, msg string, attrs ...any) {
	if k.count != nil {
		k.count.Inc()
	}
	k.log.Warn(l.log, msg, append([]any{"listener", l.name}, attrs...)...)
	if k.answer == nil {
		c.Close()
		return
	}
	l.Refuse(c, k.answer)
}

func (l *Listener) closed() bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}

// Close closes the listener; an Accept waiting out a backoff returns. The
// connections being closed with a linger (or refused) are closed at once,
// their goroutines waited for; from now on the connections accepted close
// at once: shutdown stays bounded.
func (l *Listener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	err := l.Listener.Close()
	if !l.lingerAtStop {
		l.lingering.stop()
	}
	return err
}

// SetMax changes the cap for connections accepted from now on (the shared
// Config.Budget's, for every listener sharing it); 0: no cap. Connections
// already open stay open.
func (l *Listener) SetMax(n int) { l.budget.SetMax(n) }

// SetMaxPerIP changes the per-client cap for connections accepted from now
// on; 0: no cap. Connections already open stay open, and count. A listener
// counting with Config.Clients has no cap of its own: its user sets the
// limits of what it counts with.
func (l *Listener) SetMaxPerIP(n int) {
	if l.own != nil {
		l.own.SetLimits(PerAddrLimits{MaxConns: n})
	}
}

// Hold counts a connection this listener did not accept — one taken over
// from the process this one replaced, admitted there — until release is
// called (once). It may take the count beyond the cap: the connection is
// open already; new ones are refused until the count is back under it.
// It counts under the total cap only: a user with per-client limits of its
// own (the balancer) holds the client's place in its PerAddr.
func (l *Listener) Hold() (release func()) {
	l.budget.open.Add(1)
	var once sync.Once
	return func() { once.Do(func() { l.budget.open.Add(-1) }) }
}

// Open is the number of connections accepted and not yet closed (one
// closing with a linger counts until its socket is closed), by every
// listener sharing its Config.Budget.
func (l *Listener) Open() int { return int(l.budget.open.Load()) }

// Conn is an accepted connection. It holds its slots under the caps until
// its socket is closed, and its first Close lingers (linger.go) unless
// NoLinger was called or the client is known to be gone.
type Conn struct {
	net.Conn
	l     *Listener
	slot  Slot
	state atomic.Uint32 // connClosed, connNoLinger, ...
	// spillIn and spillAt are its client and its place in the listener's
	// spill (Config.Spill), under the spill's lock; spillAt nil: not in
	// it. With Config.EndWaiting spillAt is its place among the waiting
	// connections instead (waiting.go), under their lock. Pointers: every
	// connection of every guarded listener carries them (with its client's
	// address here a connection took 96 bytes where it had taken 64; 80
	// with these).
	spillIn *spillClient
	spillAt *list.Element
	// stallTimer marks a write stalled (Config.EndStalledWrites): made on
	// the first write, reset for each.
	stallTimer *time.Timer
}

// Conn.state bits.
const (
	connClosed     = 1 << iota // Close was called
	connNoLinger               // Close closes at once (NoLinger, or the client is gone)
	connClientGone             // the per-client slot is given back (ReleaseClient or Close)
	connSpilled                // admitted beyond its client's share (Config.Spill)
	connEvicted                // ended to make room: its slot under the cap passed on
	connWritten                // a byte was written on it: the server answered something
	connWaiting                // in the listener's waiting connections (Config.EndWaiting)
	connWriting                // in Write (Config.EndStalledWrites)
	connStalled                // its write has waited EndStalledWrites for the client to read
	connWriteEnded             // ended while stalled: its writes end too
)

// ReleaseClient gives back c's slot under its client's share before c
// closes: from now on c does not count against its client (c stays
// counted under the listener's total cap until closed), and a spilled c
// (Config.Spill) can no longer be ended to make room. For a user whose
// share covers a phase of a connection only (the edge's: until a request
// arrives). Safe against a concurrent Close: the slot is given back once.
// False: c was ended to make room before (its read side is shut); its
// request is to be refused and the connection closed.
func (c *Conn) ReleaseClient() bool {
	if c.state.Or(connClientGone)&connClientGone == 0 {
		c.l.perIP.Release(c.slot)
		if c.l.spill != nil && c.l.spill.leave(c) {
			return false
		}
	}
	return c.state.Load()&connEvicted == 0
}

// Read notes a client gone (its FIN, a reset): there is nothing left to
// drain, and the close need not linger. A timeout is not that: the client
// may still be sending.
func (c *Conn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil {
		if c.Ended() {
			return n, ErrEnded
		}
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			c.state.Or(connNoLinger)
		}
	}
	return n, err
}

// Serving tells c's listener that a request was read whole on c and is
// being answered: c does not wait for one any more, and is not ended to
// make room (Config.EndWaiting) until it is answered (written to). A
// request's bytes read are not enough: trickled a byte at a time, they
// would keep a connection from ever waiting.
func (c *Conn) Serving() {
	if c.l.waiting != nil {
		c.l.waiting.busy(c)
	}
}

// Waiting tells c's listener that the server waits for the client's next
// request on c (Config.EndWaiting): from now on c may be ended to make room,
// unless it waits already (it keeps its place). A server calls it before it
// reads each request: a request it answers with nothing (DNS ignores
// responses, and messages too short to hold a header) is not written to,
// and without it would leave c busy for ever.
func (c *Conn) Waiting() {
	if c.l.waiting != nil {
		c.l.waiting.wait(c)
	}
}

// Write notes a failed write: the answer did not go out whole, so there is
// nothing for a linger to protect.
func (c *Conn) Write(p []byte) (int, error) {
	stall := c.l.stall > 0
	if stall {
		c.state.Or(connWriting)
		if c.stallTimer == nil {
			c.stallTimer = time.AfterFunc(c.l.stall, c.stalled)
		} else {
			c.stallTimer.Reset(c.l.stall)
		}
	}
	n, err := c.Conn.Write(p)
	if stall {
		c.stallTimer.Stop()
		if c.state.And(^uint32(connWriting))&connStalled != 0 {
			c.state.And(^uint32(connStalled)) // written: it waits for a request, if anything
		}
	}
	if err != nil {
		c.state.Or(connNoLinger)
	}
	if n > 0 && c.state.Load()&connWritten == 0 {
		c.state.Or(connWritten)
	}
	if n > 0 && c.l.waiting != nil {
		c.l.waiting.wait(c) // answered: it waits for the next request
	}
	return n, err
}

// Close closes the connection, lingering first (linger.go): the server
// closes it after an error answer (a 431, a 400, a timeout) or on its own
// idle timeout while the client may still be sending, and closed with bytes
// unread, or receiving more, the socket would answer with a reset that can
// destroy the answer. The slots are released once the socket is closed. A
// second Close closes the socket at once (a linger in progress ends).
//
// Close returns once the socket is closed: up to lingerTime after the write
// side was shut (one ended to make room and unanswered waits up to
// lingerTime more for its request first). Code that must not wait (it holds a lock, or the socket is
// not its own any more) calls NoLinger first; a server's Shutdown closes
// its listener first, which ends every linger.
func (c *Conn) Close() error {
	if c.state.Or(connClosed)&connClosed != 0 {
		return c.Conn.Close()
	}
	if c.l.spill != nil {
		c.l.spill.leave(c) // a closing connection makes no room for another
	}
	if c.l.waiting != nil {
		c.l.waiting.busy(c) // nor does this one
	}
	if st := c.state.Load(); st&connNoLinger == 0 {
		// Ended to make room and closed without a word: the server had
		// read nothing of a request before the end, but one may be
		// arriving (a balancer writes its upgrade once connected, and
		// its bytes may be unread on the socket). It is refused as at the
		// cap — closed unanswered, a balancer takes the edge for dying
		// and tries the session's next edge.
		var asked []byte
		if st&connEvicted != 0 && st&connWritten == 0 {
			asked = c.l.atCap.answer
		}
		c.l.lingering.linger(c.Conn, asked)
	}
	err := c.Conn.Close()
	if c.state.Load()&connEvicted == 0 {
		c.l.budget.open.Add(-1)
	}
	c.ReleaseClient()
	return err
}

// NoLinger makes c's Close close at once. For a connection the server has
// handed over (hijacked for a WebSocket session or a tunnel): its new owner
// closes it when the session ends and must not wait, and its socket may be
// in other hands by then (the balancer's relay holds a duplicate; a
// hand-off passes it to the next process), where shutting its write side
// would end the session.
func (c *Conn) NoLinger() { c.state.Or(connNoLinger) }

// NetConn returns the connection c wraps (as tls.Conn.NetConn does), for
// code that needs the socket itself.
func (c *Conn) NetConn() net.Conn { return c.Conn }

// SetNetConn replaces the connection c wraps; c keeps its slot until its
// Close. The balancer's relay, once it owns a duplicate of the socket, puts
// a placeholder here so that the closed socket's Go side can be freed. Not
// safe against a concurrent Read, Write or Close of c.
func (c *Conn) SetNetConn(nc net.Conn) { c.Conn = nc }

// HTTPAnswer is a complete HTTP/1.1 response refusing a connection with
// code and msg, asking the client to retry in a second and closing.
func HTTPAnswer(code int, msg string) []byte {
	body := msg + "\n"
	return fmt.Appendf(nil, "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s",
		code, http.StatusText(code), len(body), body)
}
