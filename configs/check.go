package configs

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"
)

// Provision fills every unset field of every section with its default, each
// section from its own Provision: a zero Config plus these is a working
// node (once it has a cluster key, or gossips on loopback). Load calls it;
// a config built in code (a test) is provisioned before a role takes it.
// Idempotent.
func (c *Config) Provision() {
	// The ring's parameters moved from balancer.ring to cluster.ring: a
	// file that sets only the old place keeps working.
	if c.Balancer.Ring != (Ring{}) {
		if c.Cluster.Ring == (Ring{}) {
			c.Cluster.Ring = c.Balancer.Ring
			c.Cluster.ringPath = "balancer.ring" // where problems are to be found
		}
		c.Balancer.Ring.provision() // compared with cluster.ring by validate
	}
	c.Cluster.Provision()
	c.Edge.Provision()
	c.Balancer.Provision()
	c.GSLB.Provision()
	// Each role reads its own section: its admin port finds the node's
	// state directory there.
	for _, a := range []*Admin{&c.Edge.Admin, &c.Balancer.Admin, &c.GSLB.Admin} {
		a.StateDir = c.Cluster.StateDir
	}
}

// problem is a validation finding before it is located in the file; a
// warning refuses nothing (Config.Warnings).
type problem struct {
	path, msg string
	warning   bool
	// runAs: a problem only for a node of this role run from a file
	// without its section (Config.RunAs).
	runAs string
}

type problems []problem

func (ps *problems) add(path, format string, args ...any) {
	*ps = append(*ps, problem{path: path, msg: fmt.Sprintf(format, args...)})
}

// warn adds a warning: allowed, but worth saying (Config.Warnings).
func (ps *problems) warn(path, format string, args ...any) {
	*ps = append(*ps, problem{path: path, msg: fmt.Sprintf(format, args...), warning: true})
}

// warnSecret adds the warning secretFileMode has for the secret file at
// path (what it holds: what), if any.
func (ps *problems) warnSecret(path, file, what string) {
	if w := secretWarning(file, what); w != "" {
		ps.warn(path, "%s", w)
	}
}

// validate checks every rule and returns every violation; each message says
// what is wrong, the value given, and what is allowed.
func (c *Config) validate() []problem {
	var ps problems
	c.Cluster.validate(&ps)
	checkLogLevel(&ps, "cluster.log_level", c.Cluster.LogLevel)
	if c.Balancer.Ring != (Ring{}) && c.Cluster.ringPath == "" && c.Balancer.Ring != c.Cluster.Ring {
		ps.add("balancer.ring", "differs from cluster.ring: the ring's parameters are the cluster's (edges check ownership on the same ring); set them once, in cluster.ring")
	}
	c.Edge.validate(&ps, c.Cluster)
	from := len(ps)
	c.Edge.validateReachable(&ps, c.Cluster)
	if !slices.Contains(c.roles, "edge") {
		// A file without an edge section is not an edge's: its default
		// listen address is nobody's, unless the file is run as an edge.
		for i := range ps[from:] {
			ps[from+i].runAs = "edge"
		}
	}
	for _, role := range c.roles {
		if a, ok := c.roleAdmin(role); ok {
			checkAdminAnnounced(&ps, role+".admin.listen", a.Listen, c.Cluster)
		}
	}
	c.Balancer.validate(&ps)
	c.validateRingPoints(&ps)
	c.GSLB.validate(&ps)
	c.validateDemo(&ps)
	c.validateAddresses(&ps)
	return ps
}

// validateRingPoints bounds the ring the static edges make with the
// cluster's replication (MaxRingPoints says why). A weight of 0 (a drain)
// counts as 1, as the ring counts it.
func (c *Config) validateRingPoints(ps *problems) {
	weight := 0
	for _, se := range c.Balancer.Edges {
		w := 1
		if se.Weight != nil {
			w = max(1, min(*se.Weight, MaxEdgeWeight))
		}
		weight += w
	}
	// Compared by division: a replication out of its range (said by its
	// own check) must not overflow the product.
	if weight > 0 && c.Cluster.Ring.Replication > MaxRingPoints/weight {
		ps.add(c.Cluster.ringField()+".replication", "%d × the static edges' total weight %d is more than %d points on the ring (16 bytes each, and work at every rebuild): at most %d with these edges", c.Cluster.Ring.Replication, weight, MaxRingPoints, MaxRingPoints/weight)
	}
}

