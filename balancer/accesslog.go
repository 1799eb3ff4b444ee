package balancer

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"github.com/ringlb/ringlb/balancer/httplog"
	"github.com/ringlb/ringlb/configs"
)

// The access log (balancer.access_log): one JSON line per HTTP request and
// per closed WebSocket tunnel, off by default.
//
//	{"time":"2026-01-02T15:04:05.123456Z","type":"http","client":"192.0.2.7:51234","key":"9f86d081884c7d65","edge":"edge-2","status":200,"bytes_in":0,"bytes_out":1532,"duration_ms":3.2}
//	{"time":"…","type":"tunnel","client":"…","key":"…","edge":"edge-1","status":101,"bytes_in":48213,"bytes_out":912044,"duration_ms":3600125.4,"close":"client"}
//
// The key is never written, only its xxhash (the ring's hash) in hex: keys
// come from tokens and cookies. bytes_in is what the client sent (a
// request's declared body; a tunnel's bytes after the handshake), bytes_out
// what it was sent. A tunnel's close says how it ended: "client" or "edge"
// (that side closed first; the other had tunnel_fin_timeout to follow),
// "idle" (tunnel_idle_timeout: nothing crossed, or
// bytes for a side that took none did not move), "shutdown" (the
// balancer stopped), "error" (a read or write failed). A successful upgrade
// is logged once, as its tunnel, when it closes; one moved to a new process
// by an upgrade is logged there.
//
// The data path only copies a fixed-size entry into a bounded queue, never
// waiting: when the writer falls behind (a slow disk) entries are dropped
// and counted in ringlb_balancer_access_log_dropped_total, and so are lines
// a write failed to write (a full disk). One goroutine writes (buffered,
// flushed whenever the queue is empty); SIGUSR1 reopens the file after
// logrotate renamed it. A write that does not return does not hold what
// changes the destination (SIGUSR1, a reload, the balancer's stop): a file
// that takes deadlines (a FIFO) fails a write after accessWriteTimeout, and
// a change waits for the writer at most accessControlWait.
type accessLog struct {
	log     *slog.Logger
	dropped prometheus.Counter
	on      atomic.Bool
	sample  atomic.Uint64 // math.Float64bits of balancer.access_log.sample

	stderr  io.Writer // where lines go with no path (os.Stderr)
	entries chan accessEntry
	control chan accessControl
	done    chan struct{}

	mu  sync.Mutex // apply, reopen and close, one at a time
	cfg configs.AccessLog
	// closed: the balancer stopped (close), and no change starts the
	// writer again.
	closed bool
}

// errAccessLogClosed refuses a change of the access log once the balancer
// stopped: a reload landing after the stop (a PUT /api/config answered
// while the node stops) started a writer, and held its file, that nobody
// stops.
var errAccessLogClosed = errors.New("balancer.access_log: not changed: the balancer has stopped")

// accessQueue bounds the entries waiting for the writer (about 1.5 MB,
// made when the log is first switched on).
const accessQueue = 8192

// accessWriteTimeout bounds one flush to a destination that takes write
// deadlines (a FIFO, a pipe): one nobody reads fails the write, its lines
// counted as dropped, instead of holding the writer. A regular file's write
// cannot be bounded so (a filesystem that stopped answering holds it).
const accessWriteTimeout = 2 * time.Second

// accessControlWait bounds how long a change of destination (SIGUSR1's
// reopen, a reload, the balancer's stop) waits for the writer: one stuck in a
// write that cannot be bounded (stderr to a full pipe, a stalled
// filesystem) must not hold the signal loop or the stop.
const accessControlWait = 10 * time.Second

// maxEdgeName bounds an edge's name as the log copies it: names are 1–64
// characters (health checks them).
const maxEdgeName = 64

// Kinds of entry.
const (
	accessHTTP = iota + 1
	accessTunnel
)

// accessEntry is one line's fields, copied by value into the queue: no
// allocation on the data path.
type accessEntry struct {
	at          time.Time
	kind        uint8
	client      netip.AddrPort
	key         httplog.KeyHash
	hasKey      bool
	edge        [maxEdgeName]byte
	edgeLen     uint8
	status      int
	in, out     uint64
	duration    time.Duration
	closeReason string // tunnels: a constant
}

// accessControl is a change for the writer: a new destination (w; file
// when it is one, closed when replaced), or stop.
type accessControl struct {
	w    io.Writer
	file *os.File
	stop bool
	ack  chan struct{}
}

