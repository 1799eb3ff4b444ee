package configs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// FieldError is one problem in a configuration file, located by line and by the
// field's path from the top of the file ("balancer.ring.load").
type FieldError struct {
	File string
	// Line is the field's, or when the file leaves it out (a required
	// field, a default a rule refuses) that of the nearest section around
	// it the file has; 0 when it has none of them.
	Line int
	Path string
	Msg  string
}

func (e *FieldError) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	if e.Path != "" {
		b.WriteString(": ")
		b.WriteString(e.Path)
	}
	b.WriteString(": ")
	b.WriteString(e.Msg)
	return b.String()
}

// Place is where a config file has a field: its file, line and path, as a
// FieldError names them. A config read from a file keeps the places of the
// fields a role loads later (GSLB.Place, Zone.Place, Zone.RecordPlace):
// gslb's problems in a zone, found when it loads the zone as the
// nameserver does, are named as Load names its own.
type Place struct {
	File string
	// Line is the field's, or that of the nearest field around it the
	// file has (FieldError.Line).
	Line int
	Path string
}

// Problem is a problem of the field at p.
func (p Place) Problem(format string, args ...any) *FieldError {
	return &FieldError{File: p.File, Line: p.Line, Path: p.Path, Msg: fmt.Sprintf(format, args...)}
}

// fieldLines is where a file has each of its fields: its name and the
// decoder's lines (field path → line), kept by the config read from it.
type fieldLines struct {
	file  string
	lines map[string]int
}

// place is where the file has the field at path, or the nearest field
// around it it has.
func (fl *fieldLines) place(path string) Place {
	return Place{File: fl.file, Line: nearestLine(fl.lines, path), Path: path}
}

// Errors is every problem found in a file, in file order. Load returns it
// (as error) so operators fix them all in one pass.
type Errors []*FieldError

func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Refused is Load's and Parse's error for a file that was read and
// validated and does not check: its problems (Errors, which errors.As
// finds through it) and what is known of it besides, so that a check
// says everything in one pass. A file that is not YAML, or not one
// document, is refused with its Errors alone.
type Refused struct {
	Errors Errors
	// Warnings are what the file would be warned of (Config.Warnings):
	// said after its problems, as `ringlb check` and POST
	// /api/config/check say them.
	Warnings Errors
	// Roles are the roles the file has a section for (Config.Roles).
	Roles []string
	// Unsaid is how many problems were found beyond MaxProblems: not in
	// Errors, whose last one says how many they are.
	Unsaid int
	// GSLB is the file's gslb section, provisioned, when it has one and
	// none of the problems is in it (nil otherwise): what `ringlb check`
	// loads the zones of (gslb.Check) to say their problems in the same
	// run as the rest. Before, they came only once the rest was fixed.
	GSLB *GSLB
}

func (r *Refused) Error() string { return r.Errors.Error() }

// Unwrap is the file's problems.
func (r *Refused) Unwrap() error { return r.Errors }

// MaxConfigBytes bounds a config file, read from the host (LoadFile) or
// sent to the config API: a config file is kilobytes.
const MaxConfigBytes = 1 << 20

// Load reads, strictly decodes, defaults and validates the file at path.
// Every problem is reported at once, as Errors (in a *Refused once the
// file was validated).
func Load(path string) (*Config, error) {
	cfg, _, err := LoadFile(path)
	return cfg, err
}

// LoadFile is Load, also returning the file's content as read: what a node
// started from runs that, whatever the file holds by the time it asks. A
// file other users may write is refused (configFileMode), its problem said
// with the others.
func LoadFile(path string) (*Config, []byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("read config: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, fmt.Errorf("read config: %w", err)
	}
	data, err := readConfig(f)
	if err != nil {
		return nil, nil, fmt.Errorf("read config: %w", err)
	}
	var ps Errors
	for _, msg := range []string{configFileMode(path, fi), configFileWay(path)} {
		if msg != "" {
			ps = append(ps, &FieldError{File: path, Msg: msg})
		}
	}
	if len(data) > MaxConfigBytes {
		return nil, nil, append(ps, configTooLarge(path))
	}
	cfg, err := Parse(path, data)
	if len(ps) > 0 {
		return nil, data, withFileProblems(cfg, err, ps)
	}
	return cfg, data, err
}

