package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health"
)

// demoReadyLine is printed once every balancer routes to every edge; the
// demo's end-to-end test waits for it.
const demoReadyLine = "ringlb demo is ready"

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flagSet("demo", "Runs the demo cluster of configs/demo.yaml in one process on loopback: three edges,\ntwo balancers that agree on where every session lives, and a gslb answering DNS for\nthe balancers' regions. Ctrl-C, or closing its terminal, stops it.", stderr)
	path := fs.String("config", "", "a config file with a demo section (default: the embedded configs/demo.yaml)")
	listenAll := fs.Bool("listen-all", false, "the balancers' listen ports (the pad, its WebSockets) on every interface, for a container's published ports\n(docker run -p 8080:8080 ringlb demo -listen-all); admin, gossip, edges and DNS stay on loopback")
	newLogger := logFlags(fs, stderr)
	fs.Lookup("log-level").DefValue = "warn"
	fs.Set("log-level", "warn")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	logger, _, err := newLogger()
	if err != nil {
		return err
	}
	// Closing the terminal stops the demo as Ctrl-C does, so its private
	// directory goes with it: there is no config file to reload.
	ctx, stopHangup := signal.NotifyContext(ctx, syscall.SIGHUP)
	defer stopHangup()
	useOpenFileLimit(logger) // before Load: the connection limits derive from it
	defer useMemoryLimit(logger)()
	cfg, err := configs.LoadDemo()
	if *path != "" {
		cfg, err = configs.Load(*path)
	}
	if err != nil {
		return err
	}
	cfg.LogWarnings(logger)
	if len(cfg.Demo.Nodes) == 0 {
		return errors.New("the config has no demo.nodes to run")
	}
	if *listenAll {
		// Only when asked, and only the balancers' data ports: a
		// container's published port reaches its address, never its
		// loopback. Whoever reaches them can join the demo's sessions;
		// the admin APIs (no token in the demo: drains, serve modes,
		// config) and the edges stay on loopback.
		for i, n := range cfg.Demo.Nodes {
			if _, port, err := net.SplitHostPort(n.Listen); err == nil && n.Role == "balancer" {
				cfg.Demo.Nodes[i].Listen = net.JoinHostPort("0.0.0.0", port)
			}
		}
	}
	// What the demo generates at start lives in a private directory that
	// goes with it.
	dir, err := os.MkdirTemp("", "ringlb-demo-")
	if err != nil {
		return fmt.Errorf("demo keys: %w", err)
	}
	defer os.RemoveAll(dir)
	if cfg.Cluster.SecretKeyFile == "" && !cfg.Cluster.InsecureGossip {
		// A fresh key per run, known to this process only: nothing else on
		// the machine can join the demo's gossip and take its traffic.
		if err := demoKey(cfg, dir); err != nil {
			return err
		}
	}
	anchors, err := demoDNSSEC(cfg, dir)
	if err != nil {
		return err
	}
	if cfg.Cluster.StateDir == "" {
		// Drains, overrides, logins and the audit log live with the run
		// (each node in a directory of its own: configs.ForNode).
		cfg.Cluster.StateDir = filepath.Join(dir, "state")
	}

	started := time.Now()
	nodes, err := startDemoNodes(ctx, cfg, logger)
	stopAll := func() error {
		stopCtx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		return stopNodes(stopCtx, nodes)
	}
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			// The demo's addresses are fixed, and the user may never have
			// seen the file that fixes them.
			err = fmt.Errorf("%w\nthe demo's addresses are its config's demo.nodes (configs/demo.yaml unless -config): free that address, or run ringlb demo -config FILE with a copy of the file whose nodes use free ones", err)
		}
		return errors.Join(err, stopAll())
	}

	// Ready when every balancer routes by, and every edge checks ownership
	// by, a ring of every demo edge: before that an edge and a balancer
	// can disagree on a key's owner, and a join gets a 421 instead of a
	// session.
	edges := 0
	for _, n := range cfg.Demo.Nodes {
		if n.Role == "edge" {
			edges++
		}
	}
	waitCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for _, n := range nodes {
		if n.ringEdges == nil {
			continue
		}
		err := n.member.Wait(waitCtx, func(ns []health.Node) bool { return countEdges(ns) >= edges })
		if err == nil {
			err = waitRing(waitCtx, n, edges)
		}
		if err != nil {
			return errors.Join(fmt.Errorf("demo not ready: %s %s does not see %d edges: %w", n.role, n.name, edges, err), stopAll())
		}
	}
	printBanner(stdout, nodes, anchors, time.Since(started))

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-firstFailure(nodes):
	}
	fmt.Fprintln(stdout, "stopping the demo…")
	return errors.Join(runErr, stopAll())
}

