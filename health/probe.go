package health

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
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
	client   *http.Client
	host     string // an HTTP check's Host ("": the target)

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
	if mon.Type == configs.MonitorHTTP || mon.Type == configs.MonitorHTTPS {
		tr := &http.Transport{
			// Health checks must see the target itself: no proxy from
			// the environment, no connection reuse hiding a dead peer.
			Proxy:             nil,
			DisableKeepAlives: true,
			TLSClientConfig:   verify,
			// A health endpoint's head is small; a target sending
			// megabytes (net/http reads 10 MiB by default) fails.
			MaxResponseHeaderBytes: maxProbeHead,
		}
		p.client = &http.Client{
			Timeout:       checkTransport(tr, mon.Timeout.D()),
			Transport:     tr,
			CheckRedirect: NoRedirect,
		}
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

// Target is what the prober checks.
func (p *Prober) Target() string { return p.target }

func (p *Prober) checkOnce(ctx context.Context) {
	err := p.check(ctx)
	if ctx.Err() != nil {
		return // stopping: a cancelled check says nothing about the target
	}
	p.mu.Lock()
	p.checked = time.Now()
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

// check checks the target once, waiting on it for at most the monitor's
// timeout (tcpConnect, checkTransport).
func (p *Prober) check(ctx context.Context) error {
	switch p.mon.Type {
	case configs.MonitorTCP:
		if err := tcpConnect(ctx, p.target, p.mon.Timeout.D()); err != nil {
			return fmt.Errorf("tcp connect %s: %w", p.target, err)
		}
		return nil
	default:
		url := string(p.mon.Type) + "://" + p.target + p.mon.Path
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		req.Header.Set("User-Agent", "ringlb-monitor")
		if p.host != "" {
			req.Host = p.host
			url += " (Host " + p.host + ")"
		}
		spent := new(atomic.Bool)
		resp, err := p.client.Do(req.WithContext(context.WithValue(ctx, spentKey{}, spent)))
		if err != nil {
			if spent.Load() {
				// Cut short by the check's timeout: net/http may call
				// the part read malformed.
				err = os.ErrDeadlineExceeded
			}
			return fmt.Errorf("GET %s: %w", url, unwrapURLError(err))
		}
		resp.Body.Close()
		if resp.StatusCode != p.mon.ExpectStatus {
			if v := resp.Header.Get(configs.HeaderStarting); v != "" {
				return fmt.Errorf("GET %s: status %d, starting (%.64q): %w", url, resp.StatusCode, v, errStarting)
			}
			return fmt.Errorf("GET %s: status %d, want %d", url, resp.StatusCode, p.mon.ExpectStatus)
		}
		return nil
	}
}

// spentKey is a check's context value, an *atomic.Bool its connection sets
// when the check's time to wait on the target ran out (checkTransport).
type spentKey struct{}

// errStarting marks a check's answer as the target's starting
// (configs.HeaderStarting): no finding.
var errStarting = errors.New("held at its state until the target has started")

func unwrapURLError(err error) error {
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