// ReadConfigFile is the content of the config file at path, as the config
// API reads it, to the same bound as LoadFile: a longer one is an error.
func ReadConfigFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := readConfig(f)
	if err == nil && len(data) > MaxConfigBytes {
		return nil, configTooLarge(path)
	}
	return data, err
}

// readConfig reads a config file to one byte beyond MaxConfigBytes. What
// is in the file's place is read before anything is made of it, its mode
// and its way included: read whole, a link to /dev/zero put there was
// read until the node was killed for its memory.
func readConfig(f io.Reader) ([]byte, error) {
	return io.ReadAll(io.LimitReader(f, MaxConfigBytes+1))
}

// configTooLarge is the problem of a config file beyond MaxConfigBytes.
func configTooLarge(path string) *FieldError {
	return &FieldError{File: path, Msg: fmt.Sprintf("more than %d bytes, which no config file is: is it the config? (many records go in a zone file, gslb.zones[].file)", MaxConfigBytes)}
}

// configFileMode is the rule of the config file itself: refused ("" when
// not) when others may write it. Whoever writes it decides how the node
// runs — gossip without a key, the seeds it joins, its admin port, the
// answers of its zones — and the next SIGHUP or start applies it, as the
// operator's. Its group may write it: the config API replaces it as the
// node's user (root:ringlb 0660). Where files have no Unix owner, the mode
// says nothing of who may write: nothing is checked.
func configFileMode(path string, fi fs.FileInfo) string {
	if _, _, ok := FileOwner(fi); !ok || fi.Mode().Perm()&0o002 == 0 {
		return ""
	}
	return fmt.Sprintf("writable by others (mode %04o): any user of this host could rewrite how the node runs, and a reload or a start would apply it; chmod o-w %s", fi.Mode().Perm(), path)
}

// configFileWay is the rule of the directories on the way to the config
// file (wayOpenToOthers): refused ("" when not) when one is open to others,
// who could put another file in its place, as they could write one the
// file's own mode leaves open to them (configFileMode).
func configFileWay(path string) string { return wayOpenToOthers(path, "config file") }

// withFileProblems adds ps, problems of the file as a whole, to what Parse
// made of it (cfg, err), so they are said with the file's other problems.
func withFileProblems(cfg *Config, err error, ps Errors) error {
	var refused *Refused
	var errs Errors
	switch {
	case errors.As(err, &refused):
		refused.Errors = append(ps, refused.Errors...)
		return refused
	case errors.As(err, &errs):
		return append(ps, errs...)
	case err != nil:
		return err
	}
	refused = &Refused{Errors: ps, Warnings: cfg.warnings, Roles: cfg.roles}
	if slices.Contains(cfg.roles, "gslb") {
		refused.GSLB = &cfg.GSLB
	}
	return refused
}

