package configs

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"

	"gopkg.in/yaml.v3"
)

// What a node tells the outside about itself, besides /metrics: StatsD
// pushes (StatsD, in edge.go), the access log, the log level; and the
// rule of a reload (a field read only at start changed: RestartNeeded).

// AccessLog is one JSON line per HTTP request and per closed WebSocket
// tunnel (balancer) or participant (edge): time, client address, key hash,
// edge, status, bytes each way, duration, close code. Off by default.
type AccessLog struct {
	// Enabled writes the access log (default false).
	Enabled bool `yaml:"enabled"`
	// Path is the file lines are appended to (created mode 0640); empty:
	// standard error. The node's user must be able to write it, or create
	// it in its directory (`ringlb check`, run as that user, asks the
	// kernel; it creates nothing). SIGUSR1 reopens it, for logrotate
	// (rename, then signal: no copytruncate).
	Path string `yaml:"path"`
	// Sample is the share of requests and tunnels logged, in (0, 1]
	// (default 1: every one).
	Sample float64 `yaml:"sample"`
}

// StatsD transport protocols (*.statsd.protocol).
const (
	StatsDUDP = "udp"
	StatsDTCP = "tcp"
)

// provision fills a StatsD push's defaults; its prefix defaults at run time
// to "ringlb.<node name>." (a role's section does not know the node's
// name when several nodes share it, as in the demo).
func (s *StatsD) provision() {
	setDefaultDuration(&s.Interval, DefaultStatsDInterval)
	setDefault(&s.Protocol, StatsDUDP)
}

func (a *AccessLog) provision() {
	if a.Sample == 0 {
		a.Sample = 1
	}
}

func checkAccessLog(ps *problems, path string, a AccessLog) {
	if a.Sample <= 0 || a.Sample > 1 {
		ps.add(path+".sample", "must be in range (0, 1], got %g", a.Sample)
	}
	if a.Path != "" && !a.Enabled {
		ps.add(path+".enabled", "is false, so path has no effect; set enabled: true")
	}
	if a.Path != "" {
		checkWritableDir(ps, path+".path", a.Path)
	}
}

// checkLogLevel checks cluster.log_level: empty (the -log-level flag) or
// a level slog knows.
func checkLogLevel(ps *problems, path, level string) {
	if level == "" {
		return
	}
	if _, err := ParseLogLevel(level); err != nil {
		ps.add(path, "%v", err)
	}
}

// ParseLogLevel reads debug, info, warn or error (case-insensitive).
func ParseLogLevel(s string) (slog.Level, error) {
	var lv slog.Level
	switch strings.ToLower(s) {
	case "debug", "info", "warn", "error":
		if err := lv.UnmarshalText([]byte(s)); err == nil {
			return lv, nil
		}
	}
	return 0, fmt.Errorf("%q: want debug, info, warn or error", s)
}

// ErrNeedsRestart: a reload was refused because a field that is read only at
// start changed. Every such error of a reload is a *RestartError.
var ErrNeedsRestart = errors.New("needs a restart")

// RestartError names a field a reload cannot change.
type RestartError struct {
	Path     string // the field's path in the file: "edge.listen"
	Old, New string
}

func (e *RestartError) Error() string {
	return fmt.Sprintf("%s: changing %s to %s needs a restart", e.Path, e.Old, e.New)
}

// Is makes errors.Is(err, ErrNeedsRestart) true.
func (e *RestartError) Is(target error) bool { return target == ErrNeedsRestart }

// RestartNeeded returns a *RestartError when a field read only at start
// differs between the running config (old) and the reloaded one (next);
// nil when it is the same. Every role says "needs a restart" this way.
func RestartNeeded(path string, old, next any) error {
	if reflect.DeepEqual(old, next) {
		return nil
	}
	return &RestartError{Path: path, Old: restartValue(old), New: restartValue(next)}
}

func restartValue(v any) string {
	switch v := v.(type) {
	case string:
		if v == "" {
			return `""`
		}
		return v
	case Duration:
		return v.D().String()
	}
	return fmt.Sprint(v)
}