// startAccessLog starts the access log's writer and applies cfg.
func (b *Balancer) startAccessLog(cfg configs.AccessLog) error {
	a, err := newAccessLog(b.reg, b.log)
	if err != nil {
		return err
	}
	if err := a.apply(cfg); err != nil {
		a.close()
		return err
	}
	b.access = a
	return nil
}

// ReopenAccessLog opens the access log's file again (SIGUSR1, after
// logrotate renamed it); lines go to the new file from then on.
func (b *Balancer) ReopenAccessLog() { b.access.reopen() }

func newAccessLog(reg *prometheus.Registry, log *slog.Logger) (*accessLog, error) {
	a := &accessLog{
		log:    log,
		stderr: os.Stderr,
		// Declared here, with the access log, rather than with the
		// package's other metrics: it exists only for this queue.
		dropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "ringlb_balancer_access_log_dropped_total",
			Help: "Access log lines dropped because the writer fell behind (a slow disk) or a write failed (a full disk, a stalled FIFO): the data path never waits for it."}),
	}
	if err := reg.Register(a.dropped); err != nil {
		return nil, err
	}
	return a, nil
}

// start makes the queue and starts the writer, the first time the log is
// switched on: a balancer that never logs holds neither. Called with a.mu
// held, before a.on is set (enqueue reads a.entries only after seeing it).
func (a *accessLog) start() {
	if a.done != nil {
		return
	}
	a.entries = make(chan accessEntry, accessQueue)
	a.control = make(chan accessControl)
	a.done = make(chan struct{})
	go a.run()
}

// apply switches the log on, off, to another file or sample rate. Opening
// the file is done here, so a path that cannot be written is the caller's
// error (New's, Reload's) and nothing changes.
func (a *accessLog) apply(cfg configs.AccessLog) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if cfg.Enabled == a.on.Load() && cfg.Path == a.cfg.Path {
		a.sample.Store(math.Float64bits(cfg.Sample))
		a.cfg = cfg
		return nil
	}
	if a.closed {
		return errAccessLogClosed
	}
	w := a.stderr
	var file *os.File
	if cfg.Enabled && cfg.Path != "" {
		f, err := openAccessFile(cfg.Path)
		if err != nil {
			return fmt.Errorf("balancer.access_log.path: %w", err)
		}
		w, file = f, f
	}
	if !cfg.Enabled {
		w = nil
	}
	a.sample.Store(math.Float64bits(cfg.Sample)) // only once nothing can fail
	if !cfg.Enabled && a.done == nil {           // never on: no writer to tell
		a.cfg = cfg
		return nil
	}
	a.start()
	// Lines logged while the destination changes go to the old one (the
	// writer writes what is queued before it switches) or to the new one:
	// none is lost. Switched off, lines stop before the switch.
	wasOn := a.on.Load()
	if !cfg.Enabled {
		a.on.Store(false)
	}
	if taken, _ := a.send(accessControl{w: w, file: file}); !taken {
		if file != nil {
			_ = file.Close()
		}
		a.on.Store(wasOn)
		return fmt.Errorf("balancer.access_log: not changed: the access log's writer is stuck writing to %s (a stalled disk or a pipe nobody reads)", accessPathName(a.cfg.Path))
	}
	a.cfg = cfg
	a.on.Store(cfg.Enabled)
	if cfg.Enabled {
		a.log.Info("access log on", "path", accessPathName(cfg.Path), "sample", cfg.Sample)
	}
	return nil
}

func accessPathName(path string) string {
	if path == "" {
		return "stderr"
	}
	return path
}

// openAccessFile opens path for appending. O_NONBLOCK is for a FIFO (a log
// shipper's): opening one nobody reads would wait in open(2), holding the
// balancer's start, a reload or SIGUSR1; it fails instead (ENXIO), and an
// open one takes write deadlines (accessWriteTimeout). A regular file
// ignores the flag.
func openAccessFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|syscall.O_NONBLOCK, 0o640)
	if errors.Is(err, syscall.ENXIO) {
		return nil, fmt.Errorf("a FIFO nobody reads (start its reader first): %w", err)
	}
	return f, err
}

// reopen opens the file again at its path (SIGUSR1, after logrotate renamed
// it): lines go to the new file from now on. A file that cannot be opened is
// logged and the old one kept.
func (a *accessLog) reopen() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.on.Load() || a.cfg.Path == "" {
		return
	}
	f, err := openAccessFile(a.cfg.Path)
	if err != nil {
		a.log.Error("access log not reopened: still writing to the file it had open", "path", a.cfg.Path, "err", err)
		return
	}
	if taken, _ := a.send(accessControl{w: f, file: f}); !taken {
		_ = f.Close()
		a.log.Error("access log not reopened: its writer is stuck writing to the file it had open (a stalled disk or a pipe nobody reads)", "path", a.cfg.Path)
	}
}

