package configs

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"time"
)

// MaxNodeName bounds a node's name in bytes: a gossip member's (a node
// refuses a member whose name is longer, ValidNodeName) and a static
// edge's (balancer.edges[].name). Names travel in headers, logs and the
// balancers' live-session table, whose messages carry a name in at most
// 255 bytes: a longer static edge name had its entries shared with no
// other balancer and dropped from the table handed to a new process.
const MaxNodeName = 64

// What a node gossips of its config in its metadata (health.Meta), in
// bytes as gossiped (JSON, escapes included): memberlist carries at most
// 512 bytes of a node's metadata, which also hold its role, admin URL,
// weight, state and an edge's load at their longest. A longer region or
// advertised URL passed the check and the start failed to join ("node
// metadata too large"), or, a few bytes short of it, joined and never
// announced the edge's load, which lengthens the metadata later.
const (
	MaxRegion       = 64  // cluster.region (demo.nodes[].region)
	MaxAdvertiseURL = 160 // edge.advertise_url
)

// checkGossiped refuses a value the node gossips (path) longer than max
// bytes as gossiped.
func checkGossiped(ps *problems, path, value string, max int) {
	b, _ := json.Marshal(value) // a string always marshals; invalid UTF-8 as escapes
	if n := len(b) - 2; n > max {
		ps.add(path, "%d bytes as gossiped (JSON), at most %d: a node's gossip metadata holds 512 bytes in all; shorten it", n, max)
	}
}

// ValidNodeName is the rule for a node name: node names travel in headers
// (X-Ringlb-Owner, X-Ringlb-Skip, a comma-separated list) and in logs. A
// node refuses a member named otherwise, and a start refuses to be one
// (cluster.name, demo.nodes[].name).
func ValidNodeName(s string) bool {
	if len(s) == 0 || len(s) > MaxNodeName {
		return false
	}
	for _, r := range s {
		if !(r == '.' || r == '-' || r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return false
		}
	}
	return true
}

// NodeNameRule says what ValidNodeName wants.
var NodeNameRule = fmt.Sprintf("1 to %d letters, digits, '.', '-' or '_'", MaxNodeName)