// Parse is Load for data already in memory; name is used in messages.
func Parse(name string, data []byte) (*Config, error) {
	cfg, d, err := decodeFile(name, data)
	if err != nil {
		return nil, err
	}
	for _, p := range cfg.validate() {
		e := &FieldError{File: name, Line: d.line(p.path), Path: p.path, Msg: p.msg}
		switch {
		case p.runAs != "":
			if cfg.runAs == nil {
				cfg.runAs = map[string]Errors{}
			}
			cfg.runAs[p.runAs] = append(cfg.runAs[p.runAs], e)
		case p.warning:
			cfg.warnings = append(cfg.warnings, e)
		default:
			d.add(e)
		}
	}
	if len(d.errs) > 0 {
		sort.SliceStable(d.errs, func(i, j int) bool { return lineKey(d.errs[i]) < lineKey(d.errs[j]) })
		d.errs = d.said()
		refused := &Refused{Errors: d.errs, Warnings: cfg.warnings, Roles: cfg.roles, Unsaid: d.unsaid}
		// Its zones load only when none of its problems, said or not, is
		// in the gslb section.
		if slices.Contains(cfg.roles, "gslb") && d.unsaid == 0 && !slices.ContainsFunc(d.errs, func(e *FieldError) bool {
			return e.Path == "gslb" || strings.HasPrefix(e.Path, "gslb.")
		}) {
			refused.GSLB = &cfg.GSLB
		}
		return nil, refused
	}
	return cfg, nil
}

// decodeFile decodes, defaults and places data (a file at name), reading
// no file it names: the problems of its YAML are in d; its validation,
// which reads them, is left to the caller.
func decodeFile(name string, data []byte) (*Config, *decoder, error) {
	d := &decoder{file: name, lines: map[string]int{}, aliasBudget: aliasBudget(len(data))}
	cfg := &Config{}
	var root yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	// An empty file (io.EOF) is a valid config: every field takes its default.
	if err := dec.Decode(&root); err != nil && !errors.Is(err, io.EOF) {
		// The line leads the message already (file:line:): not said twice.
		line := yamlErrLine(err)
		msg := strings.TrimPrefix(strings.TrimPrefix(err.Error(), "yaml: "), fmt.Sprintf("line %d: ", line))
		return nil, nil, Errors{{File: name, Line: line, Msg: "not valid YAML: " + msg}}
	}
	// One document: a second one would be written by a PUT and never
	// read, the edit in it silently ignored. It is one problem among the
	// first document's, which is checked all the same: returned alone, it
	// hid theirs until it was removed.
	var more yaml.Node
	if err := dec.Decode(&more); !errors.Is(err, io.EOF) {
		line, msg := more.Line, "a config file is one YAML document; a second one starts here (remove it, or its \"---\")"
		if err != nil {
			line = yamlErrLine(err)
			// Without a "---", text after a document that ended is no
			// second one: the operator was told to remove a "---" the
			// file does not have.
			if strings.Contains(err.Error(), "<document start>") {
				msg = "not valid YAML: more follows the end of the document (a file opening with a value in {}, [] or quotes is that value alone, and a \"...\" line ends it): write the sections as \"name:\" lines"
			}
		}
		d.add(&FieldError{File: name, Line: line, Msg: msg})
	}
	if len(root.Content) > 0 {
		d.decode(root.Content[0], reflect.ValueOf(cfg).Elem(), "")
	}
	cfg.GSLB.placeZones(&fieldLines{file: name, lines: d.lines})
	if d.overBudget {
		return nil, nil, d.said() // the config is cut short: its validation would only add noise
	}
	for _, role := range []string{"edge", "balancer", "gslb"} {
		if _, ok := d.lines[role]; ok {
			cfg.roles = append(cfg.roles, role)
		}
	}
	cfg.resolvePaths(filepath.Dir(name))
	cfg.Provision()
	d.zeroTakenForDefault(cfg)
	return cfg, d, nil
}

// FilesNamed is the config in data (a file at name) as far as FileChanges
// looks at it — the files of the host it names, as Parse resolves them —
// read without opening any of those files: what a request names can so be
// refused before anything of a file is told in its answer (whether it
// exists, its mode, its length, whether it equals another). nil when data
// is not a config that far (its YAML, or its aliases' budget).
func FilesNamed(name string, data []byte) *Config {
	cfg, _, err := decodeFile(name, data)
	if err != nil {
		return nil
	}
	return cfg
}

// lineKey orders errors by line, with line-less (cross-field) errors last.
func lineKey(e *FieldError) int {
	if e.Line == 0 {
		return int(^uint(0) >> 1)
	}
	return e.Line
}