// close writes what is queued and stops the writer.
func (a *accessLog) close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.closed = true
	if a.done == nil { // never on
		return
	}
	select {
	case <-a.done:
		return
	default:
	}
	a.on.Store(false)
	if _, done := a.send(accessControl{stop: true}); done {
		<-a.done
		return
	}
	// The writer is stuck in a write: it stops once the write returns; the
	// balancer's stop goes on without it.
	a.log.Warn("access log: its writer is stuck writing (a stalled disk or a pipe nobody reads); lines still queued are lost", "path", accessPathName(a.cfg.Path))
}

// send hands c to the writer and waits for it to be done, at most
// accessControlWait in all: taken says whether the writer took c (it
// applies it once its write returns), done whether it is done.
func (a *accessLog) send(c accessControl) (taken, done bool) {
	c.ack = make(chan struct{})
	t := time.NewTimer(accessControlWait)
	defer t.Stop()
	select {
	case a.control <- c:
	case <-t.C:
		return false, false
	}
	select {
	case <-c.ack:
		return true, true
	case <-t.C:
		return true, false
	}
}

// enqueue queues e, or drops and counts it when the writer is behind.
func (a *accessLog) enqueue(e *accessEntry) {
	if s := math.Float64frombits(a.sample.Load()); s < 1 && rand.Float64() >= s {
		return
	}
	select {
	case a.entries <- *e:
	default:
		a.dropped.Inc()
	}
}

// request logs a plain HTTP request that ended (serveData's defer). A
// successful upgrade is left to its tunnel; the other hijack, an answer
// streamed to an HTTP/1.0 client to its close (closeDelimited), keeps its
// answer's body stream and is logged here.
func (a *accessLog) request(ctx *fasthttp.RequestCtx, start time.Time) {
	if !a.on.Load() || ctx.Hijacked() && !ctx.Response.IsBodyStream() {
		return
	}
	e := accessEntry{at: start, kind: accessHTTP, status: ctx.Response.StatusCode(), duration: time.Since(start)}
	e.client = remoteAddrPort(ctx.RemoteAddr())
	// The key the request was routed by is in the header the balancer
	// forwards (the client's own before routing, when it was refused).
	if key := ctx.Request.Header.Peek(keyHeader); len(key) > 0 {
		e.key, e.hasKey = httplog.Key(key), true
	}
	e.setEdge(ctx.Response.Header.Peek(headerEdge))
	if n := ctx.Request.Header.ContentLength(); n > 0 {
		e.in = uint64(n)
	}
	// A streamed body (the edges' answers are streamed) is not read here:
	// Body() would buffer all of it before it is sent. Its size is what its
	// Content-Length says; unknown (chunked) counts 0.
	if !ctx.Response.IsBodyStream() {
		e.out = uint64(len(ctx.Response.Body()))
	} else if n := ctx.Response.Header.ContentLength(); n > 0 {
		e.out = uint64(n)
	}
	a.enqueue(&e)
}

// tunnel logs a tunnel that closed (releaseTunnel), unless it moved to
// another process.
func (a *accessLog) tunnel(t *tunnel) {
	if !a.on.Load() {
		return
	}
	t.mu.Lock()
	moved, reason, client := t.movedAway, t.endReason, t.clientAddr
	var bytes [2]uint64
	switch {
	case t.pair != nil:
		bytes = t.pair.bytes
	case t.rounds != nil:
		bytes = t.rounds.bytes
	}
	in, out := bytes[clientToEdge], bytes[edgeToClient]
	t.mu.Unlock()
	if moved {
		return
	}
	e := accessEntry{at: t.start, kind: accessTunnel, status: fasthttp.StatusSwitchingProtocols, duration: time.Since(t.start),
		in: in, out: out, closeReason: reason, key: httplog.KeyString(t.key), hasKey: t.key != "", client: client}
	e.setEdge([]byte(t.edge))
	a.enqueue(&e)
}

// setEdge copies an edge's name, keeping the characters names are made of
// (a static edge is a third-party server: its header is not to be trusted
// into a log line).
func (e *accessEntry) setEdge(name []byte) {
	n := min(len(name), maxEdgeName)
	for i := range n {
		c := name[i]
		if !(c == '.' || c == '-' || c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			c = '_'
		}
		e.edge[i] = c
	}
	e.edgeLen = uint8(n)
}

