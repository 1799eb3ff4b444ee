package health

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/ringlb/ringlb/configs"
)

// MaxReason bounds the text a check's failure leaves as the target's
// "why" (kept, logged, shown by admin APIs and dashboards): net/http quotes
// a malformed answer's line in its error, which the target writes.
const MaxReason = 256

// maxProbeHead bounds the head of an HTTP check's answer.
const maxProbeHead = 64 << 10

// Prober actively checks one target (host:port) with a monitor: an HTTP or
// HTTPS GET that must answer the expected status, or a TCP connect. Rise
// successes in a row bring the target up, Fall failures take it down.
//
// A prober starts up: a fresh gslb or balancer would otherwise withdraw
// everything for Rise intervals at start; a dead target goes down after Fall
// checks, the first of which runs at once.
//
// An HTTP answer marked configs.HeaderStarting (a balancer waiting for its
// session table, within its startup_wait) is no finding: neither a success
// nor a failure, the state holds — as a load balancer treats a backend
// that has not completed its first check (HAProxy's servers start up, and
// go down only on checks that fail). Up to configs.MaxSessionStartupWait
// of such answers in a row, the longest a balancer answers so; after that
// they are failures like any other.
type Prober struct {
	mon      configs.Monitor
	target   string
	onChange func(up bool, why string)
	logger   *slog.Logger
	tls      *tls.Config // an https check's (nil: the check is not https)
	host     string      // an HTTP check's Host ("": the target)

	mu  sync.Mutex
	up  bool
	why string
	// settled: checks have confirmed the state (rise successes or fall
	// failures in a row, once), or it was seeded; before, up is the
	// prober's start state, not a finding.
	settled   bool
	successes int
	failures  int
	checked   time.Time
	// startingSince is when the target began answering as starting
	// (zero: its last answer was not so).
	startingSince time.Time
	// onSettled is called when checks first confirm the state the prober
	// started with, which is no transition (OnSettled).
	onSettled func()
	// cannotCheck: the last check could not be made (LocalFailure), so
	// its warning is logged once for a run of them, not every interval.
	cannotCheck bool
	// notMade is called for every check that could not be made, with
	// what this process lacked (OnCheckNotMade).
	notMade func(lacking string)
}

// What a check this process could not make lacked (LocalLacking): the
// label values of the roles' counters of checks not made.
const (
	LackingDescriptors = "descriptors"
	LackingMemory      = "memory"
	LackingLocalPorts  = "local_ports"
)

// LackingReasons lists every value LocalLacking returns, for counters
// exported at 0 from the start.
func LackingReasons() []string {
	return []string{LackingDescriptors, LackingMemory, LackingLocalPorts}
}

var localErrnos = []struct {
	errno   syscall.Errno
	lacking string
}{
	{syscall.EMFILE, LackingDescriptors}, {syscall.ENFILE, LackingDescriptors},
	{syscall.ENOBUFS, LackingMemory}, {syscall.ENOMEM, LackingMemory},
	{syscall.EADDRNOTAVAIL, LackingLocalPorts},
}

// LocalFailure reports whether a connect failed for want of this process's
// or host's resources — descriptors (EMFILE, ENFILE), kernel memory
// (ENOBUFS, ENOMEM), local ports (EADDRNOTAVAIL) — and not at its target;
// a failed lookup of the target's name too, when this process cannot
// open a descriptor now.
func LocalFailure(err error) bool { return LocalLacking(err) != "" }

// LocalLacking is LocalFailure saying what was lacking: one of
// LackingReasons, or "" when err is no local failure.
func LocalLacking(err error) string {
	if lacking := localErrno(err); lacking != "" {
		return lacking
	}
	// A failed lookup (net.DNSError) keeps the text of why, not the errno:
	// one that could not open its socket to the resolver reads as a name
	// that does not resolve, and a process out of descriptors took every
	// target named by a host name for down. Whether it can open one now
	// tells which.
	var lookup *net.DNSError
	if errors.As(err, &lookup) && !lookup.IsNotFound {
		f, openErr := os.Open(os.DevNull)
		if openErr != nil {
			return localErrno(openErr)
		}
		f.Close()
	}
	return ""
}