func yamlErrLine(err error) int {
	var line int
	if _, scanErr := fmt.Sscanf(strings.TrimPrefix(err.Error(), "yaml: "), "line %d:", &line); scanErr == nil {
		return line
	}
	return 0
}

// decoder walks the YAML node tree against the Go types, so that an unknown
// field or a bad value is reported with its line and field path, and so that
// one bad field does not hide the others (yaml.v3's KnownFields stops at the
// first and names no path).
type decoder struct {
	file  string
	errs  Errors
	lines map[string]int // field path → line, for validation messages

	// aliasBudget is what the nodes reached through an alias (*name) may
	// still cost (aliasCost), aliasDepth how many aliases the walk is
	// inside. yaml.v3 keeps an alias a pointer to its anchor's node, and
	// this walk follows it each time: an alias of a list of aliases is a
	// product, and a few kilobytes named gigabytes of config and errors.
	// What aliases repeat may add up to a few times the file, no more.
	aliasBudget int
	aliasDepth  int
	overBudget  bool

	// unsaid counts the problems found beyond MaxProblems.
	unsaid int

	// at is the walk's place in the Go value (a struct field, list index
	// or map key a step), zeros the number fields the file sets to 0 and
	// the string fields it sets to "".
	at    []step
	zeros []explicitZero
}

// step is one level of a place in the config's Go value: a struct's field
// (its index), a list's element or a map's key.
type step struct {
	field, index int
	key          reflect.Value
}

// explicitZero is a number field the file sets to 0 (a string field to
// ""), where it is at.
type explicitZero struct {
	path string
	line int
	at   []step
}

// in reads the value at z's place in cfg (a struct): invalid where a nil
// pointer, a short list or a missing key ends the way.
func (z explicitZero) in(v reflect.Value) reflect.Value {
	for _, s := range z.at {
		for v.Kind() == reflect.Pointer {
			if v.IsNil() {
				return reflect.Value{}
			}
			v = v.Elem()
		}
		switch {
		case s.key.IsValid():
			v = v.MapIndex(s.key)
		case v.Kind() == reflect.Slice:
			if s.index >= v.Len() {
				return reflect.Value{}
			}
			v = v.Index(s.index)
		default:
			v = v.Field(s.field)
		}
		if !v.IsValid() {
			return v
		}
	}
	return v
}

// zeroTakenForDefault refuses a number field the file sets to 0, or a
// string field it sets to "", that the defaults then replaced: the node
// would run with a value the file does not say (a max_body_bytes of 0 read
// as "no limit" is 1 MiB, a ttl of 0 is 30s, an ownership of "" is ring).
// A field whose 0 asks for its default says so in its tag
// (`zero:"default"`), as max_connections' derives from the open-file
// limit.
func (d *decoder) zeroTakenForDefault(cfg *Config) {
	root := reflect.ValueOf(cfg).Elem()
	for _, z := range d.zeros {
		if v := z.in(root); v.IsValid() && !v.IsZero() {
			zero, shown := "0", v.Interface()
			if dur, ok := shown.(Duration); ok {
				shown = dur.D()
			}
			if v.Kind() == reflect.String {
				zero, shown = `""`, fmt.Sprintf("%q", shown)
			}
			d.add(&FieldError{File: d.file, Line: z.line, Path: z.path,
				Msg: fmt.Sprintf("%s would be taken for the default, %v: leave the field out for the default, or give a value other than %s", zero, shown, zero)})
		}
	}
}

// aliasBudget is what aliases may repeat in a file of size bytes: four
// times the file and 256 KiB (a block of a hundred lines named by every
// one of fifty names fits), a bound on the config and on its problems.
func aliasBudget(size int) int { return 4*size + 256<<10 }

// aliasCost is what visiting n (at path) costs the alias budget: its
// value, its path (each problem quotes both) and the node itself.
func aliasCost(n *yaml.Node, path string) int { return 16 + len(path) + len(n.Value) }

