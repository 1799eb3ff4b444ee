package configs

import (
	_ "embed"
	"fmt"
	"path/filepath"
	"strings"
)

// DemoFile is configs/demo.yaml, embedded: the config `ringlb demo` runs when
// given none.
//
//go:embed demo.yaml
var DemoFile []byte

// DemoFileName is how messages about the embedded demo config name it.
const DemoFileName = "configs/demo.yaml (embedded)"

// LoadDemo parses the embedded demo config.
func LoadDemo() (*Config, error) { return Parse(DemoFileName, DemoFile) }

// ForNode returns the configuration of one demo node: a copy of c with the
// node's name, region and addresses filled in.
func (c *Config) ForNode(n DemoNode) *Config {
	out := *c
	out.Cluster.Join = append([]string(nil), c.Cluster.Join...)
	out.Balancer.Edges = append([]StaticEdge(nil), c.Balancer.Edges...)
	out.Demo = Demo{}
	out.Cluster.Name = n.Name
	out.Cluster.Bind = n.Gossip
	if n.Region != "" {
		out.Cluster.Region = n.Region
	}
	switch n.Role {
	case "edge":
		out.Edge.Listen = n.Listen
		out.Edge.Admin.Listen = n.Admin
		out.Edge.AdvertiseURL = "http://" + ReachableAddr(n.Listen)
	case "balancer":
		out.Balancer.Listen = n.Listen
		out.Balancer.Admin.Listen = n.Admin
	case "gslb":
		out.GSLB.Listen = n.Listen
		out.GSLB.Admin.Listen = n.Admin
	}
	// One node per state directory: each demo node keeps its operator
	// state in a directory of its own, named after it.
	if c.Cluster.StateDir != "" {
		out.Cluster.StateDir = filepath.Join(c.Cluster.StateDir, n.Name)
	}
	for _, a := range []*Admin{&out.Edge.Admin, &out.Balancer.Admin, &out.GSLB.Admin} {
		a.StateDir = out.Cluster.StateDir
	}
	return &out
}

// Summary is the one line `ringlb check` prints for a valid file: the
// cluster, then each role the file has a section for (Roles), then a
// demo's nodes. A demo node's addresses are its own, so a demo file's role
// sections are shown without theirs.
func (c *Config) Summary() string {
	demo := len(c.Demo.Nodes) > 0
	listen := func(addr string) string {
		if demo {
			return ""
		}
		return " " + addr + ","
	}
	parts := []string{fmt.Sprintf("cluster %q region %q (gossip %s, %d seeds, ring %d/%d/%g)",
		c.Cluster.Name, c.Cluster.Region, c.Cluster.Bind, len(c.Cluster.Join),
		c.Cluster.Ring.Partitions, c.Cluster.Ring.Replication, c.Cluster.Ring.Load)}
	for _, role := range c.roles {
		switch role {
		case "edge":
			parts = append(parts, fmt.Sprintf("edge%s max_connections %d", listen(c.Edge.Listen), c.Edge.MaxConnections))
		case "balancer":
			parts = append(parts, fmt.Sprintf("balancer%s max_connections %d, %d key sources, %d static edges",
				listen(c.Balancer.Listen), c.Balancer.Limits.MaxConnections, len(c.Balancer.Key.Sources), len(c.Balancer.Edges)))
		case "gslb":
			dns := ""
			if !demo {
				dns = " DNS " + c.GSLB.Listen + ","
			}
			var zones, names []string
			for _, z := range c.GSLB.Zones {
				zones = append(zones, z.Origin)
			}
			for _, n := range c.GSLB.Names {
				names = append(names, n.Name)
			}
			monitors := sortedMapKeys(c.GSLB.Monitors)
			parts = append(parts, fmt.Sprintf("gslb%s %d zones%s, %d names%s, %d monitors%s, max_tcp_connections %d",
				dns, len(zones), someOf(zones), len(names), someOf(names), len(monitors), someOf(monitors), c.GSLB.MaxTCPConnections))
		}
	}
	if len(c.roles) == 0 {
		parts = append(parts, "no edge, balancer or gslb section")
	}
	if demo {
		var nodes []string
		for _, n := range c.Demo.Nodes {
			nodes = append(nodes, fmt.Sprintf("%s %s %s", n.Name, n.Role, n.Listen))
		}
		parts = append(parts, fmt.Sprintf("%d demo nodes (%s)", len(nodes), strings.Join(nodes, ", ")))
	}
	limit := fmt.Sprintf("open-file limit %d", OpenFiles())
	adminConns := 0 // the largest admin port of the roles here
	for _, role := range c.roles {
		switch role {
		case "edge":
			adminConns = max(adminConns, c.Edge.Admin.MaxConnections)
		case "balancer":
			adminConns = max(adminConns, c.Balancer.Admin.MaxConnections)
		case "gslb":
			adminConns = max(adminConns, c.GSLB.Admin.MaxConnections)
		}
	}
	if len(c.roles) > 0 && OpenFilesTooFew(OpenFiles(), adminConns) {
		limit += " (" + OpenFilesTooFewAdvice + ")"
	}
	parts = append(parts, limit)
	return strings.Join(parts, "; ")
}

// someOf is " (a, b, c)" of up to five names, and how many more: enough of
// a list to recognise it on one line.
func someOf(names []string) string {
	const shown = 5
	if len(names) == 0 {
		return ""
	}
	if len(names) <= shown {
		return " (" + strings.Join(names, ", ") + ")"
	}
	return fmt.Sprintf(" (%s and %d more)", strings.Join(names[:shown], ", "), len(names)-shown)
}
