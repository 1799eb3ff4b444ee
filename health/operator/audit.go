package operator

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
)

// Record is one admin action: who did what to which target, from where, and
// the status it was answered with. Every change an admin port lets through
// is one (Access.Write), and so is every login, logout and refused login.
type Record struct {
	At     time.Time `json:"at"`
	Node   string    `json:"node"`
	Who    string    `json:"who"`           // "user:NAME", "token", "loopback"; for a login, the user tried, or "unknown user #FINGERPRINT" (Logins.who)
	For    string    `json:"for,omitempty"` // a forwarded change: the user it was made for (configs.HeaderOnBehalf)
	Remote string    `json:"remote"`        // the client's address as the admin port saw it
	Action string    `json:"action"`        // "drain", "serve_mode", "maintenance", "recover", "login", …
	Target string    `json:"target,omitempty"`
	// Changes are, for a PUT of the config, the settings it changed
	// (changedSettings): a file the node no longer reads — its gossip
	// key, its admin token — first, as "dropped FIELD".
	Changes []string `json:"changes,omitempty"`
	Result  int      `json:"result"` // the HTTP status answered
	// Claimed is, in a cluster-wide view, the time a peer's record was
	// dated when that was after the moment it was read; At is then that
	// moment (PeerRecords).
	Claimed time.Time `json:"claimed_at,omitzero"`
}

// Bounds of the audit log. The files hold the last auditFileRecords to
// 2×auditFileRecords records (the current file and the one before it);
// memory holds the last auditMemoryRecords, what GET /api/audit serves.
// Refused logins have files and memory of their own (refusedMemoryRecords
// of them): anyone may send one, and sharing would let a trickle of them
// push every operator's record out, of the answer and of the disk.
const (
	auditFileRecords     = 5000
	auditMemoryRecords   = 1000
	refusedMemoryRecords = 100
	// maxRecordField bounds each text field of a record: targets come from
	// request paths, which a client writes. A peer's history is held to it
	// too (PeerHistory).
	maxRecordField = 256
	// maxRecordChanges bounds a record's Changes; beyond, the last says
	// how many more.
	maxRecordChanges = 32
	// Records of refused logins are rate-limited: an attacker guessing
	// passwords must not flood the log out of the operators' own records.
	refusedRecordsPerSecond = 1
	refusedRecordsBurst     = 30
)

const (
	auditFile            = "audit.jsonl"
	auditPrevFile        = "audit.1.jsonl"
	refusedAuditFile     = "audit-refused-logins.jsonl"
	refusedAuditPrevFile = "audit-refused-logins.1.jsonl"
)

// auditStream is one kind of record's part of the audit log: its last
// records in memory and, with a state directory, its pair of files.
type auditStream struct {
	name, prevName string // the files, in the state directory
	size           int    // records kept in memory
	recent         []Record
	next           int      // where the next record goes in recent
	file           *os.File // nil: memory only
	lines          int      // records in file
}

// keep puts r in the memory ring (AuditLog.mu held, or before use).
func (s *auditStream) keep(r Record) {
	if len(s.recent) < s.size {
		s.recent = append(s.recent, r)
		return
	}
	s.recent[s.next] = r
	s.next = (s.next + 1) % s.size
}

// list returns up to limit records, newest first (AuditLog.mu held).
func (s *auditStream) list(limit int) []Record {
	n := len(s.recent)
	limit = min(limit, n)
	out := make([]Record, 0, limit)
	for i := 0; i < limit; i++ {
		// The newest is just before next (or the last while filling).
		idx := (s.next - 1 - i + 2*n) % n
		if n < s.size {
			idx = n - 1 - i
		}
		out = append(out, s.recent[idx])
	}
	return out
}

// refusedLogin reports whether r records a refused login (AddRefused), as
// the files of an earlier release, which kept them with the rest, say it.
func refusedLogin(r Record) bool { return r.Action == "login" && r.Result != http.StatusOK }

// AuditLog is a node's audit log: the last records in memory, and with a
// state directory an append-only JSON-lines file (each record synced before
// the answer goes out) rotated at auditFileRecords — refused logins apart,
// in memory and on disk (auditStream).
type AuditLog struct {
	node string
	log  *slog.Logger
	dir  string
	// onRecord is told of every record kept (history events); set before use.
	onRecord func(Record)

	mu sync.Mutex
	// changes are every record but refused logins, which are refused.
	changes, refusedLogins auditStream
	// rotateAt is auditFileRecords (smaller in tests).
	rotateAt int
	// lastWriteError rate-limits the log line of a failing disk.
	lastWriteError time.Time

	refused   *rate.Limiter
	kept      prometheus.Counter
	dropped   prometheus.Counter
	writeErrs prometheus.Counter
}

