// Package configs holds ringlb's configuration schema, its defaults, strict
// YAML decoding and validation, and the example files operators start from.
//
// One file describes a node (or, for the demo, a whole cluster): each role reads
// its own section. It imports no other ringlb package.
package configs

import (
	"log/slog"
	"time"
)

// Config is one ringlb configuration file. Each role reads its own section.
type Config struct {
	// Cluster is who this node is in the gossip cluster, whom it joins,
	// with which key, and the ring every node routes by. Read by every role.
	Cluster Cluster `yaml:"cluster"`
	// Edge is the session relay: read by `ringlb edge`.
	Edge Edge `yaml:"edge"`
	// Balancer is the regional front tier: read by `ringlb balancer`.
	Balancer Balancer `yaml:"balancer"`
	// GSLB is the authoritative DNS server with region pools: read by
	// `ringlb gslb`.
	GSLB GSLB `yaml:"gslb"`
	// Demo describes the nodes `ringlb demo` starts in one process; the
	// other sections are the settings they share.
	Demo Demo `yaml:"demo"`

	// warnings are what Parse found worth saying that refuses nothing
	// (Warnings).
	warnings Errors
	// roles are the role sections the file has (Roles).
	roles []string
	// runAs are the problems of running a role the file has no section
	// for, by role (RunAs).
	runAs map[string]Errors
}

// RunAs refuses a node of role run from c when the file has no section of
// that role and the defaults the node would run on cannot work: an edge
// listening on every interface of a host with no private address, its
// gossip reaching beyond loopback, would announce loopback and be ignored
// by every balancer. A file with the role's section had these refused by
// Parse already.
func (c *Config) RunAs(role string) error {
	if errs := c.runAs[role]; len(errs) > 0 {
		return &Refused{Errors: errs, Warnings: c.warnings, Roles: c.roles}
	}
	return nil
}

// Roles are the roles c's file has a section for, of edge, balancer and
// gslb, in that order: what `ringlb ROLE -config FILE` is meant to run
// from it (a section left out takes its defaults, and is not listed).
func (c *Config) Roles() []string { return c.roles }

// Warnings are what the check of c found worth saying that refuses
// nothing (a secret file its group may read: secretFileMode; an https
// monitor that verifies nothing), located as
// its errors are. Whoever parsed the file says them once: `ringlb check`
// prints them, a start or a reload logs them. A file refused for its
// problems has them too, in its *Refused, said after the problems.
func (c *Config) Warnings() Errors { return c.warnings }

// LogWarnings logs c's warnings, one line each, where a start or a reload
// says them.
func (c *Config) LogWarnings(log *slog.Logger) { c.warnings.LogWarnings(log) }

// LogWarnings logs ws as warnings, one line each: a config's
// (Config.LogWarnings), or a refused file's (Refused.Warnings), which a
// reload says beside the problems that refused it.
func (ws Errors) LogWarnings(log *slog.Logger) {
	for _, w := range ws {
		log.Warn("config: "+w.Msg, "config", w.File, "line", w.Line, "field", w.Path)
	}
}

// Demo lists the nodes `ringlb demo` runs in one process.
type Demo struct {
	// Nodes are started in this order, the first alone (the others join
	// its gossip port).
	Nodes []DemoNode `yaml:"nodes"`
}

// DemoNode is one node of the demo: its role and the addresses that differ
// from node to node; everything else comes from the shared sections.
type DemoNode struct {
	// Name is the node's cluster name (cluster.name).
	Name string `yaml:"name"`
	// Role is edge, balancer or gslb.
	Role string `yaml:"role"`
	// Region overrides cluster.region for this node.
	Region string `yaml:"region"`
	// Listen is the node's data address (DNS for a gslb).
	Listen string `yaml:"listen"`
	// Admin is the node's admin address, with its role's admin settings:
	// beyond loopback it needs that role's admin.token_file, as every admin
	// listener does.
	Admin string `yaml:"admin"`
	// Gossip is the node's gossip address, IP:port (its cluster.bind).
	Gossip string `yaml:"gossip"`
}

// Duration is a time.Duration written in YAML as "1.5s", "250ms" or "2m".
type Duration time.Duration

// D returns the duration as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }
