package operator

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ringlb/ringlb/configs"
)

// Store keeps operator state in cluster.state_dir: one versioned JSON file
// per concern (the balancer's maintenance and drains, the gslb's overrides
// and latches, login sessions, a generated password), each replaced
// atomically, so a node killed at any instant (kill -9, power loss) finds
// either the old file or the new one, never a torn one. A Store without a
// directory keeps nothing: Save does nothing and Load finds nothing.
type Store struct {
	dir string
	mu  sync.Mutex // one writer per file at a time (the temp file's name is shared)
	// unsaved holds, under mu, each concern's latest state whose write
	// failed (out of descriptors, a full disk): written again saveRetry
	// later and after each failure (retry), and as the store closes, until
	// a write succeeds or a later Save replaces it. Logged and left, a
	// failed save had a restart bring back what it replaced: a gslb's
	// serve mode answered 200 was gone and its serial went back below its
	// secondaries' copy (TestFailedSavesAreTriedAgain), a drain, a login
	// session ended.
	unsaved map[string][]byte
	retry   *time.Timer
	closed  bool
	log     *slog.Logger
}

// saveRetry is how long after a failed save the Store writes it again.
const saveRetry = 5 * time.Second

// stateVersion is the format of every file the Store writes; a file of
// another version is not read (and logged), so a downgrade never misreads
// state.
const stateVersion = 1

// Modes of what the store creates: state names who may drain what, and
// hashes of passwords and session cookies.
const (
	dirMode  = 0o700
	fileMode = 0o600
)

// ErrNoState: Load found no state for the concern (none saved yet, or no
// directory).
var ErrNoState = errors.New("no saved state")

type stateFile struct {
	Version int             `json:"version"`
	Saved   time.Time       `json:"saved"`
	Data    json.RawMessage `json:"data"`
}

// OpenStore opens (creating it, mode 0700) the state directory dir; "" is a
// store that keeps nothing.
func OpenStore(dir string) (*Store, error) {
	if dir == "" {
		return &Store{}, nil
	}
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	// One another user can write is refused (the config check says so
	// first; this is the same rule at the moment of use).
	if err := configs.CheckStateDir(dir); err != nil {
		return nil, err
	}
	// Prove it is writable now, not at the first drain: a new file of
	// its own (O_EXCL), never one found there.
	probe, err := os.CreateTemp(dir, ".probe.*")
	if err != nil {
		return nil, fmt.Errorf("state directory %s is not writable: %w", dir, err)
	}
	probe.Close()
	_ = os.Remove(probe.Name())
	return &Store{dir: dir}, nil
}

// Dir is the state directory ("" when the store keeps nothing).
func (s *Store) Dir() string { return s.dir }

func (s *Store) path(concern string) string { return filepath.Join(s.dir, concern+".json") }

// Load reads the concern's state into v.
func (s *Store) Load(concern string, v any) error {
	if s == nil || s.dir == "" {
		return ErrNoState
	}
	raw, err := readStateFile(s.path(concern))
	if errors.Is(err, fs.ErrNotExist) {
		return ErrNoState
	}
	if err != nil {
		return fmt.Errorf("read state %s: %w", concern, err)
	}
	var f stateFile
	if err := json.Unmarshal(raw, &f); err != nil {
		return fmt.Errorf("state %s: %w", s.path(concern), err)
	}
	if f.Version != stateVersion {
		return fmt.Errorf("state %s: version %d, this binary reads %d", s.path(concern), f.Version, stateVersion)
	}
	if err := json.Unmarshal(f.Data, v); err != nil {
		return fmt.Errorf("state %s: %w", s.path(concern), err)
	}
	return nil
}

// loadNewest reads the concern's state, a JSON array, keeping at most max
// of its elements for which keep holds: the newest by newer. A file of
// more than the node keeps (a runaway writer, an older release's bug, a
// file planted by the node's own user) costs at most 2×max elements at a
// time beyond the file's bounded bytes, and never a table over its cap.
// The result is newest first.
func loadNewest[T any](s *Store, concern string, max int, keep func(T) bool, newer func(a, b T) bool) ([]T, error) {
	var raw json.RawMessage
	if err := s.Load(concern, &raw); err != nil {
		return nil, err
	}
	return decodeNewest(raw, "state "+s.path(concern), max, keep, newer)
}

// decodeNewest is loadNewest of a list already read (from the state
// directory, or an upgrade's hand-off), named where in its errors.
func decodeNewest[T any](raw []byte, where string, max int, keep func(T) bool, newer func(a, b T) bool) ([]T, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	switch tok, err := dec.Token(); {
	case err == nil && tok == nil: // null: an empty list
		return nil, nil
	case err != nil || tok != json.Delim('['):
		return nil, fmt.Errorf("%s: not a list", where)
	}
	trim := func(out []T) []T {
		sort.SliceStable(out, func(i, j int) bool { return newer(out[i], out[j]) })
		return out[:min(len(out), max)]
	}
	out := make([]T, 0, 2*max)
	for dec.More() {
		var v T
		if err := dec.Decode(&v); err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		if !keep(v) {
			continue
		}
		if out = append(out, v); len(out) == 2*max {
			out = trim(out)
		}
	}
	return trim(out), nil
}

// maxStateFile bounds what Load reads of a state file: the largest the
// store writes (256 login sessions, a gslb's overrides) is tens of KiB.
const maxStateFile = 16 << 20

