package operator

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"

	"github.com/ringlb/ringlb/configs"
)

// ConfigFile is the file a node was started from and the one way it is
// reloaded: SIGHUP (Reload) and PUT /api/config both check the file with
// configs (the messages of `ringlb check`) and apply it through the role's
// Apply, one at a time.
//
//	GET  /api/config        {node, role, path, version, running_version, effective, file}; ETag: "version"
//	POST /api/config/check  body: YAML → 200 {ok, summary, warnings} | 400 {ok: false, error, problems}
//	PUT  /api/config        body: YAML, If-Match: "version" → the file replaced and applied
//
// version is the SHA-256 of the file's bytes on disk (32 hex digits):
// a PUT names the version it edited, and is refused (412) when the file
// changed since — another operator's PUT, an edit on the host.
type ConfigFile struct {
	path, role string
	apply      func(running, next *configs.Config) error
	log        *slog.Logger

	mu sync.Mutex // one reload or PUT at a time
	// running is the config the node runs (the last one applied) and
	// runningVersion the version of the file it was read from.
	running        *configs.Config
	runningVersion string
	// held says why the file changes nothing now (Hold); "": it does.
	held string
	// check is the role's own check of a config (UseCheck); nil: none.
	check func(*configs.Config) (warnings []error, err error)
}

// UseCheck has the file's check and PUT refuse, before anything is
// written, a config check refuses: what the role itself would refuse at its
// start beyond configs' checks (a gslb's zones as it loads them); and
// answer, beside the file's own, the warnings it has (what `ringlb check`
// prints of them). Call it before the node serves the config API.
func (f *ConfigFile) UseCheck(check func(*configs.Config) (warnings []error, err error)) {
	f.check = check
}

// roleCheck is the role's check of next (UseCheck), run only when next
// names no file of the host the running config does not (newFiles: a
// request is not a way to have the node read a file of the host; the zone
// loader's problems quote what they read). current is the file's content.
func (f *ConfigFile) roleCheck(running *configs.Config, current []byte, next *configs.Config) ([]error, error) {
	if f.check == nil || len(f.newFiles(running, current, next)) > 0 {
		return nil, nil
	}
	return f.check(next)
}

// Hold makes the file refuse every reload and PUT, saying why, until
// release: while a process hands the node over to another (an upgrade), a
// change applied only to the one exiting was answered as applied and lost.
func (f *ConfigFile) Hold(why string) (release func()) {
	f.mu.Lock()
	f.held = why
	f.mu.Unlock()
	return func() {
		f.mu.Lock()
		f.held = ""
		f.mu.Unlock()
	}
}

// MaxConfigBytes bounds a PUT or check body, as a file's (configs).
const MaxConfigBytes = configs.MaxConfigBytes

// NewConfigFile is the config file at path, from which the node of role
// was started with running. apply makes the node run next (the reload
// path): on an error the node must be as it was.
// started is the file's content running was read from (configs.LoadFile):
// read again here, an edit in between was taken for what runs.
func NewConfigFile(path, role string, running *configs.Config, started []byte, apply func(running, next *configs.Config) error, log *slog.Logger) *ConfigFile {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &ConfigFile{path: path, role: role, apply: apply, log: log, running: running, runningVersion: version(started)}
}

// version names a file's content.
func version(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:16])
}

// Path is the file's path.
func (f *ConfigFile) Path() string { return f.path }

// Running is the config the node runs.
func (f *ConfigFile) Running() *configs.Config {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.running
}

// Reload reads the file again and applies it (SIGHUP). A file with errors,
// or one the role refuses, changes nothing; the error says why.
func (f *ConfigFile) Reload() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.held != "" {
		return errors.New(f.held)
	}
	// Read as a start reads it, by the rule of the config file itself
	// (made writable by others since the start, it is refused).
	next, data, err := configs.LoadFile(f.path)
	if err == nil {
		err = f.applyLocked(next, data)
	}
	// A file refused for its problems: what it would be warned of is
	// logged too, as `ringlb check` says it after them (a PUT answers it).
	var refused *configs.Refused
	if errors.As(err, &refused) {
		refused.Warnings.LogWarnings(f.log)
	}
	return err
}

// applyLocked makes the node run next, read from data.
func (f *ConfigFile) applyLocked(next *configs.Config, data []byte) error {
	next.LogWarnings(f.log)
	if err := f.apply(f.running, next); err != nil {
		return err
	}
	f.running, f.runningVersion = next, version(data)
	return nil
}