// spend charges a node reached through an alias to the budget; false when
// it is spent, the walk then stops (one problem says why).
func (d *decoder) spend(n *yaml.Node, path string) bool {
	if d.overBudget {
		return false
	}
	if d.aliasDepth == 0 {
		return true
	}
	if d.aliasBudget -= aliasCost(n, path); d.aliasBudget >= 0 {
		return true
	}
	d.overBudget = true
	d.fail(n, path, "aliases (*name) repeat more than a few times what the file holds: write the repeated part out, or repeat it less")
	return false
}

// MaxDuration bounds every duration field, whatever its own range: one
// near the largest a time.Duration holds overflowed where a node added to
// it (a monitor's interval and its jitter, an edge's drain_timeout and the
// stop's margin), into a negative wait.
const MaxDuration = 87600 * time.Hour

// YAML's merge key (<<: *base) is not read: a field the walk does not know
// was said an unknown field, and the operator looked for a typo.
const (
	mergeTag        = "!!merge"
	mergeKeyProblem = "merge keys (<<) are not supported: write the fields out, or name each value with an alias (*name)"
)

var (
	durationType = reflect.TypeOf(Duration(0))
	adminType    = reflect.TypeOf(Admin{})
)

// line is where the file has the field at path, else the nearest field
// around it the file has: a field left out (one required, a default a
// rule refuses) is found at its section. 0: none of them is in the file.
func (d *decoder) line(path string) int { return nearestLine(d.lines, path) }

// nearestLine is lines' line of path, else of the nearest path around it
// it has; 0 when none.
func nearestLine(lines map[string]int, path string) int {
	for {
		if l, ok := lines[path]; ok {
			return l
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			return 0
		}
		path = path[:i]
	}
}

func (d *decoder) fail(n *yaml.Node, path, format string, args ...any) {
	if d.full() {
		return
	}
	d.add(&FieldError{File: d.file, Line: n.Line, Path: path, Msg: fmt.Sprintf(format, args...)})
}

// MaxProblems is how many of a file's problems are said; those after are
// counted, in one problem more. A file of a megabyte (the config API's
// bound) with a problem every few bytes named 170,000 of them: 35 MB said,
// 250 MB held by the node that checked it, to be read by nobody.
const MaxProblems = 100

// full counts one more problem when MaxProblems are said already.
func (d *decoder) full() bool {
	if len(d.errs) < MaxProblems {
		return false
	}
	d.unsaid++
	return true
}

// add says e, or counts it when MaxProblems are said already.
func (d *decoder) add(e *FieldError) {
	if !d.full() {
		d.errs = append(d.errs, e)
	}
}

// said is the problems said, and one counting the rest when there are.
func (d *decoder) said() Errors {
	if d.unsaid == 0 {
		return d.errs
	}
	return append(d.errs, &FieldError{File: d.file, Msg: fmt.Sprintf("and %d more problems, not said (the first %d are)", d.unsaid, MaxProblems)})
}

// problems is how many problems the walk found, said or counted.
func (d *decoder) problems() int { return len(d.errs) + d.unsaid }

func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string) {
	if path != "" {
		d.lines[path] = n.Line
	}
	if n.Kind == yaml.AliasNode {
		d.aliasDepth++
		defer func() { d.aliasDepth-- }()
		n = n.Alias
	}
	if !d.spend(n, path) {
		return
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // "field:" with no value keeps the default
	}
	switch {
	case v.Type() == durationType:
		if n.Kind != yaml.ScalarNode {
			d.fail(n, path, "want a duration such as 500ms, 5s or 2m")
			return
		}
		dur, err := time.ParseDuration(n.Value)
		if err != nil {
			d.fail(n, path, "%q is not a duration (write it like 500ms, 5s or 2m)", n.Value)
			return
		}
		if dur > MaxDuration {
			d.fail(n, path, "%s is more than any wait of a node: at most %s (ten years)", n.Value, MaxDuration)
			return
		}
		v.SetInt(int64(dur))
	case v.Type() == adminType && n.Kind == yaml.ScalarNode:
		// "admin: 127.0.0.1:9101" is short for "admin: { listen: ... }".
		d.lines[path+".listen"] = n.Line
		listen, _ := v.Type().FieldByName("Listen")
		v.FieldByIndex(listen.Index).SetString(n.Value)
		if n.Value == "" {
			d.zeros = append(d.zeros, explicitZero{path: path + ".listen", line: n.Line, at: append(slices.Clone(d.at), step{field: listen.Index[0]})})
		}
	case v.Kind() == reflect.Pointer:
		elem := reflect.New(v.Type().Elem())
		d.decode(n, elem.Elem(), path)
		v.Set(elem)
	case v.Kind() == reflect.Struct:
		d.decodeStruct(n, v, path)
	case v.Kind() == reflect.Slice && v.Type().Elem().Kind() != reflect.Uint8:
		if n.Kind != yaml.SequenceNode {
			d.fail(n, path, "want a list")
			return
		}
		if bound, what := maxListLen(path); bound > 0 && len(n.Content) > bound {
			d.fail(n, path, "%d %s, at most %d", len(n.Content), what, bound)
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			d.at = append(d.at, step{index: i})
			d.decode(item, s.Index(i), fmt.Sprintf("%s[%d]", path, i))
			d.at = d.at[:len(d.at)-1]
		}
		v.Set(s)
	case v.Kind() == reflect.Map:
		if n.Kind != yaml.MappingNode {
			d.fail(n, path, "want a mapping")
			return
		}
		m := reflect.MakeMapWithSize(v.Type(), len(n.Content)/2)
		// This walk fills the map, not yaml.v3 (which refuses a key given
		// twice): a second key silently replaced the first.
		seen := map[any]int{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			if !d.spend(n.Content[i], path) {
				return
			}
			if n.Content[i].Tag == mergeTag {
				d.fail(n.Content[i], path+"."+n.Content[i].Value, mergeKeyProblem)
				continue
			}
			k := reflect.New(v.Type().Key()).Elem()
			if err := n.Content[i].Decode(k.Addr().Interface()); err != nil {
				d.fail(n.Content[i], path, "bad key %q", n.Content[i].Value)
				continue
			}
			if first, ok := seen[k.Interface()]; ok {
				d.fail(n.Content[i], path+"."+n.Content[i].Value, "key given twice (first at line %d)", first)
				continue
			}
			seen[k.Interface()] = n.Content[i].Line
			val := reflect.New(v.Type().Elem()).Elem()
			d.at = append(d.at, step{key: k})
			d.decode(n.Content[i+1], val, path+"."+n.Content[i].Value)
			d.at = d.at[:len(d.at)-1]
			m.SetMapIndex(k, val)
		}
		v.Set(m)
	default:
		if n.Kind != yaml.ScalarNode {
			d.fail(n, path, "want a single %s value", kindName(v.Kind()))
			return
		}
		// yaml.v3 truncates a fraction into an integer (a weight of 0.9
		// was 0, and drained its edge); a string or a boolean it refuses.
		if isInteger(v.Kind()) && n.ShortTag() == "!!float" {
			d.fail(n, path, "must be a whole number, got %s", n.Value)
			return
		}
		if err := n.Decode(v.Addr().Interface()); err != nil {
			d.fail(n, path, "%q is not a valid %s", n.Value, kindName(v.Kind()))
			return
		}
		// YAML's .nan and .inf decode as numbers, but every comparison
		// with NaN is false: a range check passed it and switched its
		// limit off. Finite numbers only, for every number field.
		if k := v.Kind(); (k == reflect.Float64 || k == reflect.Float32) && (math.IsNaN(v.Float()) || math.IsInf(v.Float(), 0)) {
			v.SetFloat(0)
			d.fail(n, path, "%q is not a finite number", n.Value)
		}
	}
}

