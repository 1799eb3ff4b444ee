// Package configs holds ringlb's configuration schema, its defaults, strict
// YAML decoding and validation, and the example files operators start from.
//
// One file describes a node (or, for the demo, a whole cluster): each role reads
// its own section. It imports no other ringlb package.
package configs

import "time"

// Config is one ringlb configuration file. Each role reads its own section.
type Config struct {
	Cluster  Cluster  `yaml:"cluster"`
	Edge     Edge     `yaml:"edge"`
	Balancer Balancer `yaml:"balancer"`
	GSLB     GSLB     `yaml:"gslb"`
	// Demo describes the nodes `ringlb demo` starts in one process; the
	// other sections are the settings they share.
	Demo Demo `yaml:"demo"`
}

// Demo lists the nodes `ringlb demo` runs in one process.
type Demo struct {
	Nodes []DemoNode `yaml:"nodes"`
}

// DemoNode is one node of the demo: its role and the addresses that differ
// from node to node; everything else comes from the shared sections.
type DemoNode struct {
	Name   string `yaml:"name"`
	Role   string `yaml:"role"` // edge | balancer | gslb
	Region string `yaml:"region"`
	Listen string `yaml:"listen"`
	Admin  string `yaml:"admin"`
	Gossip string `yaml:"gossip"`
}

// Duration is a time.Duration written in YAML as "1.5s", "250ms" or "2m".
type Duration time.Duration

// D returns the duration as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }
