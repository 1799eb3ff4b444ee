package acceptguard

import (
	"log/slog"
	"sync"
	"time"
)

// LogLimit lets one log line through per Every (DefaultLogEvery when
// zero) and counts the ones it holds back. Refusals anyone can provoke —
// a connection over a cap, a malformed request, an unsigned peer call —
// must not write the log at the rate they are sent: each line says how
// many it stands for, and a metric counts every one. The one home of that
// rule for every role and port.
type LogLimit struct {
	Every time.Duration

	mu   sync.Mutex
	last time.Time
	held int
}

// Allow reports whether a line may be written at now and, if so, how many
// were held back since the last one.
func (l *LogLimit) Allow(now time.Time) (ok bool, suppressed int) {
	every := l.Every
	if every <= 0 {
		every = DefaultLogEvery
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.last.IsZero() && now.Sub(l.last) < every {
		l.held++
		return false, 0
	}
	n := l.held
	l.last, l.held = now, 0
	return true, n
}

// Held is how many lines were held back since the last one written.
func (l *LogLimit) Held() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.held
}

// Warn writes msg with args at WARN, and "suppressed" (the lines held back
// since the last), unless a line went out less than Every ago.
func (l *LogLimit) Warn(log *slog.Logger, msg string, args ...any) {
	if ok, suppressed := l.Allow(time.Now()); ok {
		log.Warn(msg, append(args, "suppressed", suppressed)...)
	}
}