// startDemoNodes starts the seed node (the first) alone, so that it listens
// for gossip before the others join through it, then the rest concurrently.
func startDemoNodes(ctx context.Context, cfg *configs.Config, logger *slog.Logger) ([]*node, error) {
	start := func(dn configs.DemoNode) (*node, error) {
		nc := cfg.ForNode(dn)
		startRole := startBalancer
		switch dn.Role {
		case "edge":
			startRole = startEdge
		case "gslb":
			startRole = startGSLB
		}
		n, err := startRole(ctx, nc, logger, false, nil)
		if err == nil {
			n.announce(logger)
		}
		return n, err
	}
	first, err := start(cfg.Demo.Nodes[0])
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", cfg.Demo.Nodes[0].Name, err)
	}
	rest := cfg.Demo.Nodes[1:]
	nodes := make([]*node, len(rest))
	errs := make([]error, len(rest))
	var wg sync.WaitGroup
	for i, dn := range rest {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, err := start(dn)
			if err != nil {
				err = fmt.Errorf("start %s: %w", dn.Name, err)
			}
			nodes[i], errs[i] = n, err
		}()
	}
	wg.Wait()
	all := []*node{first}
	for _, n := range nodes {
		if n != nil {
			all = append(all, n)
		}
	}
	return all, errors.Join(errs...)
}

