// Package httplog carries the error lines of ringlb's fasthttp servers (the
// balancer's and the edges' data ports) into slog without the requests they
// are about. fasthttp quotes a malformed request in its error — the request
// line with its query string (?token=…), header lines (Authorization,
// Cookie) — and a request is anyone's to make malformed, so such a line
// would put a client's secrets into the logs. Servers also set
// fasthttp.Server.SecureErrorLogMessage, which drops most of the quote; this
// package drops the rest (the one bad header line fasthttp still quotes).
//
// It is not an access log and does not decide what to log: only how a
// server library's own lines reach slog, and, with a Limit, how many: a
// malformed request is also anyone's to send at line rate.
package httplog

import (
	"fmt"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ringlb/ringlb/balancer/acceptguard"
)

// Logger is a fasthttp.Logger writing to a slog.Logger at warn level,
// with every quoted request fragment redacted.
type Logger struct {
	L *slog.Logger
	// Limit bounds the lines written; nil: every line. A server logs a
	// line per connection it ends on a malformed request, which anyone
	// can send as fast as the network carries it.
	Limit *Limit
}

// Limit lets one line through per its Every and counts every line in
// Lines (nil: not counted); the line let through says how many were held
// back since the one before ("suppressed").
type Limit struct {
	acceptguard.LogLimit
	Lines prometheus.Counter
}

// Printf logs one fasthttp line.
func (l Logger) Printf(format string, args ...any) {
	if l.Limit == nil {
		l.L.Warn(line(format, args), "source", "fasthttp")
		return
	}
	if l.Limit.Lines != nil {
		l.Limit.Lines.Inc()
	}
	if ok, suppressed := l.Limit.Allow(time.Now()); ok {
		l.L.Warn(line(format, args), "source", "fasthttp", "suppressed", suppressed)
	}
}

// MaxLine bounds a line as it is logged. fasthttp's own lines are a few
// hundred bytes, but an error it passes on may list what a client sent:
// crypto/tls names every application protocol (ALPN) a ClientHello offers
// that none matches, each quoted — so each redacted, 13 bytes or more for
// a name of one — and a 42 KB ClientHello made a line of 315 KB.
const MaxLine = 1 << 10

// line is one fasthttp line as logged: redacted, then cut at MaxLine.
func line(format string, args []any) string {
	s := Redact(fmt.Sprintf(format, args...))
	if len(s) <= MaxLine {
		return s
	}
	return s[:MaxLine] + "... (" + strconv.Itoa(len(s)-MaxLine) + " bytes cut)"
}

// Redacted replaces a quoted fragment of a request.
const Redacted = `"[redacted]"`

// Redact returns line with every Go-quoted string replaced by Redacted,
// except the quoted socket addresses fasthttp names connections by
// ("127.0.0.1:8080"<->"10.0.0.7:51234"). A quote that does not end ends the
// line. It never returns anything of a quoted string but addresses.
func Redact(line string) string {
	var b strings.Builder
	for {
		i := strings.IndexByte(line, '"')
		if i < 0 {
			b.WriteString(line)
			return b.String()
		}
		b.WriteString(line[:i])
		quoted, err := strconv.QuotedPrefix(line[i:])
		if err != nil {
			b.WriteString(Redacted)
			return b.String()
		}
		if s, err := strconv.Unquote(quoted); err == nil {
			if _, err := netip.ParseAddrPort(s); err == nil {
				b.WriteString(quoted)
				line = line[i+len(quoted):]
				continue
			}
		}
		b.WriteString(Redacted)
		line = line[i+len(quoted):]
	}
}