// configView is GET /api/config.
type configView struct {
	Node    string `json:"node"`
	Role    string `json:"role"`
	Path    string `json:"path"`
	Version string `json:"version"`
	// RunningVersion is the version the node runs; it differs from
	// Version when the file was edited and not reloaded (or the reload
	// was refused).
	RunningVersion string         `json:"running_version"`
	Effective      map[string]any `json:"effective"`
	File           string         `json:"file"`
}

func (n *Node) serveConfig(w http.ResponseWriter, r *http.Request) {
	f := n.configFile.Load()
	if f == nil {
		noConfigFile(w)
		return
	}
	f.mu.Lock()
	running, runningVersion := f.running, f.runningVersion
	f.mu.Unlock()
	data, err := configs.ReadConfigFile(f.path)
	if err != nil {
		WriteJSON(w, http.StatusInternalServerError, map[string]string{"error": "the config file cannot be read: " + err.Error()})
		return
	}
	eff, err := running.Effective(f.role)
	if err != nil {
		WriteJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		return
	}
	v := version(data)
	w.Header().Set("ETag", `"`+v+`"`)
	WriteJSON(w, http.StatusOK, configView{Node: n.name, Role: f.role, Path: f.path, Version: v, RunningVersion: runningVersion, Effective: eff, File: string(data)})
}

func noConfigFile(w http.ResponseWriter) {
	WriteJSON(w, http.StatusNotFound, map[string]string{"error": "this node was not started from a config file (the demo): nothing to show or replace"})
}

// readConfigBody reads a PUT or check body, bounded by MaxConfigBytes.
func readConfigBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxConfigBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			WriteJSON(w, http.StatusRequestEntityTooLarge, map[string]string{"error": fmt.Sprintf("a config file is at most %d bytes", MaxConfigBytes)})
		} else {
			WriteJSON(w, http.StatusBadRequest, map[string]string{"error": "the body could not be read"})
		}
		return nil, false
	}
	return data, true
}

// problems answers a config that does not check: every problem, as `ringlb
// check` prints it (file:line: field.path: what), and the warnings the
// file has besides (configs.Refused; warned, those of a file the role's
// check refused), as a file that checks is answered with its own.
func problems(w http.ResponseWriter, err error, warned configs.Errors) {
	list := problemList(err)
	var refused *configs.Refused
	if errors.As(err, &refused) {
		warned = refused.Warnings
	}
	WriteJSON(w, http.StatusBadRequest, map[string]any{"ok": false, "error": strings.Join(list, "\n"), "problems": list, "warnings": warnings(warned, nil)})
}

// problemList is err's problems, one an entry: a file's (configs.Errors),
// or each of errors joined (a role's check: a gslb's zones, each of their
// problems on a line of its own, FILE:LINE: field.path: what). Before, the
// zones' problems were one entry of many lines.
func problemList(err error) []string {
	var errs configs.Errors
	if errors.As(err, &errs) {
		list := make([]string, 0, len(errs))
		for _, e := range errs {
			list = append(list, e.Error())
		}
		return list
	}
	if joined, ok := err.(interface{ Unwrap() []error }); ok {
		var list []string
		for _, e := range joined.Unwrap() {
			list = append(list, problemList(e)...)
		}
		return list
	}
	return []string{err.Error()}
}

// warnings are a checked config's warnings as `ringlb check` prints them,
// the file's then its role's (UseCheck) (an empty list: none).
func warnings(warned configs.Errors, role []error) []string {
	list := []string{}
	for _, w := range warned {
		list = append(list, w.Error())
	}
	for _, w := range role {
		list = append(list, w.Error())
	}
	return list
}

// configFileFor names the change a config request makes in its audit
// record (action, the file) and returns the node's config file, or answers
// 404 and returns nil when the node has none.
func (n *Node) configFileFor(w http.ResponseWriter, r *http.Request, action string) *ConfigFile {
	f := n.configFile.Load()
	if f == nil {
		Describe(r.Context(), action, "")
		noConfigFile(w)
		return nil
	}
	Describe(r.Context(), action, f.path)
	return f
}

