package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/ringlb/ringlb/balancer/ring"
	"github.com/ringlb/ringlb/bench"
	"github.com/ringlb/ringlb/configs"
)

func runBenchRing(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flagSet("bench ring", "Builds a ring of -edges edges with the given parameters (or a config file's\ncluster.ring) and reports each edge's share of session keys, the keys each\nmembership change moves (one edge added, each edge removed) against the\nideal, and the cost of a lookup.", stderr)
	def := ring.DefaultConfig()
	var o bench.RingOptions
	config := fs.String("config", "", "take partitions, replication and load from this file's cluster.ring (balancer.ring where it is unset, as a node does); -partitions, -replication and -load given too win over the file")
	fs.IntVar(&o.Ring.Partitions, "partitions", def.Partitions, "partitions (slots keys hash into)")
	fs.IntVar(&o.Ring.Replication, "replication", def.Replication, "points per edge on the circle")
	fs.Float64Var(&o.Ring.Load, "load", def.Load, "bound on the busiest edge, × the mean (> 1)")
	fs.IntVar(&o.Edges, "edges", 3, "edges on the ring measured")
	fs.IntVar(&o.Keys, "keys", 100000, "session keys sampled")
	fs.DurationVar(&o.LookupTime, "lookup-time", 300*time.Millisecond, "how long to time lookups")
	out := outputFlags(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *config != "" {
		cfg, err := configs.Load(*config)
		if err != nil {
			return err
		}
		// The flags given beside the file are what to try against it.
		given := o.Ring
		o.Ring = ringConfig(cfg.Cluster.Ring, nil)
		fs.Visit(func(f *flag.Flag) {
			switch f.Name {
			case "partitions":
				o.Ring.Partitions = given.Partitions
			case "replication":
				o.Ring.Replication = given.Replication
			case "load":
				o.Ring.Load = given.Load
			}
		})
	}
	o.Ring.MaxPoints = configs.MaxRingPoints // the ring as nodes build it
	res, err := bench.RunRing(ctx, o, stderr)
	if err != nil {
		return benchError(fs, err)
	}
	fmt.Fprintln(stdout, res.Summary())
	return out.write(res, res.WriteSVG, stderr)
}