// validateAddresses checks that each role of the file binds distinct
// addresses: its own listeners and gossip (a node reads only its role's
// section, so another role's may reuse a port). Two on one port, or one on
// every interface beside another on its port, cannot both be bound: the
// check passed and the start failed, "address already in use".
func (c *Config) validateAddresses(ps *problems) {
	type bound struct{ path, addr string }
	byRole := map[string][]bound{
		"balancer": {{"balancer.listen", c.Balancer.Listen}, {"balancer.admin.listen", c.Balancer.Admin.Listen}, {"balancer.tls.redirect_from", c.Balancer.TLS.RedirectFrom}},
		"edge":     {{"edge.listen", c.Edge.Listen}, {"edge.admin.listen", c.Edge.Admin.Listen}},
		"gslb":     {{"gslb.listen", c.GSLB.Listen}, {"gslb.admin.listen", c.GSLB.Admin.Listen}},
	}
	for _, role := range c.roles {
		seen := []bound{{"cluster.bind", c.Cluster.Bind}}
		for _, b := range byRole[role] {
			for _, o := range seen {
				if bindConflict(b.addr, o.addr) {
					by := o.path
					if o.addr != b.addr {
						by += " (" + o.addr + ")"
					}
					ps.add(b.path, "%s is already used by %s: give it a port of its own", b.addr, by)
				}
			}
			seen = append(seen, b)
		}
	}
}

// checkPrefix checks a prefix of peers' addresses (a geo prefix, who may
// transfer a zone, send a PROXY header or be announced: every one matched
// against an address in its IPv4 form) and returns it, ok when it parses
// (a problem or not). An IPv4-mapped one (::ffff:10.0.0.0/104) matched no
// address. One with bits set beyond its length (10.1.0.0/8) was taken as
// its masked form: a typo of the length moved a whole /8 of clients to
// another region, or let it transfer the zone or say whose connection it
// carries. Knot and BIND refuse or warn of both.
func checkPrefix(ps *problems, path, s, example string) (netip.Prefix, bool) {
	pfx, err := netip.ParsePrefix(s)
	switch {
	case err != nil:
		ps.add(path, "%q is not a CIDR prefix (e.g. %s)", s, example)
	case pfx.Addr().Is4In6() && pfx.Bits() < 96:
		ps.add(path, "%s is an IPv4-mapped IPv6 prefix shorter than /96, and addresses are matched in their IPv4 form: write an IPv4 prefix", pfx)
	case pfx.Addr().Is4In6():
		ps.add(path, "%s is an IPv4-mapped IPv6 prefix, and addresses are matched in their IPv4 form: write %s", pfx, netip.PrefixFrom(pfx.Addr().Unmap(), pfx.Bits()-96).Masked())
	case pfx.Masked() != pfx:
		ps.add(path, "%s has bits set beyond its length: it would be taken as %s; write that, or the length meant", pfx, pfx.Masked())
	}
	return pfx, err == nil
}

// bindConflict reports whether listeners on addresses a and b cannot both
// be bound: one port (not 0, any free port), and one address or a wildcard
// beside any. An address that does not parse is said by its own check.
func bindConflict(a, b string) bool {
	ah, ap, aerr := net.SplitHostPort(a)
	bh, bp, berr := net.SplitHostPort(b)
	if aerr != nil || berr != nil || ap != bp || ap == "0" || ap == "" {
		return false
	}
	return sameBoundHost(ah, bh) || anyHost(ah) || anyHost(bh)
}

// sameBoundHost reports whether two hosts (as net.SplitHostPort gives them)
// bind one address: an IP address however written (::ffff:127.0.0.1 is
// 127.0.0.1, 0:0:0:0:0:0:0:1 is ::1), and localhost as a listener binds it,
// its first IPv4 address. Compared as text, localhost:9090 passed beside
// 127.0.0.1:9090, and the start failed "address already in use".
func sameBoundHost(a, b string) bool {
	boundIP := func(h string) net.IP {
		if strings.EqualFold(h, "localhost") {
			return net.IPv4(127, 0, 0, 1)
		}
		return net.ParseIP(h)
	}
	if ia, ib := boundIP(a), boundIP(b); ia != nil || ib != nil {
		return ia.Equal(ib)
	}
	return strings.EqualFold(a, b)
}

// anyHost reports whether an address's host (as net.SplitHostPort gives
// it) is every interface: empty, 0.0.0.0 or ::.
func anyHost(host string) bool {
	ip := net.ParseIP(host)
	return host == "" || ip != nil && ip.IsUnspecified()
}

func (c *Config) validateDemo(ps *problems) {
	names := map[string]bool{}
	type claimed struct{ path, addr string }
	var addrs []claimed
	// The demo's nodes run in one process: no two may bind one address.
	claim := func(path, addr string) {
		for _, o := range addrs {
			if bindConflict(addr, o.addr) {
				by := o.path
				if o.addr != addr {
					by += " (" + o.addr + ")"
				}
				ps.add(path, "%s is already used by %s", addr, by)
				return
			}
		}
		addrs = append(addrs, claimed{path, addr})
	}
	for i, n := range c.Demo.Nodes {
		p := fmt.Sprintf("demo.nodes[%d]", i)
		if n.Name == "" {
			ps.add(p+".name", "is required")
		} else if !ValidNodeName(n.Name) {
			ps.add(p+".name", "%q is no node name: want %s", n.Name, NodeNameRule)
		} else if names[n.Name] {
			ps.add(p+".name", "%q is used twice", n.Name)
		}
		names[n.Name] = true
		checkGossiped(ps, p+".region", n.Region, MaxRegion)
		if n.Role != "edge" && n.Role != "balancer" && n.Role != "gslb" {
			ps.add(p+".role", "must be edge, balancer or gslb, got %q", n.Role)
		}
		for _, f := range []struct{ field, addr string }{{"listen", n.Listen}, {"admin", n.Admin}, {"gossip", n.Gossip}} {
			if f.addr == "" {
				ps.add(p+"."+f.field, "is required")
				continue
			}
			if f.field == "gossip" {
				checkGossipAddr(ps, p+".gossip", f.addr, true) // the node's cluster.bind
			} else {
				checkHostPort(ps, p+"."+f.field, f.addr, true)
			}
			claim(p+"."+f.field, f.addr)
		}
		// The node's admin listener is this address with its role's admin
		// section: beyond loopback it needs that section's token, as
		// checkAdmin asks of every other admin listener.
		if a, ok := c.roleAdmin(n.Role); ok && n.Admin != "" && a.TokenFile == "" && !isLoopback(n.Admin) {
			ps.add(p+".admin", "%s is not a loopback address: set %s.admin.token_file; %s", n.Admin, n.Role, adminTokenWhy)
		}
	}
}

// checkAdminAnnounced warns of an admin listen address on every interface
// of a host with no private address while gossip reaches beyond loopback:
// the node announces its admin at 127.0.0.1 (ReachableAddr), which peers
// on other hosts take for their own. Their dashboards and reads of this
// node fail; the traffic does not depend on it, so it refuses nothing.
func checkAdminAnnounced(ps *problems, path, listen string, cl Cluster) {
	host, _, err := net.SplitHostPort(listen)
	if err != nil || !anyHost(host) || isLoopback(cl.announced()) {
		return
	}
	if announced := ReachableAddr(listen); isLoopback(announced) {
		ps.warn(path, "%s is on every interface, and "+noPrivateAddress+": the node announces its admin at %s, which peers on other hosts (gossip %s reaches them) take for their own; give %s the address they reach it at", listen, announced, cl.announced(), path)
	}
}