func (n *Node) serveConfigCheck(w http.ResponseWriter, r *http.Request) {
	f := n.configFileFor(w, r, "config_check")
	if f == nil {
		return
	}
	data, ok := readConfigBody(w, r)
	if !ok {
		return
	}
	current, err := configs.ReadConfigFile(f.path)
	if err != nil {
		WriteJSON(w, http.StatusInternalServerError, map[string]string{"error": "the config file cannot be read: " + err.Error()})
		return
	}
	running := f.Running()
	if f.refuseNewFiles(w, running, current, data) {
		return
	}
	// Checked as the file itself (its name in messages, relative paths
	// from its directory), exactly as `ringlb check -config FILE` would.
	cfg, err := configs.Parse(f.path, data)
	if err != nil {
		problems(w, err, nil)
		return
	}
	roleWarnings, err := f.roleCheck(running, current, cfg)
	if err != nil {
		problems(w, err, cfg.Warnings())
		return
	}
	WriteJSON(w, http.StatusOK, map[string]any{"ok": true, "summary": cfg.Summary(), "warnings": warnings(cfg.Warnings(), roleWarnings)})
}

func (n *Node) servePutConfig(w http.ResponseWriter, r *http.Request) {
	f := n.configFileFor(w, r, "config")
	if f == nil {
		return
	}
	match := strings.Trim(strings.TrimSpace(strings.TrimPrefix(r.Header.Get("If-Match"), "W/")), `"`)
	if match == "" {
		WriteJSON(w, http.StatusPreconditionRequired, map[string]string{"error": `If-Match is required: the version (ETag) of GET /api/config the change was made from`})
		return
	}
	data, ok := readConfigBody(w, r)
	if !ok {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.held != "" {
		WriteJSON(w, http.StatusServiceUnavailable, map[string]string{"error": f.held})
		return
	}
	current, err := configs.ReadConfigFile(f.path)
	if err != nil {
		WriteJSON(w, http.StatusInternalServerError, map[string]string{"error": "the config file cannot be read: " + err.Error()})
		return
	}
	if v := version(current); v != match {
		WriteJSON(w, http.StatusPreconditionFailed, map[string]string{"error": "the config file changed since version " + match + " was read: GET /api/config again and redo the change", "version": v})
		return
	}
	if f.refuseNewFiles(w, f.running, current, data) {
		return
	}
	next, err := configs.Parse(f.path, data)
	if err != nil {
		problems(w, err, nil)
		return
	}
	next.LogWarnings(f.log)
	// The role's check too: a file it refuses was written, answered 202
	// "not applied", and no longer started the node.
	roleWarnings, err := f.roleCheck(f.running, current, next)
	if err != nil {
		problems(w, err, next.Warnings())
		return
	}
	// The record says what the PUT changed, not only which file: a token
	// or a key dropped was one line "config PATH 200" among the others'.
	changes := changedSettings(f.role, f.running, next)
	if rec, ok := r.Context().Value(recordKey{}).(*Record); ok {
		rec.Changes = changes
	}
	backup, err := replaceFile(f.path, current, data)
	if err != nil {
		f.log.Error("config file not replaced", "path", f.path, "err", err)
		WriteJSON(w, http.StatusInternalServerError, map[string]string{"error": "the config file was not replaced (it is as it was): " + err.Error()})
		return
	}
	v := version(data)
	by := Caller(r.Context())
	if err := f.apply(f.running, next); err != nil {
		// Written, as a SIGHUP after an edit on the host would find it;
		// the node runs what it ran.
		f.log.Warn("config file replaced through the admin API, but not applied", "path", f.path, "version", v, "by", by, "remote", r.RemoteAddr, "changes", changes, "err", err)
		WriteJSON(w, http.StatusAccepted, map[string]any{"applied": false, "version": v, "running_version": f.runningVersion,
			"error": err.Error(), "restart": configs.RestartFields(err), "backup": backup, "warnings": warnings(next.Warnings(), roleWarnings)})
		return
	}
	f.running, f.runningVersion = next, v
	f.log.Info("config file replaced and applied through the admin API", "path", f.path, "version", v, "by", by, "remote", r.RemoteAddr, "changes", changes)
	WriteJSON(w, http.StatusOK, map[string]any{"applied": true, "version": v, "backup": backup, "warnings": warnings(next.Warnings(), roleWarnings)})
}

// changedSettings names the settings of role's sections that next sets
// otherwise than running, by their field paths: first each file running
// names that next does not ("dropped FIELD": the gossip key, an admin token,
// the users — how a PUT can weaken a node, since it names no new file),
// then every other setting changed (a list as one setting). An effective
// view that does not build (never: Effective of a checked config) names
// nothing more.
func changedSettings(role string, running, next *configs.Config) []string {
	var out []string
	dropped := map[string]bool{}
	for _, field := range next.FileChanges(running) {
		out = append(out, "dropped "+field)
		dropped[field] = true
	}
	was, err1 := running.Effective(role)
	is, err2 := next.Effective(role)
	if err1 != nil || err2 != nil {
		return out
	}
	before, after := map[string]any{}, map[string]any{}
	flattenSettings("", was, before)
	flattenSettings("", is, after)
	var changed []string
	for field, v := range after {
		if w, ok := before[field]; (!ok || !reflect.DeepEqual(v, w)) && !dropped[field] {
			changed = append(changed, field)
		}
	}
	for field := range before {
		if _, ok := after[field]; !ok && !dropped[field] {
			changed = append(changed, field)
		}
	}
	slices.Sort(changed)
	return append(out, changed...)
}

// flattenSettings puts each setting of an effective view in out by its
// field path ("edge.admin.token_file").
func flattenSettings(prefix string, v any, out map[string]any) {
	m, ok := v.(map[string]any)
	if !ok || len(m) == 0 {
		out[prefix] = v
		return
	}
	for k, x := range m {
		if prefix != "" {
			k = prefix + "." + k
		}
		flattenSettings(k, x, out)
	}
}

// refuseNewFiles answers 403, naming the fields, and reports true when
// data (a check's or a PUT's body) names a file of the host that neither
// running nor the file on disk (current) names there. Whoever holds a login
// may change settings, not the files of the host the node reads or writes:
// a node (root, for a gslb on port 53) told to write its access log to
// /etc/sudoers or /etc/nologin would. And it looks before data is checked,
// which reads the files a config names: the problems, answered and logged,
// told of a file the node was never told of — whether it exists, its
// mode, its length, whether it equals another named beside it.
func (f *ConfigFile) refuseNewFiles(w http.ResponseWriter, running *configs.Config, current, data []byte) bool {
	fields := f.newFiles(running, current, configs.FilesNamed(f.path, data))
	if len(fields) == 0 {
		return false
	}
	WriteJSON(w, http.StatusForbidden, map[string]any{"fields": fields,
		"error": "the config API does not change which files of the host the node reads or writes (" + strings.Join(fields, ", ") + "): edit the file on the host and send SIGHUP"})
	return true
}

// newFiles names the fields of next that name a file of the host which
// neither running nor the file on disk (current, perhaps edited since)
// names there; none when next is nil (not a config that far: its check
// says why, reading nothing).
func (f *ConfigFile) newFiles(running *configs.Config, current []byte, next *configs.Config) []string {
	if next == nil {
		return nil
	}
	fields := running.FileChanges(next)
	if len(fields) == 0 {
		return nil
	}
	// The file on disk names its files though it has problems: an edit on
	// the host is checked through the API before its SIGHUP.
	if onDisk := configs.FilesNamed(f.path, current); onDisk != nil {
		also := map[string]bool{}
		for _, p := range onDisk.FileChanges(next) {
			also[p] = true
		}
		fields = slices.DeleteFunc(fields, func(p string) bool { return !also[p] })
	}
	return fields
}

// replaceFile keeps old in FILE.bak and puts data in FILE, each written to a
// temporary file in the same directory, synced and renamed over, then the
// directory synced: a crash leaves the old file or the new one, never a
// torn one. FILE is the file path names, through symlinks, as an editor
// writes it: renaming over the link would leave a file no later edit of
// the linked one reaches. The new files keep the old one's mode, and its
// owner where the process may give it (as root). It returns the backup's
// path.
func replaceFile(path string, old, data []byte) (string, error) {
	if real, err := filepath.EvalSymlinks(path); err == nil {
		path = real
	}
	mode, like := os.FileMode(0o600), func(*os.File) error { return nil }
	if st, err := os.Stat(path); err == nil {
		mode = st.Mode().Perm()
		like = func(f *os.File) error { keepOwner(f, st); return nil }
	}
	backup := path + ".bak"
	if err := writeFileAtomic(backup, old, mode, like); err != nil {
		return backup, fmt.Errorf("backup: %w", err)
	}
	return backup, writeFileAtomic(path, data, mode, like)
}
