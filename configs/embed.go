package configs

import (
	_ "embed"
	"fmt"
	"path/filepath"
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

// Summary is the one line `ringlb check` prints for a valid file.
func (c *Config) Summary() string {
	return fmt.Sprintf("cluster %q region %q (gossip %s, %d seeds); edge %s, max_connections %d; balancer %s, max_connections %d, %d key sources, ring %d/%d/%g, %d static edges; %d demo nodes; open-file limit %d",
		c.Cluster.Name, c.Cluster.Region, c.Cluster.Bind, len(c.Cluster.Join),
		c.Edge.Listen, c.Edge.MaxConnections, c.Balancer.Listen, c.Balancer.Limits.MaxConnections, len(c.Balancer.Key.Sources),
		c.Cluster.Ring.Partitions, c.Cluster.Ring.Replication, c.Cluster.Ring.Load,
		len(c.Balancer.Edges), len(c.Demo.Nodes), OpenFiles())
}