func newAuditLog(node string, dir string, log *slog.Logger, m *metrics) *AuditLog {
	a := &AuditLog{node: node, log: log, dir: dir, rotateAt: auditFileRecords, refused: rate.NewLimiter(refusedRecordsPerSecond, refusedRecordsBurst),
		kept: m.auditRecords, dropped: m.auditSuppressed, writeErrs: m.stateWriteErrors,
		changes:       auditStream{name: auditFile, prevName: auditPrevFile, size: auditMemoryRecords},
		refusedLogins: auditStream{name: refusedAuditFile, prevName: refusedAuditPrevFile, size: refusedMemoryRecords}}
	if dir == "" {
		return a
	}
	for _, s := range []*auditStream{&a.changes, &a.refusedLogins} {
		for _, name := range []string{s.prevName, s.name} {
			n, err := a.load(filepath.Join(dir, name))
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				log.Warn("audit log: earlier records not read", "file", filepath.Join(dir, name), "err", err)
			}
			if name == s.name {
				s.lines = n
			}
		}
		if err := a.open(s); err != nil {
			log.Error("audit log: records are kept in memory only", "err", err)
		}
	}
	return a
}

// stream is the part of the log r belongs to.
func (a *AuditLog) stream(r Record) *auditStream {
	if refusedLogin(r) {
		return &a.refusedLogins
	}
	return &a.changes
}

// load reads a file of records into memory and returns how many lines it
// has. A torn last line (the process killed mid-write) is skipped.
func (a *AuditLog) load(path string) (int, error) {
	if err := auditRegular(path); err != nil {
		return 0, err
	}
	f, err := openNoFollow(path, os.O_RDONLY, 0)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil {
		return 0, err
	} else if err := ownFile(path, fi); err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	n := 0
	for sc.Scan() {
		n++
		var r Record
		if json.Unmarshal(sc.Bytes(), &r) == nil {
			a.stream(r).keep(r)
		}
	}
	return n, sc.Err()
}

// auditRegular refuses an audit file that exists and is not a regular
// file: opening a FIFO would wait in open(2), at start, for a writer or a
// reader that never comes, and a symlink would have records appended to
// the file it names.
func auditRegular(path string) error {
	fi, err := os.Lstat(path)
	if err == nil && !fi.Mode().IsRegular() {
		return fmt.Errorf("%s: not a regular file (%s)", path, fi.Mode().Type())
	}
	return err
}

func (a *AuditLog) open(s *auditStream) error {
	if err := auditRegular(filepath.Join(a.dir, s.name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("open audit log: %w", err)
	}
	f, err := openNoFollow(filepath.Join(a.dir, s.name), os.O_WRONLY|os.O_CREATE|os.O_APPEND, fileMode)
	if err != nil {
		return fmt.Errorf("open audit log: %w", err)
	}
	if st, err := f.Stat(); err != nil || ownFile(f.Name(), st) != nil {
		f.Close()
		return fmt.Errorf("open audit log: %s is not this node's file", f.Name())
	}
	// A record torn by a crash ends without a newline: end it, so the
	// next record starts a line of its own (the torn one is skipped at load).
	if st, err := f.Stat(); err == nil && st.Size() > 0 {
		last := make([]byte, 1)
		if r, err := openNoFollow(f.Name(), os.O_RDONLY, 0); err == nil {
			if _, err := r.ReadAt(last, st.Size()-1); err == nil && last[0] != '\n' {
				_, _ = f.Write([]byte{'\n'})
			}
			r.Close()
		}
	}
	s.file = f
	return syncDir(a.dir)
}

// Add records an admin action.
func (a *AuditLog) Add(r Record) {
	if a == nil {
		return
	}
	a.add(&a.changes, r)
}

// add keeps r in s.
func (a *AuditLog) add(s *auditStream, r Record) {
	r.Node = a.node
	r.bound()
	if r.At.IsZero() {
		r.At = time.Now().UTC()
	}
	a.mu.Lock()
	s.keep(r)
	if s.file != nil {
		a.write(s, r)
	}
	a.mu.Unlock()
	a.kept.Inc()
	if a.onRecord != nil {
		a.onRecord(r)
	}
}

// bound cuts each text field to maxRecordField.
func (r *Record) bound() {
	for _, f := range []*string{&r.Node, &r.Who, &r.For, &r.Remote, &r.Action, &r.Target} {
		*f = boundField(*f)
	}
	if len(r.Changes) > maxRecordChanges {
		r.Changes = append(r.Changes[:maxRecordChanges-1:maxRecordChanges-1], fmt.Sprintf("and %d more", len(r.Changes)-maxRecordChanges+1))
	}
	for i := range r.Changes {
		r.Changes[i] = boundField(r.Changes[i])
	}
}

// boundField cuts s to maxRecordField.
func boundField(s string) string { return s[:min(len(s), maxRecordField)] }

// PeerRecords are the records of node's GET /api/audit answer (body), read
// at the moment read, as a cluster-wide view shows them: each named as
// node's, the node read and whose signature the answer carried — not as the
// answer names it, which would let one node put its records in another's
// name — held to the bounds a node keeps its own to, and newest first. A
// record dated after the moment it was read (a clock running ahead, or a
// node that lies) is shown at that moment, with the time it claimed: dated
// 2099, it would stand above every record of the cluster for good.
func PeerRecords(node string, body []byte, read time.Time) ([]Record, error) {
	var v AuditView
	if err := json.Unmarshal(body, &v); err != nil {
		return nil, err
	}
	for i := range v.Records {
		r := &v.Records[i]
		r.Node = node
		r.bound()
		r.Claimed = time.Time{}
		if r.At.After(read) {
			r.Claimed, r.At = r.At, read
		}
	}
	sort.SliceStable(v.Records, func(i, j int) bool { return v.Records[i].At.After(v.Records[j].At) })
	return v.Records, nil
}

// AddRefused records a refused login, within refusedRecordsPerSecond; the
// rest are only counted (ringlb_admin_audit_suppressed_total).
func (a *AuditLog) AddRefused(r Record) {
	if a == nil {
		return
	}
	if !a.refused.Allow() {
		a.dropped.Inc()
		return
	}
	a.add(&a.refusedLogins, r)
}

// write appends r to the file and syncs it, rotating the file when full
// (a.mu held). A disk error keeps the record in memory, is counted and
// logged at most once a minute: the admin action itself has happened.
func (a *AuditLog) write(s *auditStream, r Record) {
	line, _ := json.Marshal(r) // a Record always encodes
	_, err := s.file.Write(append(line, '\n'))
	if err == nil {
		err = s.file.Sync()
	}
	if err == nil {
		s.lines++
		if s.lines >= a.rotateAt {
			err = a.rotate(s)
		}
	}
	if err != nil {
		a.writeErrs.Inc()
		if time.Since(a.lastWriteError) > time.Minute {
			a.lastWriteError = time.Now()
			a.log.Error("audit log: a record was not written to disk (kept in memory)", "err", err)
		}
	}
}

// rotate makes the full file the previous one (dropping the one before)
// and starts an empty one.
func (a *AuditLog) rotate(s *auditStream) error {
	s.file.Close()
	s.file = nil
	if err := os.Rename(filepath.Join(a.dir, s.name), filepath.Join(a.dir, s.prevName)); err != nil {
		return fmt.Errorf("rotate audit log: %w", err)
	}
	s.lines = 0
	return a.open(s)
}

// List returns up to limit records, newest first: the changes' and the
// refused logins' merged by time, so at most refusedMemoryRecords of them
// refused logins.
func (a *AuditLog) List(limit int) []Record {
	if a == nil {
		return []Record{}
	}
	a.mu.Lock()
	changes, refused := a.changes.list(limit), a.refusedLogins.list(limit)
	a.mu.Unlock()
	out := make([]Record, 0, min(limit, len(changes)+len(refused)))
	for len(out) < limit && len(changes)+len(refused) > 0 {
		if len(refused) == 0 || len(changes) > 0 && !refused[0].At.After(changes[0].At) {
			out, changes = append(out, changes[0]), changes[1:]
		} else {
			out, refused = append(out, refused[0]), refused[1:]
		}
	}
	return out
}

// close closes the file.
func (a *AuditLog) close() {
	if a == nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, s := range []*auditStream{&a.changes, &a.refusedLogins} {
		if s.file != nil {
			s.file.Close()
			s.file = nil
		}
	}
}