// stopNodes stops the gslb first (no new clients sent anywhere), then the
// balancers and the edges together, in parallel. Not balancers before
// edges: a balancer's stop waits for its tunnels to end, and a live
// session's tunnel ends only when its edge closes it (1012).
func stopNodes(ctx context.Context, nodes []*node) error {
	var errs []error
	for _, group := range [][]string{{"gslb"}, {"balancer", "edge"}} {
		var wg sync.WaitGroup
		var mu sync.Mutex
		for _, n := range nodes {
			if !slices.Contains(group, n.role) {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := n.stop(ctx); err != nil {
					mu.Lock()
					errs = append(errs, fmt.Errorf("stop %s: %w", n.name, err))
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
	}
	return errors.Join(errs...)
}

func firstFailure(nodes []*node) <-chan error {
	out := make(chan error, len(nodes))
	for _, n := range nodes {
		go func() {
			if err, ok := <-n.failed; ok && err != nil {
				out <- fmt.Errorf("%s: %w", n.name, err)
			}
		}()
	}
	return out
}

func countEdges(ns []health.Node) int {
	c := 0
	for _, n := range ns {
		if n.Meta.Role == health.RoleEdge && n.Meta.State == health.StateAlive {
			c++
		}
	}
	return c
}

// waitRing waits until the node's ring has caught up with gossip: rings
// follow membership notifications on their own goroutines.
func waitRing(ctx context.Context, n *node, want int) error {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for n.ringEdges() < want {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

func printBanner(w io.Writer, nodes []*node, anchors string, took time.Duration) {
	var bals, edges, dnss []*node
	for _, n := range nodes {
		switch n.role {
		case "balancer":
			bals = append(bals, n)
		case "gslb":
			dnss = append(dnss, n)
		default:
			edges = append(edges, n)
		}
	}
	// A listener on every interface is opened at its loopback address:
	// browsers refuse 0.0.0.0.
	open := func(n *node) string {
		if host, port, err := net.SplitHostPort(n.listen); err == nil && net.ParseIP(host).IsUnspecified() {
			return net.JoinHostPort("127.0.0.1", port)
		}
		return n.listen
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %d balancers, %d edges and %d gslb up in %s.\n\n", demoReadyLine, len(bals), len(edges), len(dnss), took.Round(time.Millisecond))
	if len(bals) > 0 {
		fmt.Fprintf(&b, "Start here: open the pad in two browser windows (same URL); both edit one text through a balancer:\n")
		fmt.Fprintf(&b, "  http://%s/?session=hello\n", open(bals[0]))
		fmt.Fprintf(&b, "Then the dashboard (ring, nodes, gslb pools, live counters): drain the pad's edge there and watch the pad move:\n")
		fmt.Fprintf(&b, "  http://%s/\n\n", bals[0].admin)
	}
	for _, n := range bals {
		fmt.Fprintf(&b, "  balancer %-7s http://%s   admin http://%s\n", n.name, open(n), n.admin)
	}
	for _, n := range edges {
		fmt.Fprintf(&b, "  edge     %-7s http://%s   admin http://%s\n", n.name, n.listen, n.admin)
	}
	for _, n := range dnss {
		host, port, _ := net.SplitHostPort(n.listen)
		fmt.Fprintf(&b, "  gslb     %-7s dns %s (udp+tcp)   admin http://%s\n", n.name, n.listen, n.admin)
		fmt.Fprintf(&b, "\n  # the managed name: east clients (127.0.0.1) get bal-1, west (127.0.0.2) get bal-2\n")
		fmt.Fprintf(&b, "  dig @%s -p %s ide.ringlb.test\n", host, port)
		fmt.Fprintf(&b, "  dig @%s -p %s -b 127.0.0.2 ide.ringlb.test\n", host, port)
		if len(bals) > 1 {
			// The demo's balancers share one process: a user fails one
			// through its health path, not by stopping it.
			last := bals[len(bals)-1]
			fmt.Fprintf(&b, "  # %s in maintenance fails its health checks: within seconds west gets the other (state=off to undo)\n", last.name)
			fmt.Fprintf(&b, "  curl -X POST -H 'X-Ringlb-Admin: 1' 'http://%s/api/maintenance?state=on'\n", last.admin)
			fmt.Fprintf(&b, "  dig @%s -p %s -b 127.0.0.2 ide.ringlb.test\n", host, port)
		}
		if anchors != "" {
			fmt.Fprintf(&b, "  # the zone is signed (keys made at start): signatures, and a validator that trusts its key\n")
			fmt.Fprintf(&b, "  dig @%s -p %s +dnssec ide.ringlb.test\n", host, port)
			fmt.Fprintf(&b, "  delv @%s -p %s -a %s +root=ringlb.test ide.ringlb.test\n", host, port, anchors)
		}
		fmt.Fprintf(&b, "  curl http://%s/api/pools\n", n.admin)
	}
	if len(bals) == 0 {
		// A demo of other roles only: what the ring does is a balancer's.
		fmt.Fprint(&b, "\nCtrl-C stops everything.\n")
		fmt.Fprint(w, b.String())
		return
	}
	b1, b2 := bals[0], bals[len(bals)-1]
	fmt.Fprintf(&b, `
Try it:
  # the same key lands on the same edge through either balancer
  curl -H 'ctstickiness: my-session' http://%[1]s/whoami
  curl -H 'ctstickiness: my-session' http://%[2]s/whoami
  # where a key lives, and the ring itself
  curl 'http://%[3]s/api/lookup?key=my-session'
  curl http://%[3]s/api/ring
  # a WebSocket session: every frame goes to every other participant
  #   ws://%[1]s/ws  with header or cookie  ctstickiness: my-session
  curl -s http://%[3]s/metrics | grep ringlb_

Ctrl-C stops everything.
`, open(b1), open(b2), b1.admin)
	fmt.Fprint(w, b.String())
}

// demoKey generates the demo's cluster key into dir, a private temporary
// directory, and points cfg at it.
func demoKey(cfg *configs.Config, dir string) error {
	path := filepath.Join(dir, "gossip.key")
	if err := configs.CreateExclusive(path, 0o600, configs.GenerateKey()+"\n"); err != nil {
		return fmt.Errorf("demo key: %w", err)
	}
	cfg.Cluster.SecretKeyFile = path
	return nil
}

// demoDNSSEC signs every gslb zone of cfg that is not signed already with a
// KSK and a ZSK made now in dir, and writes there a trust-anchor file for
// delv; it returns that file's path ("" when no zone was signed).
func demoDNSSEC(cfg *configs.Config, dir string) (string, error) {
	var anchors strings.Builder
	for i := range cfg.GSLB.Zones {
		z := &cfg.GSLB.Zones[i]
		if z.DNSSEC != nil {
			continue
		}
		ksk, key, err := configs.GenerateDNSSECKey(dir, z.Origin, true)
		if err != nil {
			return "", fmt.Errorf("demo DNSSEC keys: %w", err)
		}
		zsk, _, err := configs.GenerateDNSSECKey(dir, z.Origin, false)
		if err != nil {
			return "", fmt.Errorf("demo DNSSEC keys: %w", err)
		}
		z.DNSSEC = configs.DefaultDNSSEC(ksk, zsk)
		fmt.Fprintf(&anchors, "  %s static-key %d %d %d %q;\n", key.Hdr.Name, key.Flags, key.Protocol, key.Algorithm, key.PublicKey)
	}
	if anchors.Len() == 0 {
		return "", nil
	}
	path := filepath.Join(dir, "trust-anchors.conf")
	if err := os.WriteFile(path, []byte("trust-anchors {\n"+anchors.String()+"};\n"), 0o644); err != nil {
		return "", fmt.Errorf("demo DNSSEC trust anchors: %w", err)
	}
	return path, nil
}