// Cluster is gossip membership (health/): who this node is and whom it joins.
type Cluster struct {
	// Name is this node's unique name in the cluster (default: the host
	// name): 1 to 64 letters, digits, '.', '-' or '_' — the other nodes
	// ignore a member named otherwise, so a start refuses it.
	Name string `yaml:"name"`
	// Region labels this node in its gossip metadata (dashboards, the
	// gslb), at most 64 bytes. A gossip cluster is one region: its
	// balancers route to all of its edges.
	Region string `yaml:"region"`
	// Bind is the gossip address, IP:port, UDP and TCP (default
	// 0.0.0.0:7946; ":7946" is every interface too). An IP address, not a
	// host name: memberlist listens on every interface for a name.
	Bind string `yaml:"bind"`
	// Advertise is the gossip address other nodes reach this one at, IP:port
	// (default: Bind, or the first private address when Bind is unspecified).
	Advertise string `yaml:"advertise"`
	// Join lists seed nodes (host:port); joining any one is enough.
	Join []string `yaml:"join"`
	// SecretKeyFile is the cluster's keyring: one base64 AES key (16, 24 or
	// 32 bytes) per line, the first one primary. Gossip is encrypted and
	// authenticated with it (a node without a key of the ring cannot join or
	// read), and edge-to-edge requests and peers' admin reads are signed with
	// keys derived from it. Make one with `ringlb keygen`. Required when bind
	// is not a loopback address, unless insecure_gossip is set. Like every
	// secret file a config names (admin tokens, users, join-token and TSIG
	// secrets), it is refused when other users of the host may read it, or
	// write it: mode 0600, or 0640 for the node's group.
	SecretKeyFile string `yaml:"secret_key_file"`
	// InsecureGossip allows a non-loopback gossip bind without a key: anyone
	// who reaches the gossip port can then join the cluster and take its
	// traffic. Every start logs a warning while it is set.
	InsecureGossip bool `yaml:"insecure_gossip"`
	// AllowedNetworks are the prefixes (CIDR) that the addresses other nodes
	// gossip about themselves (an edge's data URL, admin URLs) must fall in;
	// a member announcing anything else is ignored (default: loopback
	// 127.0.0.0/8 and ::1/128, the private IPv4 ranges 10.0.0.0/8,
	// 172.16.0.0/12 and 192.168.0.0/16, shared address space 100.64.0.0/10
	// as some container networks use, and unique local IPv6 fc00::/7).
	AllowedNetworks []string `yaml:"allowed_networks"`
	// Profile picks memberlist's timing defaults: "lan" (production) or
	// "local" (loopback: faster probes, quicker failure detection).
	Profile string `yaml:"profile"`
	// ProbeInterval overrides the profile's failure-detection probe interval
	// when non-zero (and caps the probe timeout at half of it): 100ms to 1m.
	ProbeInterval Duration `yaml:"probe_interval"`
	// GossipInterval overrides the profile's gossip interval when non-zero
	// (and sets the full state sync to 20× it, at least 1s): 10ms to 10s.
	GossipInterval Duration `yaml:"gossip_interval"`
	// Ring is the consistent ring every balancer routes by and every edge
	// checks ownership on: the same parameters on every node of a cluster,
	// which is why they live here. (balancer.ring, where they were first,
	// is still read when this is unset.)
	Ring Ring `yaml:"ring"`
	// StateDir keeps this node's operator state across restarts: drains,
	// serve-mode overrides, maintenance, failover latches, login sessions,
	// a generated admin password and the audit log (created with mode
	// 0700; files 0600, each written atomically). An existing one must be
	// this user's, writable by it and by nobody else (whoever writes it
	// can log in as the operator), a missing one in a directory this user
	// may create it in, and every directory on the way to it root's or
	// this user's, writable by neither group nor others unless sticky
	// (whoever can rename it can put another in its place): refused
	// otherwise, naming the chmod or chown that fixes it. /var/lib/NAME
	// (systemd's StateDirectory=) passes. One node per directory.
	// Empty (the default): all of it lives in memory and a restart forgets
	// it.
	StateDir string `yaml:"state_dir"`
	// LogLevel overrides the -log-level flag: debug, info, warn or error
	// (default: the flag's). A reload (SIGHUP, PUT /api/config) applies it
	// at once, so a node can be turned to debug and back without a restart.
	LogLevel string `yaml:"log_level"`

	ringPath string // where Ring came from, when not cluster.ring
	// keys are SecretKeyFile's keys as the check read them (Keyring).
	keys checked[[][]byte]
}

// Keyring is the cluster's keys (nil without SecretKeyFile): those the
// check of c read, when c was checked (Load, Parse) — what a start or a
// reload applies is what was checked, whatever the file holds by then —
// else the file's (ReadKeyring).
func (c Cluster) Keyring() ([][]byte, error) {
	if c.SecretKeyFile == "" {
		return nil, nil
	}
	if keys, ok := c.keys.of(c.SecretKeyFile); ok {
		return keys, nil
	}
	return ReadKeyring(c.SecretKeyFile)
}

// Ring parameters of bounded-load consistent hashing.
type Ring struct {
	// Partitions are the slots keys hash into (default 7919, a prime);
	// more give a finer balance and a slower rebuild.
	Partitions int `yaml:"partitions"`
	// Replication is the points each edge (per weight) has on the circle
	// (default 400). The edges' total weight × replication is at most
	// 4,000,000 points (16 bytes each, and work at every rebuild): the
	// check counts the static edges; with the edges found by gossip the
	// ring holds to it at run time by scaling weights down (and saying
	// so), so keep the total weight a cluster may reach × replication
	// within it (1000 edges of weight 10 at 400).
	Replication int `yaml:"replication"`
	// Load bounds every edge to this multiple of the mean partitions
	// (default 1.05, above 1.0).
	Load float64 `yaml:"load"`
}

// Cluster defaults. Ring defaults come from the measurement kept as a test
// in balancer/ring: with 7919 partitions, replication 400 and load 1.05 the
// busiest edge holds ≤ 1.05× the mean and a 3→4 scale-out moves ≈ the ideal
// quarter.
const (
	DefaultGossipBind      = "0.0.0.0:7946"
	DefaultRingPartitions  = 7919
	DefaultRingReplication = 400
	DefaultRingLoad        = 1.05
	// MaxRingPoints bounds the points on the ring's circle, the edges'
	// total weight × replication: each is 16 bytes and a place every
	// rebuild hashes, sorts and walks, on every balancer and edge, at
	// every membership change. Each field within its range, 1000 static
	// edges of weight 10 at replication 10000 were 100 million points,
	// 1.6 GB a build. The bound is the largest ring meant: every static
	// edge at the largest weight and the default replication (about 4 s
	// and 66 MB a build at the most partitions, TestLargestRingBuilds).
	// Edges found by gossip are not in the file: the ring holds the whole
	// circle to it too, gossip's edges counted (ring.Config.MaxPoints),
	// scaling their weights down and saying so.
	MaxRingPoints = MaxStaticEdges * MaxEdgeWeight * DefaultRingReplication
)

// Bounds of cluster.probe_interval and cluster.gossip_interval, around
// memberlist's profiles (probes every 1s on lan and local, gossip every
// 200ms and 100ms): a node probing or gossiping far faster floods its
// peers and is declared dead for a slow answer; far slower, a failure or
// a join takes minutes to be known.
const (
	minProbeInterval  = 100 * time.Millisecond
	maxProbeInterval  = time.Minute
	minGossipInterval = 10 * time.Millisecond
	maxGossipInterval = 10 * time.Second
)

// Memberlist timing profiles (cluster.profile).
const (
	ProfileLAN   = "lan"
	ProfileLocal = "local"
)

// Provision fills the unset fields of the cluster section with their
// defaults. Idempotent.
func (c *Cluster) Provision() {
	if c.Name == "" {
		c.Name, _ = os.Hostname()
	}
	setDefault(&c.Bind, DefaultGossipBind)
	setDefault(&c.Profile, ProfileLAN)
	if len(c.AllowedNetworks) == 0 {
		c.AllowedNetworks = append([]string(nil), DefaultAllowedNetworks...)
	}
	c.Ring.provision()
}

func (r *Ring) provision() {
	setDefaultInt(&r.Partitions, DefaultRingPartitions)
	setDefaultInt(&r.Replication, DefaultRingReplication)
	if r.Load == 0 {
		r.Load = DefaultRingLoad
	}
}

// announced is the gossip address this node announces: what peers reach
// it at.
func (c Cluster) announced() string {
	if c.Advertise != "" {
		return c.Advertise
	}
	return c.Bind
}

func (c *Cluster) validate(ps *problems) {
	if !ValidNodeName(c.Name) {
		// The other nodes would ignore it as a member: no gossip, no
		// ring, without a word here. (Unset, it is the host's name.)
		ps.add("cluster.name", "%q is no node name: want %s (the other nodes ignore a member named so); set cluster.name", c.Name, NodeNameRule)
	}
	checkGossiped(ps, "cluster.region", c.Region, MaxRegion)
	checkGossipAddr(ps, "cluster.bind", c.Bind, true)
	if c.Advertise != "" {
		checkGossipAddr(ps, "cluster.advertise", c.Advertise, false)
	}
	for i, j := range c.Join {
		checkHostPort(ps, fmt.Sprintf("cluster.join[%d]", i), j, false)
	}
	if c.Profile != ProfileLAN && c.Profile != ProfileLocal {
		ps.add("cluster.profile", "must be %s or %s, got %q", ProfileLAN, ProfileLocal, c.Profile)
	}
	if c.ProbeInterval != 0 {
		checkDurationRange(ps, "cluster.probe_interval", c.ProbeInterval, minProbeInterval, maxProbeInterval)
	}
	if c.GossipInterval != 0 {
		checkDurationRange(ps, "cluster.gossip_interval", c.GossipInterval, minGossipInterval, maxGossipInterval)
	}
	c.validateTrust(ps)
	if c.StateDir != "" {
		checkStateDir(ps, c.StateDir)
	}
	c.Ring.validate(ps, c.ringField())
}

// ringField is the path of the ring's parameters in the file.
func (c Cluster) ringField() string {
	if c.ringPath != "" {
		return c.ringPath
	}
	return "cluster.ring"
}

func (r Ring) validate(ps *problems, path string) {
	checkRange(ps, path+".partitions", r.Partitions, 1, 1<<20)
	checkRange(ps, path+".replication", r.Replication, 1, 10000)
	// consistent panics with "not enough room to distribute partitions" when
	// load leaves no slack; catch it here rather than at the first ring change.
	if r.Load <= 1.0 || r.Load > 10 {
		ps.add(path+".load", "must be in range (1.0, 10], got %g", r.Load)
	}
}