// roleAdmin is role's admin section (a demo node of role takes its
// settings from it).
func (c *Config) roleAdmin(role string) (Admin, bool) {
	switch role {
	case "edge":
		return c.Edge.Admin, true
	case "balancer":
		return c.Balancer.Admin, true
	case "gslb":
		return c.GSLB.Admin, true
	}
	return Admin{}, false
}

func checkHostPort(ps *problems, path, addr string, portZeroOK bool) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		ps.add(path, "%q is not host:port (e.g. 127.0.0.1:8080 or :8080)", addr)
		return
	}
	if host != "" && net.ParseIP(host) == nil && !validHostname(host) {
		ps.add(path, "%q: %q is neither an IP address nor a host name", addr, host)
	}
	checkPort(ps, path, addr, port, portZeroOK)
}

func checkPort(ps *problems, path, addr, port string, zeroOK bool) {
	n, err := parsePort(port)
	if err != nil || (n == 0 && !zeroOK) {
		ps.add(path, "%q: port must be in range [1, 65535]", addr)
	}
}

// checkGossipAddr checks a gossip address, one to bind (an empty host is
// every interface) or to advertise: memberlist takes an IP address only.
// Given a host name it listened on every interface (without a key, when
// the name was "localhost"), or failed to start when advertising it.
func checkGossipAddr(ps *problems, path, addr string, bind bool) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		checkHostPort(ps, path, addr, bind)
		return
	}
	ip := net.ParseIP(host)
	switch {
	case bind && host == "":
	case !bind && anyHost(host):
		ps.add(path, "%q needs the IP address other nodes reach this one at, e.g. 10.0.0.11:7946", addr)
	case ip == nil && bind:
		ps.add(path, "%q: %q is not an IP address, and gossip binds an IP address only (given a host name it listens on every interface): write an IP address, e.g. 127.0.0.1:7946", addr, host)
	case ip == nil:
		ps.add(path, "%q: %q is not an IP address, and gossip advertises an IP address only: write an IP address, e.g. 10.0.0.11:7946", addr, host)
	}
	checkPort(ps, path, addr, port, bind)
}

func parsePort(s string) (int, error) {
	var n int
	if _, err := fmt.Sscanf(s, "%d", &n); err != nil || n < 0 || n > 65535 || fmt.Sprint(n) != s {
		return 0, fmt.Errorf("bad port %q", s)
	}
	return n, nil
}

func validHostname(h string) bool {
	if len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for _, r := range label {
			if !(r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
				return false
			}
		}
	}
	return true
}

func checkURL(ps *problems, path, raw string) {
	if _, err := parseHTTPURL(raw); err != nil {
		ps.add(path, "%v", err)
	}
}

func parseHTTPURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%q must be an http:// or https:// URL with a host", raw)
	}
	return u, nil
}

func checkRange(ps *problems, path string, v, lo, hi int) {
	if v < lo || v > hi {
		ps.add(path, "must be in range [%d, %d], got %d", lo, hi, v)
	}
}

func checkFile(ps *problems, path, file string) {
	if file == "" {
		return
	}
	st, err := os.Stat(file)
	switch {
	case err != nil:
		ps.add(path, "cannot read %s: %v", file, err)
	case !st.Mode().IsRegular():
		// The role reads it after the check: a FIFO would hold a reload
		// (and the reload lock) in open(2), a device never ends.
		ps.add(path, "cannot read %s: not a regular file (%s)", file, st.Mode().Type())
	}
}

func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func setDefault(s *string, v string) {
	if *s == "" {
		*s = v
	}
}

func setDefaultInt(i *int, v int) {
	if *i == 0 {
		*i = v
	}
}

func setDefaultDuration(d *Duration, v time.Duration) {
	if *d == 0 {
		*d = Duration(v)
	}
}

func ptr[T any](v T) *T { return &v }