// localErrno says what err lacked, when it carries one of localErrnos.
func localErrno(err error) string {
	for _, e := range localErrnos {
		if errors.Is(err, e.errno) {
			return e.lacking
		}
	}
	return ""
}

// NewProber returns a prober of target; onChange (may be nil) is called on
// each transition, from the prober's goroutine. An https check does not
// verify the target's certificate (the target is an address, not the
// certificate's name): it finds whether the target answers, not who it
// is; NewVerifyingProber does.
func NewProber(mon configs.Monitor, target string, onChange func(up bool, why string), logger *slog.Logger) *Prober {
	return NewVerifyingProber(mon, target, nil, onChange, logger)
}

// NewVerifyingProber is NewProber whose https checks verify the target as
// verify says (its roots, server name and client certificate); nil
// verifies nothing, as NewProber.
func NewVerifyingProber(mon configs.Monitor, target string, verify *tls.Config, onChange func(up bool, why string), logger *slog.Logger) *Prober {
	return NewNamedProber(mon, target, "", verify, onChange, logger)
}

// NewNamedProber is NewVerifyingProber whose HTTP checks ask the target
// for host (their Host header; "": the target's address, as
// NewVerifyingProber), with the target's port unless it is the scheme's
// own: a server holding several sites answers for the one named, as it
// would a browser's https://host:port/.
func NewNamedProber(mon configs.Monitor, target, host string, verify *tls.Config, onChange func(up bool, why string), logger *slog.Logger) *Prober {
	if verify == nil {
		verify = &tls.Config{InsecureSkipVerify: true}
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	p := &Prober{mon: mon, target: target, onChange: onChange, logger: logger, up: true, why: "not checked yet"}
	if host != "" {
		_, port, _ := net.SplitHostPort(target)
		if port != "" && !(mon.Type == configs.MonitorHTTPS && port == "443" || mon.Type == configs.MonitorHTTP && port == "80") {
			host = net.JoinHostPort(host, port)
		}
		p.host = host
	}
	if mon.Type == configs.MonitorHTTPS {
		p.tls = verify
	}
	return p
}

// Run checks until ctx is done: at once, then every interval (± jitter).
func (p *Prober) Run(ctx context.Context) {
	for {
		p.checkOnce(ctx)
		wait := p.mon.Interval.D()
		if j := p.mon.Jitter; j > 0 {
			wait += time.Duration((rand.Float64()*2 - 1) * j * float64(wait))
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// Up reports the current state and why it is so.
func (p *Prober) Up() (bool, string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.up, p.why
}

// Seed sets the state a prober starts with, before Run (a reload carries the
// state of the prober it replaces, so answers do not flap): a state checks
// found, so the prober counts as settled.
func (p *Prober) Seed(up bool, why string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.up, p.why, p.settled = up, why, true
}

// Carry has p, before Run, start where old (the prober of the same target
// a reload replaces) stands: its state, as Seed, and its run of successes
// or failures, so the next check counts on from it. Seeded alone, the
// count began again at each reload, and a dead member reloaded more often
// than every fall-1 intervals (config management, PUT /api/config) was
// never taken down (TestReloadsKeepTheFallCount).
func (p *Prober) Carry(old *Prober) {
	old.mu.Lock()
	up, why, successes, failures, checked, starting := old.up, old.why, old.successes, old.failures, old.checked, old.startingSince
	old.mu.Unlock()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.up, p.why, p.settled = up, why, true
	p.successes, p.failures, p.checked, p.startingSince = successes, failures, checked, starting
}

// Settled reports whether checks have confirmed the state Up reports (rise
// successes or fall failures in a row, once since the start), or it was
// seeded. A prober starts up; until it settles that is an assumption, not
// something it saw.
func (p *Prober) Settled() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.settled
}

// OnSettled has f called, from the prober's goroutine, when checks first
// confirm the state the prober started with: no transition, so onChange is
// not called, but a reader of Settled (a gslb's vote) sees a change. Call
// it before Run.
func (p *Prober) OnSettled(f func()) { p.onSettled = f }

// OnCheckNotMade has f called, from the prober's goroutine, for every
// check this process could not make (LocalLacking: what it lacked), which
// holds the target's state and is logged once a run. Call it before Run.
func (p *Prober) OnCheckNotMade(f func(lacking string)) { p.notMade = f }

// Target is what the prober checks.
func (p *Prober) Target() string { return p.target }

func (p *Prober) checkOnce(ctx context.Context) {
	err := p.check(ctx)
	if ctx.Err() != nil {
		return // stopping: a cancelled check says nothing about the target
	}
	p.mu.Lock()
	p.checked = time.Now()
	if lacking := LocalLacking(err); lacking != "" {
		// The check was never made (no descriptor, memory or local port
		// for its socket): no finding about the target, whose state holds.
		// Counted a failure, a gslb out of descriptors took every member
		// it monitors for down and failed its regions over.
		first := !p.cannotCheck
		p.cannotCheck = true
		p.mu.Unlock()
		if first {
			p.logger.Warn("monitor cannot check: this process is out of resources; the target's state holds", "target", p.target, "err", err)
		}
		// Logged once a run, so counted every time: how long and how
		// often monitors went blind is on the node's metrics.
		if p.notMade != nil {
			p.notMade(lacking)
		}
		return
	}
	p.cannotCheck = false
	if errors.Is(err, errStarting) {
		if p.startingSince.IsZero() {
			p.startingSince = p.checked
		}
		if p.checked.Sub(p.startingSince) < configs.MaxSessionStartupWait {
			p.why = reason(err)
			p.mu.Unlock()
			return
		}
	} else {
		p.startingSince = time.Time{}
	}
	changed, wasSettled := false, p.settled
	if err == nil {
		p.failures = 0
		p.successes++
		p.settled = p.settled || p.successes >= p.mon.Rise
		if !p.up && p.successes >= p.mon.Rise {
			p.up, changed = true, true
		}
		if p.up {
			p.why = "check passed"
		}
	} else {
		p.successes = 0
		p.failures++
		p.settled = p.settled || p.failures >= p.mon.Fall
		if p.up && p.failures >= p.mon.Fall {
			p.up, changed = false, true
		}
		if !p.up || p.failures >= p.mon.Fall {
			p.why = reason(err)
		}
	}
	up, why := p.up, p.why
	settledNow := !wasSettled && p.settled
	p.mu.Unlock()
	if settledNow && !changed && p.onSettled != nil {
		p.onSettled()
	}
	if changed {
		p.logger.Info("monitor state changed", "target", p.target, "up", up, "why", why)
		if p.onChange != nil {
			p.onChange(up, why)
		}
	}
}

// check checks the target once: a TCP check connects (checkDial), an HTTP
// one asks (httpCheck).
func (p *Prober) check(ctx context.Context) error {
	if p.mon.Type == configs.MonitorTCP {
		conn, err := checkDial(ctx, p.target, p.mon.Timeout.D())
		if err != nil {
			return fmt.Errorf("tcp connect %s: %w", p.target, err)
		}
		return conn.Close()
	}
	url := string(p.mon.Type) + "://" + p.target + p.mon.Path
	resp, err := p.httpCheck(ctx, url)
	if p.host != "" {
		url += " (Host " + p.host + ")"
	}
	if err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	if resp.StatusCode != p.mon.ExpectStatus {
		if v := resp.Header.Get(configs.HeaderStarting); v != "" {
			return fmt.Errorf("GET %s: status %d, starting (%.64q): %w", url, resp.StatusCode, v, errStarting)
		}
		return fmt.Errorf("GET %s: status %d, want %d", url, resp.StatusCode, p.mon.ExpectStatus)
	}
	return nil
}

// httpCheck GETs url from the target on a connection of its own, one step
// after the other on this goroutine — connect, TLS handshake, request, the
// answer's head, whose body is never read — so each wait on the target
// follows what it answers: every wait ends timeout after the check's last
// write to the target began (checkDial's connection), and a busy process
// that writes late gives the target its whole timeout still. Health checks
// must see the target itself: no proxy from the environment, no connection
// reused, no redirect followed.
func (p *Prober) httpCheck(ctx context.Context, url string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("User-Agent", "ringlb-monitor")
	req.Close = true
	if p.host != "" {
		req.Host = p.host
	}
	conn, err := checkDial(ctx, p.target, p.mon.Timeout.D())
	if err != nil {
		if LocalFailure(err) {
			return nil, err // whole: checkOnce tells it from the target's failures
		}
		return nil, unwrapOpError(err)
	}
	defer conn.Close()
	// A stopped prober's check ends at once: its connection closes.
	defer context.AfterFunc(ctx, func() { conn.Close() })()
	seen := &lastError{Conn: conn}
	var rw io.ReadWriter = seen
	if p.tls != nil {
		cfg := p.tls.Clone()
		if cfg.ServerName == "" {
			cfg.ServerName = req.URL.Hostname() // as net/http names it
		}
		tc := tls.Client(seen, cfg)
		if err := tc.Handshake(); err != nil {
			return nil, seen.explain(err)
		}
		rw = tc
	}
	if err := req.Write(rw); err != nil {
		return nil, seen.explain(err)
	}
	// A health endpoint's head is small: one over maxProbeHead (net/http
	// reads 10 MiB by default) fails the check, read no further.
	head := &io.LimitedReader{R: rw, N: maxProbeHead}
	resp, err := http.ReadResponse(bufio.NewReaderSize(head, 4096), req)
	if err != nil {
		if head.N == 0 {
			return nil, fmt.Errorf("answer's head over %d bytes", maxProbeHead)
		}
		return nil, seen.explain(err)
	}
	return resp, nil
}

// lastError is a check's connection keeping the last error a read
// returned: a read cut short by the deadline leaves a partial line that
// net/http calls malformed, and the reason is the timeout.
type lastError struct {
	net.Conn
	err error
}

func (l *lastError) Read(b []byte) (int, error) {
	n, err := l.Conn.Read(b)
	if err != nil {
		l.err = err
	}
	return n, err
}

// explain is the reason a step failed with err: the timeout when the
// connection's deadline passed under it, err's last part otherwise.
func (l *lastError) explain(err error) error {
	if errors.Is(l.err, os.ErrDeadlineExceeded) {
		err = l.err
	}
	return unwrapOpError(err)
}

// errStarting marks a check's answer as the target's starting
// (configs.HeaderStarting): no finding.
var errStarting = errors.New("held at its state until the target has started")

func unwrapOpError(err error) error {
	// A certificate that does not verify is said whole ("certificate
	// signed by unknown authority (possibly because of ...)"): its text
	// holds ": " of its own, where the cut below would leave a fragment.
	var bad *tls.CertificateVerificationError
	if errors.As(err, &bad) {
		return errors.New(strings.TrimPrefix(bad.Err.Error(), "x509: "))
	}
	msg := err.Error()
	if i := strings.LastIndex(msg, ": "); i >= 0 {
		return fmt.Errorf("%s", msg[i+2:])
	}
	return err
}

// reason is err's text as a target's why, at most MaxReason bytes (cut on a
// character's boundary).
func reason(err error) string {
	msg := err.Error()
	if len(msg) <= MaxReason {
		return msg
	}
	const more = "…"
	cut := MaxReason - len(more)
	for cut > 0 && !utf8.RuneStart(msg[cut]) {
		cut--
	}
	return msg[:cut] + more
}