// validateTrust applies the cluster's trust rules: a gossip port beyond
// loopback needs a keyring (or an explicit insecure_gossip), a keyring file
// must parse, and the allowed networks must be prefixes.
func (c *Cluster) validateTrust(ps *problems) {
	if c.SecretKeyFile != "" {
		var err error
		if c.keys, err = keep(c.SecretKeyFile, ReadKeyring); err != nil {
			ps.add("cluster.secret_key_file", "%v", err)
		}
		ps.warnSecret("cluster.secret_key_file", c.SecretKeyFile, whatKeyring)
	} else if !c.InsecureGossip && !isLoopback(c.Bind) {
		ps.add("cluster.secret_key_file", "is required when cluster.bind (%s) is not a loopback address: without a key anyone who reaches the gossip port can join the cluster and take its traffic. Make one with `ringlb keygen -o /etc/ringlb/gossip.key` and copy it to every node (or set cluster.insecure_gossip: true to run without, not recommended)", c.Bind)
	}
	if c.InsecureGossip && c.SecretKeyFile != "" {
		ps.add("cluster.insecure_gossip", "is true but cluster.secret_key_file is set; remove one")
	}
	for i, s := range c.AllowedNetworks {
		checkPrefix(ps, fmt.Sprintf("cluster.allowed_networks[%d]", i), s, "10.0.0.0/8")
	}
}

// AllowedPrefixes returns cluster.allowed_networks parsed (validation has
// checked them; an unparsable entry is skipped).
func (c Cluster) AllowedPrefixes() []netip.Prefix {
	out := make([]netip.Prefix, 0, len(c.AllowedNetworks))
	for _, s := range c.AllowedNetworks {
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
		}
	}
	return out
}

// checkStateDir checks cluster.state_dir: a directory only this user can
// write, or one that can be made in an existing parent (CheckStateDir).
func checkStateDir(ps *problems, dir string) {
	if err := CheckStateDir(dir); err != nil {
		ps.add("cluster.state_dir", "%v", err)
	}
}

// CheckStateDir refuses a state directory (cluster.state_dir) that another
// local user could write: one owned by another user, or with write access
// for group or others (a sticky bit does not help: a file planted before
// the node writes its own is as good). What the directory holds is
// believed at start — login sessions (by their cookies' hashes), the
// generated admin password's hash, drains and overrides — so whoever can
// write it can log in as the operator; and a symlink placed where the node
// writes redirects its writes. The way to it is held to CheckPath, as an
// upgrade's binary is: whoever can rename the directory can put another in
// its place (the node's own of an earlier day: a login since ended is
// believed again). The directory itself may be a symlink (root's or this
// user's): its target is what is checked. One that does not exist yet
// passes when its parent does, this user may create it there and the way
// to it passes: the node makes it, mode 0700. One that exists must be
// writable by this user (mayCreateIn): the check passed one it could not
// write, and the node ran with its state in memory only.
func CheckStateDir(dir string) error {
	uid := os.Geteuid()
	p, fi, err := CheckPath("state directory", dir, uid)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("state directory %s does not exist, nor does its parent directory", dir)
	}
	if err != nil {
		return err
	}
	if fi == nil {
		// Every directory on the way to it is there, and passed: the
		// node makes it in the last one.
		if err := mayCreateIn(filepath.Dir(p)); err != nil {
			return fmt.Errorf("state directory %s does not exist, and %v", dir, err)
		}
		return nil
	}
	if !fi.IsDir() {
		if p != dir {
			return fmt.Errorf("state directory %s names %s, not a directory", dir, p)
		}
		return fmt.Errorf("state directory %s is not a directory", dir)
	}
	if owner, _, ok := FileOwner(fi); ok && int(owner) != uid {
		return fmt.Errorf("state directory %s is owned by uid %d, not this user (%d), who could fill it with logins and state: chown it to the node's user, then chmod 700 %s", dir, owner, uid, dir)
	}
	if perm := fi.Mode().Perm(); perm&0o022 != 0 {
		return fmt.Errorf("state directory %s has mode %v: other users can write it, and fill it with logins and state; chmod 700 %s", dir, perm, dir)
	}
	if err := mayCreateIn(dir); err != nil {
		return fmt.Errorf("state directory %s: %v; chmod 700 %s", dir, err, dir)
	}
	return nil
}