// remoteAddrPort is a client's address as the log writes it: an IPv4
// client of a dual-stack listener, or one a proxy names in a TCP6 header,
// comes as 4-in-6 ("[::ffff:192.0.2.7]:51234"), where X-Forwarded-For and
// the per-address limits say 192.0.2.7 — and a search of the log for it
// found nothing (TestAccessLogWritesAnIPv4ClientAsIPv4).
func remoteAddrPort(addr net.Addr) netip.AddrPort {
	if tcp, ok := addr.(*net.TCPAddr); ok {
		ap := tcp.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return netip.AddrPort{}
}

// run is the writer: it owns the destination.
func (a *accessLog) run() {
	defer close(a.done)
	var w *bufio.Writer
	var dst io.Writer
	var file *os.File
	deadlines := false // file takes write deadlines (a FIFO)
	pending := 0       // lines in w, not yet written
	buf := make([]byte, 0, 512)
	failed := time.Time{}
	// flush writes what w holds; false: the write failed and its lines,
	// counted as dropped, are lost.
	flush := func() bool {
		if w == nil || w.Buffered() == 0 {
			pending = 0
			return true
		}
		if deadlines {
			_ = file.SetWriteDeadline(time.Now().Add(accessWriteTimeout))
		}
		err := w.Flush()
		if err == nil {
			pending = 0
			return true
		}
		// A line cut short is no line: every line the buffer held is lost.
		a.dropped.Add(float64(pending))
		pending = 0
		if time.Since(failed) > time.Minute { // a full disk: once a minute
			a.log.Warn("access log: write failed; lines are lost (counted in ringlb_balancer_access_log_dropped_total) until it works again", "err", err)
			failed = time.Now()
		}
		w.Reset(dst) // drop what failed; the next lines try again
		return false
	}
	// write buffers e's line, flushing first when it would not fit: every
	// write to the destination is a flush, whose lines are counted.
	write := func(e *accessEntry) bool {
		buf = e.appendJSON(buf[:0])
		ok := true
		if w.Available() < len(buf) {
			ok = flush()
		}
		_, _ = w.Write(buf)
		pending++
		return ok
	}
	for {
		select {
		case e := <-a.entries:
			if w == nil {
				continue // switched off meanwhile
			}
			write(&e)
			if len(a.entries) == 0 {
				flush()
			}
		case c := <-a.control:
			// What was queued for the old destination; once a write failed
			// (a stalled FIFO times out each one), the rest is dropped, so
			// that the change is not held a timeout per buffer.
			for len(a.entries) > 0 && w != nil {
				e := <-a.entries
				if !write(&e) {
					n := len(a.entries)
					for range n {
						<-a.entries
					}
					a.dropped.Add(float64(n))
					break
				}
			}
			flush()
			if c.stop || c.file != file {
				if file != nil {
					_ = file.Close()
				}
				file = nil
			}
			if c.stop {
				close(c.ack)
				return
			}
			w, dst, file, deadlines = nil, c.w, c.file, false
			if c.w != nil {
				w = bufio.NewWriterSize(c.w, 64<<10)
			}
			if file != nil {
				// A regular file says os.ErrNoDeadline.
				deadlines = file.SetWriteDeadline(time.Time{}) == nil
			}
			close(c.ack)
		}
	}
}

// appendJSON renders the entry as one line of JSON.
func (e *accessEntry) appendJSON(b []byte) []byte {
	b = append(b, `{"time":"`...)
	b = e.at.UTC().AppendFormat(b, "2006-01-02T15:04:05.000000Z")
	b = append(b, `","type":"`...)
	if e.kind == accessTunnel {
		b = append(b, "tunnel"...)
	} else {
		b = append(b, "http"...)
	}
	b = append(b, `","client":"`...)
	if e.client.IsValid() {
		if e.client.Port() == 0 {
			b = e.client.Addr().AppendTo(b)
		} else {
			b = e.client.AppendTo(b)
		}
	}
	b = append(b, `","key":"`...)
	if e.hasKey {
		b = e.key.AppendText(b)
	}
	b = append(b, `","edge":"`...)
	b = append(b, e.edge[:e.edgeLen]...)
	b = append(b, `","status":`...)
	b = strconv.AppendInt(b, int64(e.status), 10)
	b = append(b, `,"bytes_in":`...)
	b = strconv.AppendUint(b, e.in, 10)
	b = append(b, `,"bytes_out":`...)
	b = strconv.AppendUint(b, e.out, 10)
	b = append(b, `,"duration_ms":`...)
	b = strconv.AppendFloat(b, float64(e.duration.Microseconds())/1000, 'f', -1, 64)
	if e.closeReason != "" {
		b = append(b, `,"close":"`...)
		b = append(b, e.closeReason...)
		b = append(b, '"')
	}
	return append(b, "}\n"...)
}