// maxListLen is the longest list the field at path may be, and what its
// entries are (0: no bound of its own). A longer one is refused whole,
// before its entries are read: walked, provisioned and checked one by one
// to be refused afterwards, each cost kilobytes (MaxStaticEdges).
func maxListLen(path string) (int, string) {
	switch path {
	case "balancer.edges":
		return MaxStaticEdges, "static edges"
	}
	return 0, ""
}

func (d *decoder) decodeStruct(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.fail(n, path, "want a mapping of fields")
		return
	}
	fields := yamlFields(v.Type())
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		key, val := n.Content[i], n.Content[i+1]
		p := key.Value
		if path != "" {
			p = path + "." + key.Value
		}
		if !d.spend(key, p) { // an unknown field's problem quotes its key
			return
		}
		idx, ok := fields[key.Value]
		if key.Tag == mergeTag {
			d.fail(key, p, mergeKeyProblem)
			continue
		}
		if !ok {
			d.fail(key, p, "unknown field (known fields here: %s)", strings.Join(sortedKeys(fields), ", "))
			continue
		}
		if seen[key.Value] {
			d.fail(key, p, "field given twice")
			continue
		}
		seen[key.Value] = true
		d.lines[p] = key.Line
		d.at = append(d.at, step{field: idx})
		f, problems := v.Field(idx), d.problems()
		d.decode(val, f, p)
		if d.problems() == problems && (isNumber(f.Kind()) || f.Kind() == reflect.String) && f.IsZero() && val.Kind == yaml.ScalarNode && val.Tag != "!!null" && v.Type().Field(idx).Tag.Get("zero") != "default" {
			d.zeros = append(d.zeros, explicitZero{path: p, line: key.Line, at: slices.Clone(d.at)})
		}
		d.at = d.at[:len(d.at)-1]
		d.lines[p] = key.Line
	}
}

// isNumber is true of the kinds of integer, number and duration fields.
func isNumber(k reflect.Kind) bool {
	return isInteger(k) || k == reflect.Float64 || k == reflect.Float32
}

func yamlFields(t reflect.Type) map[string]int {
	fields := make(map[string]int, t.NumField())
	for i := 0; i < t.NumField(); i++ {
		tag := strings.Split(t.Field(i).Tag.Get("yaml"), ",")[0]
		if tag != "" && tag != "-" {
			fields[tag] = i
		}
	}
	return fields
}

func sortedKeys(m map[string]int) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func isInteger(k reflect.Kind) bool {
	return k >= reflect.Int && k <= reflect.Uintptr
}

func kindName(k reflect.Kind) string {
	switch {
	case isInteger(k):
		return "integer"
	case k == reflect.Float64 || k == reflect.Float32:
		return "number"
	case k == reflect.Bool:
		return "boolean (true or false)"
	default:
		return "string"
	}
}

// resolvePaths makes relative file names relative to the config file's
// directory, as operators expect of include-like settings.
func (c *Config) resolvePaths(dir string) {
	for _, f := range c.fileFields() {
		*f.file = resolve(dir, *f.file)
	}
}

// fileField is a field that names a file or directory of the host.
type fileField struct {
	path string // in the file: "balancer.access_log.path"
	file *string
}