// RestartFields lists the fields named by the *RestartErrors in err (a
// tree of joined and wrapped errors), in order.
func RestartFields(err error) []string {
	var out []string
	var walk func(error)
	walk = func(err error) {
		switch e := err.(type) {
		case nil:
		case *RestartError:
			out = append(out, e.Path)
		case interface{ Unwrap() []error }:
			for _, x := range e.Unwrap() {
				walk(x)
			}
		case interface{ Unwrap() error }:
			walk(e.Unwrap())
		}
	}
	walk(err)
	return out
}

// RestartChanges reports the cluster section's fields a reload cannot
// change (gossip identity, seeds, timings, the ring, the state directory,
// whether there is a keyring); the keyring's keys (secret_key_file) and
// log_level change live.
func (c Cluster) RestartChanges(next Cluster) error {
	return errors.Join(
		// Gossip with a key or without is the whole cluster's choice, made
		// at start (memberlist cannot drop or take up encryption live).
		// Checked here, with the other fields, so that it refuses a reload
		// before the role's section applies, not after.
		RestartNeeded("cluster.secret_key_file", keyringState(c.SecretKeyFile), keyringState(next.SecretKeyFile)),
		RestartNeeded("cluster.name", c.Name, next.Name),
		RestartNeeded("cluster.region", c.Region, next.Region),
		RestartNeeded("cluster.bind", c.Bind, next.Bind),
		RestartNeeded("cluster.advertise", c.Advertise, next.Advertise),
		RestartNeeded("cluster.join", c.Join, next.Join),
		RestartNeeded("cluster.profile", c.Profile, next.Profile),
		RestartNeeded("cluster.probe_interval", c.ProbeInterval, next.ProbeInterval),
		RestartNeeded("cluster.gossip_interval", c.GossipInterval, next.GossipInterval),
		RestartNeeded("cluster.allowed_networks", c.AllowedNetworks, next.AllowedNetworks),
		RestartNeeded("cluster.insecure_gossip", c.InsecureGossip, next.InsecureGossip),
		RestartNeeded("cluster.ring", c.Ring, next.Ring),
		RestartNeeded("cluster.state_dir", c.StateDir, next.StateDir),
	)
}

// keyringState names whether a cluster has a keyring, for RestartChanges.
func keyringState(file string) string {
	if file == "" {
		return "no keyring"
	}
	return "a keyring"
}

// checkWritableDir checks that the node can write the file it appends to,
// or create it: a directory to go in that it may create files in, and not
// a directory itself (the check passed one, and the start failed opening
// it). Nothing is created.
func checkWritableDir(ps *problems, path, file string) {
	dir := filepath.Dir(file)
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		ps.add(path, "%s: the directory %s does not exist", file, dir)
		return
	}
	st, err := os.Stat(file)
	switch {
	case err == nil && st.IsDir():
		ps.add(path, "%s is a directory: name a file in it", file)
	case err == nil:
		if err := mayWrite(file); err != nil {
			ps.add(path, "%v", err)
		}
	default:
		if err := mayCreateIn(dir); err != nil {
			ps.add(path, "%s: %v", file, err)
		}
	}
}

// MarshalYAML writes a duration as Go writes it ("10s"), as it is read.
func (d Duration) MarshalYAML() (any, error) { return d.D().String(), nil }

// Effective is what a node of role runs with: the cluster section and the
// role's own, every default filled in, as a tree of YAML names (the
// names of the file), for GET /api/config. The config holds no secret —
// keys, tokens, users and join-token secrets are files, named by their
// paths; admin users from the environment are not part of it — so nothing
// is left out but the other roles' sections.
func (c *Config) Effective(role string) (map[string]any, error) {
	view := map[string]any{"cluster": c.Cluster}
	switch role {
	case "edge":
		view[role] = c.Edge
	case "balancer":
		view[role] = c.Balancer
	case "gslb":
		view[role] = c.GSLB
	default:
		return nil, fmt.Errorf("unknown role %q", role)
	}
	raw, err := yaml.Marshal(view)
	if err != nil {
		return nil, err
	}
	var out map[string]any
	if err := yaml.Unmarshal(raw, &out); err != nil {
		return nil, err
	}
	return out, nil
}