// readStateFile reads a state file, refusing one that is not what the store
// writes: not a regular file (a FIFO would hold the node's start in open(2);
// a symlink would have the node believe a file elsewhere), not this user's,
// or larger than maxStateFile (a disk fault, a runaway writer: read whole,
// before, at start). The caller logs it and starts without that state.
func readStateFile(path string) ([]byte, error) {
	// Lstat, then open: opening a FIFO is what waits.
	if fi, err := os.Lstat(path); err != nil {
		return nil, err
	} else if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file (%s)", path, fi.Mode().Type())
	}
	f, err := openNoFollow(path, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", path)
	} else if err := ownFile(path, fi); err != nil {
		return nil, err
	} else if fi.Size() > maxStateFile {
		return nil, fmt.Errorf("%s: %d bytes, larger than a state file can be (%d)", path, fi.Size(), maxStateFile)
	}
	raw, err := io.ReadAll(io.LimitReader(f, maxStateFile+1))
	if err != nil {
		return nil, err
	}
	if len(raw) > maxStateFile {
		return nil, fmt.Errorf("%s: larger than a state file can be (%d bytes)", path, maxStateFile)
	}
	return raw, nil
}

// Save replaces the concern's state with v: written to a temporary file in
// the same directory, synced, renamed over the old one, and the directory
// synced, so the rename itself survives a crash.
func (s *Store) Save(concern string, v any) error {
	if s == nil || s.dir == "" {
		return nil
	}
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode state %s: %w", concern, err)
	}
	raw, err := json.MarshalIndent(stateFile{Version: stateVersion, Saved: time.Now().UTC(), Data: data}, "", "  ")
	if err != nil {
		return fmt.Errorf("encode state %s: %w", concern, err)
	}
	raw = append(raw, '\n')
	s.mu.Lock()
	defer s.mu.Unlock()
	path := s.path(concern)
	if err := writeFileAtomic(path, raw, fileMode, nil); err != nil {
		if s.unsaved == nil {
			s.unsaved = map[string][]byte{}
		}
		s.unsaved[concern] = raw
		if s.retry == nil && !s.closed {
			s.retry = time.AfterFunc(saveRetry, s.writeUnsaved)
		}
		return fmt.Errorf("write state %s (tried again until written): %w", path, err)
	}
	delete(s.unsaved, concern)
	return nil
}

// writeUnsaved writes the states whose save failed (unsaved), once, and
// arms the retry again for those it could not write.
func (s *Store) writeUnsaved() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.retry = nil
	if len(s.unsaved) == 0 {
		return
	}
	var written []string
	for _, concern := range slices.Sorted(maps.Keys(s.unsaved)) {
		if writeFileAtomic(s.path(concern), s.unsaved[concern], fileMode, nil) == nil {
			delete(s.unsaved, concern)
			written = append(written, concern)
		}
	}
	if s.log != nil && len(written) > 0 {
		s.log.Info("operator state written after a failed save", "concerns", written, "left", len(s.unsaved))
	}
	if len(s.unsaved) > 0 && !s.closed {
		s.retry = time.AfterFunc(saveRetry, s.writeUnsaved)
	}
}

// Close writes once more what a failed save left unwritten and stops
// retrying: the next start reads the state the node had.
func (s *Store) Close() {
	if s == nil {
		return
	}
	s.mu.Lock()
	s.closed = true
	if s.retry != nil {
		s.retry.Stop()
	}
	s.mu.Unlock()
	s.writeUnsaved()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.log != nil && len(s.unsaved) > 0 {
		s.log.Error("operator state not written as the node stops: the next start reads what was saved before", "concerns", slices.Sorted(maps.Keys(s.unsaved)))
	}
}

// writeFileAtomic replaces path with data (mode): a temporary file in the
// same directory, prepared (nil: nothing more), synced, renamed over it, the
// directory synced; a crash leaves the old file or the new, never a part.
func writeFileAtomic(path string, data []byte, mode os.FileMode, prepare func(*os.File) error) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	name := tmp.Name()
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Chmod(mode)
	}
	if err == nil && prepare != nil {
		err = prepare(tmp)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(name, path)
	}
	if err != nil {
		_ = os.Remove(name)
		return err
	}
	return syncDir(dir)
}

// syncDir makes a rename or a new file in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync state directory: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync state directory: %w", err)
	}
	return nil
}

// openNoFollow opens a file of the state directory, never through a
// symlink (O_NOFOLLOW: ELOOP): the node reads and writes its own files,
// not files elsewhere that a link in their place names.
func openNoFollow(path string, flag int, perm os.FileMode) (*os.File, error) {
	return os.OpenFile(path, flag|syscall.O_NOFOLLOW, perm)
}

// ownFile refuses a file of the state directory that another user owns:
// the store writes every file as this user, so one of another owner was
// put there by someone else.
func ownFile(path string, fi os.FileInfo) error {
	if uid, _, ok := configs.FileOwner(fi); ok && int(uid) != os.Geteuid() {
		return fmt.Errorf("%s: owned by uid %d, not this user (%d): not written by this node", path, uid, os.Geteuid())
	}
	return nil
}

// SaveOrder has the saves of one state land in the order their snapshots
// were taken, where a snapshot is taken under one lock and written after
// it is released (a write under the lock would hold it for a sync). Two
// changes saved at once each wrote after it read, and the older read
// written last was what a restart came back to — a logged-out session
// valid again, maintenance on though the node answered off last.
type SaveOrder struct {
	taken   atomic.Uint64
	writing sync.Mutex
	written uint64
}

// Next numbers a snapshot: call it under the lock the snapshot is taken
// under, so that the numbers follow the snapshots.
func (o *SaveOrder) Next() uint64 { return o.taken.Add(1) }

// Write runs write for snapshot seq unless a later one was written already.
func (o *SaveOrder) Write(seq uint64, write func()) {
	o.writing.Lock()
	defer o.writing.Unlock()
	if seq <= o.written {
		return
	}
	o.written = seq
	write()
}