// fileFields are every field of c that names a file or directory of the
// host the node reads or writes (a DNSSEC key's field names the base of
// two files).
func (c *Config) fileFields() []fileField {
	fs := []fileField{
		{"cluster.secret_key_file", &c.Cluster.SecretKeyFile},
		{"cluster.state_dir", &c.Cluster.StateDir},
		{"edge.auth.hmac_secret_file", &c.Edge.Auth.HMACSecretFile},
		{"edge.admin.token_file", &c.Edge.Admin.TokenFile},
		{"edge.admin.metrics_token_file", &c.Edge.Admin.MetricsTokenFile},
		{"edge.admin.users_file", &c.Edge.Admin.UsersFile},
		{"balancer.admin.token_file", &c.Balancer.Admin.TokenFile},
		{"balancer.admin.metrics_token_file", &c.Balancer.Admin.MetricsTokenFile},
		{"balancer.admin.users_file", &c.Balancer.Admin.UsersFile},
		{"balancer.tls.cert_file", &c.Balancer.TLS.CertFile},
		{"balancer.tls.key_file", &c.Balancer.TLS.KeyFile},
		{"balancer.access_log.path", &c.Balancer.AccessLog.Path},
		{"gslb.admin.token_file", &c.GSLB.Admin.TokenFile},
		{"gslb.admin.metrics_token_file", &c.GSLB.Admin.MetricsTokenFile},
		{"gslb.admin.users_file", &c.GSLB.Admin.UsersFile},
	}
	for i := range c.Balancer.Edges {
		t, p := &c.Balancer.Edges[i].TLS, fmt.Sprintf("balancer.edges[%d].tls", i)
		fs = append(fs, fileField{p + ".ca_file", &t.CAFile}, fileField{p + ".cert_file", &t.CertFile}, fileField{p + ".key_file", &t.KeyFile})
	}
	for _, name := range sortedMapKeys(c.GSLB.Monitors) {
		// TLS is a pointer: a map's values cannot be addressed, what it
		// points to can.
		if t := c.GSLB.Monitors[name].TLS; t != nil {
			p := "gslb.monitors." + name + ".tls"
			fs = append(fs, fileField{p + ".ca_file", &t.CAFile}, fileField{p + ".cert_file", &t.CertFile}, fileField{p + ".key_file", &t.KeyFile})
		}
	}
	for i := range c.GSLB.Zones {
		z, p := &c.GSLB.Zones[i], fmt.Sprintf("gslb.zones[%d]", i)
		fs = append(fs, fileField{p + ".file", &z.File})
		if z.Transfer.TSIG != nil {
			fs = append(fs, fileField{p + ".transfer.tsig.secret_file", &z.Transfer.TSIG.SecretFile})
		}
		if z.DNSSEC != nil {
			for j := range z.DNSSEC.Keys {
				fs = append(fs, fileField{fmt.Sprintf("%s.dnssec.keys[%d].file", p, j), &z.DNSSEC.Keys[j].File})
			}
		}
	}
	return fs
}

// FileChanges names the fields of next that name a file or directory of
// the host that the same field of c (of any zone, edge or key, for a list)
// does not: the config API changes settings through them, not which files
// of the host a node reads or writes — that is for whoever edits the file
// on the host (a SIGHUP applies it). Moving a file from one field to
// another counts: an access log pointed at the keyring would append to it.
func (c *Config) FileChanges(next *Config) []string {
	known := map[string]bool{}
	for _, f := range c.fileFields() {
		known[fieldKind(f.path)+" "+*f.file] = true
	}
	var out []string
	for _, f := range next.fileFields() {
		if *f.file != "" && !known[fieldKind(f.path)+" "+*f.file] {
			out = append(out, f.path)
		}
	}
	return out
}

// fieldKind is a field's path without its list indexes:
// "gslb.zones[2].file" is "gslb.zones[].file".
func fieldKind(path string) string {
	var b strings.Builder
	for {
		open := strings.IndexByte(path, '[')
		if open < 0 {
			b.WriteString(path)
			return b.String()
		}
		end := strings.IndexByte(path[open:], ']')
		if end < 0 {
			b.WriteString(path)
			return b.String()
		}
		b.WriteString(path[:open+1])
		path = path[open+end:]
	}
}

func resolve(dir, file string) string {
	if file == "" || filepath.IsAbs(file) {
		return file
	}
	return filepath.Join(dir, file)
}
