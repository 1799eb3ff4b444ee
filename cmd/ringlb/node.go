package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/url"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/KimMachineGun/automemlimit/memlimit"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/ringlb/ringlb/balancer"
	"github.com/ringlb/ringlb/balancer/acceptguard"
	"github.com/ringlb/ringlb/balancer/handoff"
	"github.com/ringlb/ringlb/balancer/ring"
	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/gslb"
	"github.com/ringlb/ringlb/health"
	"github.com/ringlb/ringlb/health/operator"
	"github.com/ringlb/ringlb/sessions"
)

// node is one running role: its listeners, its gossip membership and how to
// stop it. Stop is bounded by its context.
type node struct {
	name, role string
	listen     string // data address actually bound
	admin      string // admin address actually bound
	member     *health.Membership
	// ringEdges counts the edges on the ring this node routes or checks
	// ownership by; nil for roles without one.
	ringEdges func() int
	stop      func(ctx context.Context) error
	// reload applies the role's section of a re-read config file and the
	// cluster's keyring (apply does the rest: SIGHUP, PUT /api/config).
	reload func(cfg *configs.Config) error
	// op is the node's admin plane, where the config API is served.
	op *operator.Node
	// reg is the registry its admin port's /metrics serves.
	reg *prometheus.Registry
	// statsd pushes the role's figures (*.statsd), applied on every reload.
	statsd *operator.StatsD
	// reopen reopens the files the node appends to (SIGUSR1, after
	// logrotate renamed them); nil: none.
	reopen func()
	// drain takes an edge out of service gently before stop (SIGTERM);
	// nil for other roles.
	drain func(ctx context.Context) error
	// failed receives the first error of a server goroutine; nil after a clean stop.
	failed <-chan error
	// sendState sends a new process what it starts with (SIGUSR2); nil when
	// the role sends nothing. handOff then stops serving (the new process
	// serves the same listeners), moves what the role holds per connection
	// and leaves gossip; nil for roles that are not upgraded in place.
	sendState func(c *handoff.Conn) error
	handOff   func(ctx context.Context, c *handoff.Conn) error
	// endState is the role's state as it stopped, sent with the hand-off's
	// end (nil: none): the gslb's operator state, what an operator changed
	// on a balancer after its state went (HandOffEnd).
	endState func() []byte
	// started is what the "<role> started" line says; announce logs it
	// once the node is complete (its config API included), so whoever
	// waits for the line finds every admin endpoint there.
	started []any
}

// announce logs that the node is started and serving in full.
func (n *node) announce(logger *slog.Logger) {
	logger.Info(n.role+" started", n.started...)
}

func newRegistry(withProcess bool) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(newBuildInfo())
	if withProcess {
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	return reg
}

// serve runs each server on its listener and reports the first failure.
func serve(servers map[net.Listener]func(net.Listener) error) <-chan error {
	failed := make(chan error, len(servers))
	for ln, srv := range servers {
		go func() {
			if err := srv(ln); err != nil && !errors.Is(err, net.ErrClosed) {
				failed <- fmt.Errorf("serve %s: %w", ln.Addr(), err)
			}
		}()
	}
	return failed
}

// adminURL is the admin address a node announces in gossip: the bound
// address, with an unspecified host (0.0.0.0) replaced by one peers reach.
func adminURL(ln net.Listener) string {
	return "http://" + configs.ReachableAddr(ln.Addr().String())
}

// listenPair opens a role's data and admin listeners, inherited from the
// process this one replaces when there is one (proc may be nil: the demo).
func listenPair(proc *handoff.Process, role, data, admin string) (net.Listener, net.Listener, error) {
	dl, err := proc.Listen(role+"-data", "tcp", data)
	if err != nil {
		return nil, nil, fmt.Errorf("listen on %s: %w (is another ringlb running? change the listen address)", data, err)
	}
	al, err := proc.Listen(role+"-admin", "tcp", admin)
	if err != nil {
		dl.Close()
		return nil, nil, fmt.Errorf("listen on admin %s: %w (change the admin address)", admin, err)
	}
	return dl, al, nil
}

// startEdge starts an edge: relay listeners bound first, then gossip, then
// ownership, then serving. Balancers may route to the edge as soon as it is
// in gossip; those connections wait in the listen backlog the few
// milliseconds until the edge checks ownership, so no session starts here
// unchecked.
func startEdge(ctx context.Context, cfg *configs.Config, logger *slog.Logger, processMetrics bool, _ *handoff.Process) (*node, error) {
	name := cfg.Cluster.Name
	logger = logger.With("node", name, "role", "edge")
	// Edges are not upgraded in place (their sessions live in the process):
	// they drain, and their listeners are their own.
	dl, al, err := listenPair(nil, "edge", cfg.Edge.Listen, cfg.Edge.Admin.Listen)
	if err != nil {
		return nil, err
	}
	reg := newRegistry(processMetrics)
	srv := sessions.New(cfg.Edge, name, cfg.Cluster.Region, logger, reg)

	advertise := cfg.Edge.AdvertiseURL
	if u, err := url.Parse(advertise); err == nil && u.Port() == "0" {
		// Listening on port 0 (tests): advertise the port actually bound.
		u.Host = net.JoinHostPort(u.Hostname(), strconv.Itoa(dl.Addr().(*net.TCPAddr).Port))
		advertise = u.String()
	}
	meta := health.Meta{
		Role: health.RoleEdge, Region: cfg.Cluster.Region, URL: advertise,
		Admin: adminURL(al), Weight: cfg.Edge.Weight, State: health.StateAlive,
	}
	m, err := health.Join(ctx, cfg.Cluster, meta, logger)
	if err != nil {
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(shutdownCtx)
		dl.Close()
		al.Close()
		return nil, fmt.Errorf("join cluster: %w", err)
	}
	srv.UseKeyring(m.Keyring())
	reg.MustRegister(m.Collector())
	var ringEdges func() int
	if cfg.Edge.Ownership != configs.OwnershipNone {
		srv.UseCluster(m, ringConfig(cfg.Cluster.Ring, logger))
		ringEdges = srv.RingEdges
	}
	failed := serve(map[net.Listener]func(net.Listener) error{dl: srv.Serve, al: srv.ServeAdmin})
	statsd := operator.NewStatsD(name, "ringlb_edge_", reg, logger)
	statsd.Apply(statsdSection("edge", cfg)) // nothing without edge.statsd.address
	// The edge's load in its gossip metadata: gslb nodes steer by it.
	stopLoad := srv.PublishLoad(m, sessions.LoadInterval)
	// A drain (admin POST /api/drain, SIGTERM) is announced in gossip, so
	// balancers take the edge out of the ring for new sessions.
	announced := make(chan struct{})
	stopAnnounce := make(chan struct{})
	go func() {
		defer close(announced)
		select {
		case <-srv.Draining():
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			if err := m.UpdateMeta(ctx, func(meta *health.Meta) { meta.State = health.StateDraining }); err != nil {
				logger.Warn("could not announce draining", "err", err)
			}
		case <-stopAnnounce:
		}
	}()
	return &node{
		reg:  reg,
		name: name, role: "edge", listen: dl.Addr().String(), admin: al.Addr().String(), member: m, failed: failed,
		started: []any{"listen", dl.Addr().String(), "admin", al.Addr().String(), "gossip", m.Addr(),
			"max_connections", cfg.Edge.MaxConnections},
		ringEdges: ringEdges,
		drain:     srv.Drain,
		op:        srv.Operator(),
		statsd:    statsd,
		reload: func(next *configs.Config) error {
			if err := srv.Reload(next.Edge); err != nil {
				return err
			}
			return m.ReloadKeys(next.Cluster)
		},
		stop: func(ctx context.Context) error {
			close(stopAnnounce)
			<-announced
			stopLoad()
			// Leave the ring first (draining in gossip) so balancers stop
			// sending new sessions, then close the relay (1012), then leave.
			// The gossip update is best effort: with no peers left (the
			// whole demo stopping) nobody is there to acknowledge it.
			drainCtx, cancel := context.WithTimeout(ctx, time.Second)
			if err := m.UpdateMeta(drainCtx, func(meta *health.Meta) { meta.State = health.StateDraining }); err != nil {
				logger.Warn("could not announce draining before stopping", "err", err)
			}
			cancel()
			err := srv.Shutdown(ctx)
			statsd.Close() // pushes the final figures
			return errors.Join(err, m.Shutdown(ctx))
		},
	}, nil
}

// startBalancer starts a balancer whose ring follows the alive, non-draining
// edges of its gossip cluster plus the static edges of its config. Started by
// an upgrade (proc has a parent), it serves the inherited listeners with the
// old process's ring, takes over its tunnels, and joins gossip once the old
// process has left it.
func startBalancer(ctx context.Context, cfg *configs.Config, logger *slog.Logger, processMetrics bool, proc *handoff.Process) (n *node, err error) {
	name := cfg.Cluster.Name
	logger = logger.With("node", name, "role", "balancer")
	r := ring.New(ringConfig(cfg.Cluster.Ring, logger))
	reg := newRegistry(processMetrics)
	b, err := balancer.New(cfg.Balancer, name, r, logger, reg)
	if err != nil {
		return nil, err
	}
	statsd := operator.NewStatsD(name, "ringlb_balancer_", reg, logger)
	var m *health.Membership
	var opened []net.Listener
	defer func() {
		if err != nil { // undo what was started, in reverse
			stopCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			b.Shutdown(stopCtx)
			if m != nil {
				m.Shutdown(stopCtx)
			}
			for _, ln := range opened {
				ln.Close()
			}
		}
	}()
	// Bound (or inherited, in an upgrade) before joining, so the admin
	// address is announced: dashboards of other balancers read this one's
	// audit log and history. Nothing is served before the ring follows the
	// cluster.
	dl, al, err := listenPair(proc, "balancer", cfg.Balancer.Listen, cfg.Balancer.Admin.Listen)
	if err != nil {
		return nil, err
	}
	opened = append(opened, dl, al)
	meta := health.Meta{Role: health.RoleBalancer, Region: cfg.Cluster.Region, Admin: adminURL(al), State: health.StateAlive}
	parent := proc.Parent()
	if parent == nil {
		if m, err = joinGossip(ctx, proc, cfg.Cluster, meta, logger, nil); err != nil {
			return nil, fmt.Errorf("join cluster: %w", err)
		}
		b.SetCluster(m)
		reg.MustRegister(m.Collector())
		if err := b.FollowCluster(); err != nil {
			return nil, err
		}
	}
	servers := map[net.Listener]func(net.Listener) error{dl: b.Serve, al: b.ServeAdmin}
	if from := cfg.Balancer.TLS.RedirectFrom; from != "" {
		rl, err := proc.Listen("balancer-redirect", "tcp", from)
		if err != nil {
			return nil, fmt.Errorf("listen on balancer.tls.redirect_from %s: %w", from, err)
		}
		opened = append(opened, rl)
		servers[rl] = b.ServeRedirect
	}
	var peers []string
	if parent != nil {
		if peers, err = parent.RecvPeers(); err != nil {
			return nil, fmt.Errorf("take over: %w", err)
		}
		if err := b.ReceiveState(parent); err != nil {
			return nil, fmt.Errorf("take over: %w", err)
		}
	}
	failed := serve(servers)
	if parent != nil {
		ended := func(state []byte) {
			if err := b.TakeHandOffEnd(state); err != nil {
				logger.Error("take over: the old process's operator state not applied", "err", err)
			}
		}
		if m, err = takeOver(ctx, proc, cfg, peers, meta, logger, b.TakeOver, ended); err != nil {
			return nil, fmt.Errorf("join cluster: %w", err)
		}
		b.SetCluster(m)
		reg.MustRegister(m.Collector())
		if err := b.FollowCluster(); err != nil {
			return nil, err
		}
	}
	statsd.Apply(statsdSection("balancer", cfg))
	return &node{
		reg:  reg,
		name: name, role: "balancer", listen: dl.Addr().String(), admin: al.Addr().String(), member: m, failed: failed,
		started: []any{"listen", dl.Addr().String(), "admin", al.Addr().String(), "gossip", m.Addr(),
			"max_connections", cfg.Balancer.Limits.MaxConnections},
		ringEdges: func() int { return r.Snapshot().Len() },
		op:        b.Operator(),
		statsd:    statsd,
		reopen:    b.ReopenAccessLog,
		stop: func(ctx context.Context) error {
			err := errors.Join(b.Shutdown(ctx), m.Shutdown(ctx))
			statsd.Close() // pushes the final figures
			return err
		},
		reload: func(next *configs.Config) error {
			if err := b.Reload(next.Balancer); err != nil {
				return err
			}
			return m.ReloadKeys(next.Cluster)
		},
		sendState: func(c *handoff.Conn) error {
			if err := c.SendPeers(gossipPeers(m)); err != nil {
				return err
			}
			return b.SendState(c)
		},
		endState: b.HandOffEnd,
		handOff: func(ctx context.Context, c *handoff.Conn) error {
			res, err := b.HandOff(ctx, c)
			logger.Info("tunnels handed over", "moved", res.Moved, "kept", res.Kept, "closed", res.Closed, "pending_bytes", res.PendingBytes,
				"stopping", res.Stopping.Round(time.Millisecond), "moving", res.Moving.Round(time.Millisecond))
			if res.Kept > 0 {
				logger.Info("TLS tunnels cannot move to another process: they run here until they end or the shutdown timeout", "tunnels", res.Kept)
			}
			// Leaving gossip frees the gossip port for the new process.
			statsd.Close()
			return errors.Join(err, m.Shutdown(ctx))
		},
	}, nil
}

// maxSeedPeers is how many of its live gossip peers an old process gives
// the new one to join through (they become seeds it keeps checking).
const maxSeedPeers = 5

// gossipPeers returns the gossip addresses of up to maxSeedPeers live
// members other than this node.
func gossipPeers(m *health.Membership) []string {
	var out []string
	for _, n := range m.Members() {
		if n.Addr != "" && n.Addr != m.Addr() && len(out) < maxSeedPeers {
			out = append(out, n.Addr)
		}
	}
	return out
}

// takeOverGossipWait bounds the wait for the old process to leave gossip
// after it handed over.
const takeOverGossipWait = 60 * time.Second

// takeOver is the end of a new process's start: it is ready (serving the
// inherited listeners), takes what the old process hands over (adopt; nil
// when the role takes nothing), waits until the old one has left gossip —
// its end carries the role's state as it stopped, for ended (nil: the role
// takes none) —, joins in its place on the gossip sockets it passed on, and
// tells the old one it may exit.
func takeOver(ctx context.Context, proc *handoff.Process, cfg *configs.Config, peers []string, meta health.Meta, logger *slog.Logger, adopt func(*handoff.Conn) (int, error), ended func(state []byte)) (*health.Membership, error) {
	parent := proc.Parent()
	// Claimed before ready: ready closes what this process did not take.
	socks := inheritedGossip(proc, logger)
	if err := parent.Ready(); err != nil {
		if socks != nil {
			socks.Close()
		}
		return nil, fmt.Errorf("tell the old process we are ready: %w", err)
	}
	taken := 0
	if adopt != nil {
		var err error
		if taken, err = adopt(parent); err != nil {
			logger.Error("take over: the hand-off broke off; carrying what arrived", "tunnels", taken, "err", err)
		}
	}
	if state, err := parent.WaitEnd(takeOverGossipWait); err != nil {
		logger.Warn("take over: the old process did not say it left gossip; joining anyway", "err", err)
	} else if len(state) > 0 && ended != nil {
		ended(state)
	}
	// The old process's live peers join the seeds: whichever answers first
	// gives the whole membership at once, also when this node is the seed
	// the others joined through (none of its own seeds may be up).
	cluster := cfg.Cluster
	cluster.Join = slices.Clone(cluster.Join)
	for _, p := range peers {
		if !slices.Contains(cluster.Join, p) {
			cluster.Join = append(cluster.Join, p)
		}
	}
	m, err := joinGossip(ctx, proc, cluster, meta, logger, socks)
	if err != nil && socks != nil {
		logger.Warn("take over: the inherited gossip sockets do not serve the config; binding the port anew", "err", err)
	}
	// Without sockets passed on (an earlier release's process, or a
	// gossip address changed), the old process's sockets close as it
	// leaves: a moment's retry covers the kernel releasing the port.
	for attempt := 0; err != nil && attempt < 50; attempt++ {
		if m, err = joinGossip(ctx, proc, cluster, meta, logger, nil); err != nil {
			time.Sleep(100 * time.Millisecond)
		}
	}
	if err != nil {
		return nil, err
	}
	if err := parent.Done(taken); err != nil {
		logger.Warn("take over: could not tell the old process we are done", "err", err)
	}
	parent.Close()
	logger.Info("took over from the old process", "tunnels", taken)
	return m, nil
}

// inheritedGossip returns the gossip sockets the old process passed on, nil
// when it passed none (an earlier release) or they are not sockets.
func inheritedGossip(proc *handoff.Process, logger *slog.Logger) *health.GossipSockets {
	files := proc.Inherited("gossip")
	if len(files) == 0 {
		return nil
	}
	var socks health.GossipSockets
	var err error
	if len(files) == 2 {
		var ln net.Listener
		var pc net.PacketConn
		if ln, err = net.FileListener(files[0]); err == nil {
			socks.TCP, _ = ln.(*net.TCPListener)
			if pc, err = net.FilePacketConn(files[1]); err == nil {
				socks.UDP, _ = pc.(*net.UDPConn)
			} else {
				ln.Close()
			}
		}
	}
	if err != nil || socks.TCP == nil || socks.UDP == nil {
		logger.Warn("take over: the gossip sockets passed on are not a TCP listener and a UDP socket; binding the port anew", "sockets", len(files), "err", err)
		if socks.TCP != nil {
			socks.TCP.Close()
		}
		if socks.UDP != nil {
			socks.UDP.Close()
		}
		return nil
	}
	return &socks
}

// joinGossip joins the cluster on socks (nil: cfg.Bind, bound now) and
// records the gossip sockets for a later upgrade's new process, which then
// gossips on the same port without its ever being free for another user
// of the host to bind.
func joinGossip(ctx context.Context, proc *handoff.Process, cfg configs.Cluster, meta health.Meta, logger *slog.Logger, socks *health.GossipSockets) (*health.Membership, error) {
	m, err := health.JoinOn(ctx, cfg, meta, logger, socks)
	if err != nil {
		return nil, err
	}
	s := m.Sockets()
	if err := proc.AddAll("gossip", []syscall.Conn{s.TCP, s.UDP}); err != nil {
		logger.Warn("the gossip sockets cannot be passed to an upgrade's new process; it will bind the port after this one leaves it", "err", err)
	}
	return m, nil
}

// ringConfig is the ring of cluster.ring: balancers route by it, edges
// check ownership on it. Its circle is held to the bound the static edges
// are checked against, gossip's edges counted too; logger says when it
// scales their weights to fit.
func ringConfig(c configs.Ring, logger *slog.Logger) ring.Config {
	return ring.Config{Partitions: c.Partitions, Replication: c.Replication, Load: c.Load, MaxPoints: configs.MaxRingPoints, Logger: logger}
}

// startGSLB starts the authoritative DNS server: DNS first, then its admin
// port, then gossip (as role gslb, so dashboards see it). Started by an
// upgrade, it serves the inherited DNS sockets (the same sockets: no query
// finds the port closed) and joins gossip once the old process has left.
func startGSLB(ctx context.Context, cfg *configs.Config, logger *slog.Logger, processMetrics bool, proc *handoff.Process) (*node, error) {
	name := cfg.Cluster.Name
	logger = logger.With("node", name, "role", "gslb")
	reg := newRegistry(processMetrics)
	s, err := gslb.New(cfg.GSLB, name, logger, reg)
	if err != nil {
		return nil, err
	}
	statsd := operator.NewStatsD(name, "ringlb_gslb_", reg, logger)
	// Started by an upgrade, the old process's operator state (overrides,
	// latches, the serials' offset) holds from the first answer: this
	// process answers on the same sockets at once, and the hand-off's end
	// brings it again, as the old process stopped, only once that one
	// has. Without it (no cluster.state_dir to restore from), a member an
	// operator had removed was answered meanwhile.
	if st := proc.StartState(); len(st) > 0 {
		if err := s.TakeHandOffState(st); err != nil {
			logger.Error("start: the old process's operator state not applied", "err", err)
		}
	}
	proc.SetStartState(s.HandOffState)
	pcs, ln, err := dnsSockets(proc, cfg.GSLB)
	if err != nil {
		return nil, err
	}
	if err := s.StartOn(ctx, pcs, ln); err != nil {
		for _, pc := range pcs {
			pc.Close()
		}
		ln.Close()
		return nil, err
	}
	shutdown := func() {
		c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Shutdown(c)
	}
	al, err := proc.Listen("gslb-admin", "tcp", cfg.GSLB.Admin.Listen)
	if err != nil {
		shutdown()
		return nil, fmt.Errorf("listen on admin %s: %w (change gslb.admin.listen)", cfg.GSLB.Admin.Listen, err)
	}
	failed := serve(map[net.Listener]func(net.Listener) error{al: s.ServeAdmin})
	meta := health.Meta{Role: health.RoleGSLB, Region: cfg.Cluster.Region, Admin: adminURL(al), State: health.StateAlive}
	var m *health.Membership
	if parent := proc.Parent(); parent != nil {
		var peers []string
		if peers, err = parent.RecvPeers(); err == nil {
			m, err = takeOver(ctx, proc, cfg, peers, meta, logger, nil, func(state []byte) {
				// As the start state said: the old process changed
				// nothing since, and a change an operator made here
				// meanwhile (this admin port served beside the old one)
				// stands — the state's whole, taken again, undid it.
				// Else what it changed is merged in, key by key.
				if bytes.Equal(state, proc.StartState()) {
					return
				}
				if err := s.TakeHandOffEnd(proc.StartState(), state); err != nil {
					logger.Error("take over: the old process's operator state not applied", "err", err)
				}
			})
		}
	} else {
		m, err = joinGossip(ctx, proc, cfg.Cluster, meta, logger, nil)
	}
	if err != nil {
		shutdown()
		al.Close()
		return nil, fmt.Errorf("join cluster: %w", err)
	}
	// Several gslb nodes (the domain's NS set) agree on members' health:
	// down when most of the nodes probing them see them down.
	s.UsePeers(m)
	reg.MustRegister(m.Collector())
	statsd.Apply(statsdSection("gslb", cfg))
	return &node{
		reg:  reg,
		name: name, role: "gslb", listen: s.Addr(), admin: al.Addr().String(), member: m, failed: failed,
		started: []any{"dns", s.Addr(), "admin", al.Addr().String(), "gossip", m.Addr()},
		op:      s.Operator(),
		statsd:  statsd,
		stop: func(ctx context.Context) error {
			err := errors.Join(s.Shutdown(ctx), m.Shutdown(ctx))
			statsd.Close() // pushes the final figures
			return err
		},
		reload: func(next *configs.Config) error {
			// The section first: a refused one (a restart-only field
			// changed) leaves the keyring as it was too.
			if err := s.Reload(next.GSLB); err != nil {
				return err
			}
			return m.ReloadKeys(next.Cluster)
		},
		sendState: func(c *handoff.Conn) error { return c.SendPeers(gossipPeers(m)) },
		// Taken once this process has stopped answering: what an operator
		// changed during the upgrade is in it.
		endState: s.HandOffState,
		// The new process reads the same DNS sockets already. Stopping
		// here answers every query this one has read: TCP connections
		// accepted here get a moment to send their query first.
		handOff: func(ctx context.Context, _ *handoff.Conn) error {
			s.StopAccepting()
			grace, cancel := context.WithTimeout(ctx, tcpQueryGrace)
			defer cancel()
			// The admin port's requests in flight get the same grace:
			// one trickled there (the login form is open to anyone) held
			// the old process in gossip, and the upgrade's answer, for
			// the whole stop's bound.
			adminErr := s.StopAdmin(grace)
			<-grace.Done()
			statsd.Close()
			return errors.Join(adminErr, s.Shutdown(ctx), m.Shutdown(ctx))
		},
	}, nil
}

// adminStartPart names the admin plane's part of an upgrade's start state.
const adminStartPart = "admin"

// tcpQueryGrace is how long an old gslb process, which no longer accepts,
// keeps reading the TCP connections it accepted before it closes them.
const tcpQueryGrace = 500 * time.Millisecond

// dnsSockets returns the gslb's UDP sockets and TCP listener: inherited from
// the process this one replaces, else bound now (and kept for a later
// upgrade).
func dnsSockets(proc *handoff.Process, cfg configs.GSLB) ([]net.PacketConn, net.Listener, error) {
	if files := proc.Inherited("gslb-udp"); len(files) > 0 {
		var pcs []net.PacketConn
		for _, f := range files {
			pc, err := net.FilePacketConn(f)
			if err != nil {
				for _, pc := range pcs {
					pc.Close()
				}
				return nil, nil, fmt.Errorf("inherited DNS socket: %w", err)
			}
			pcs = append(pcs, pc)
		}
		ln, err := proc.Listen("gslb-tcp", "tcp", cfg.Listen)
		if err != nil {
			for _, pc := range pcs {
				pc.Close()
			}
			return nil, nil, err
		}
		return pcs, ln, nil
	}
	pcs, ln, err := gslb.Bind(cfg.Listen, cfg.UDPWorkers)
	if err != nil {
		return nil, nil, err
	}
	socks := make([]syscall.Conn, 0, len(pcs))
	for _, pc := range pcs {
		socks = append(socks, pc.(syscall.Conn))
	}
	err = errors.Join(proc.AddAll("gslb-udp", socks), proc.Add("gslb-tcp", ln.(syscall.Conn)))
	if err != nil {
		for _, pc := range pcs {
			pc.Close()
		}
		ln.Close()
		return nil, nil, err
	}
	return pcs, ln, nil
}

// useOpenFileLimit raises the soft open-file limit to the hard one and logs
// the result; a node runs on whatever it gets.
func useOpenFileLimit(logger *slog.Logger) {
	soft, hard, err := raiseOpenFileLimit()
	if err != nil {
		logger.Warn("open-file limit not raised", "soft", soft, "hard", hard, "err", err)
		return
	}
	logger.Info("open-file limit", "soft", soft, "hard", hard)
	// Read before the config (the limits derive from it): said for the
	// default admin port; `ringlb check` says it for the file's.
	if soft > 0 && configs.OpenFilesTooFew(int(soft), configs.DefaultAdminMaxConnections) {
		logger.Warn(configs.OpenFilesTooFewAdvice, "soft", soft)
	}
}

// useMemoryLimit sets the Go runtime's memory limit to 90 % of the
// cgroup's (a container's, a systemd unit's MemoryMax) unless GOMEMLIMIT
// sets one (AUTOMEMLIMIT=off leaves it unset, AUTOMEMLIMIT=0.8 takes
// another share), logs it, and watches the process's memory against it
// (acceptguard.Process: near it, listeners refuse and edges shed instead
// of the process growing until the kernel kills it) until stop. What the
// cgroup's other processes hold — the old or new process of a hitless
// upgrade, both in the unit's cgroup — comes out of it meanwhile.
func useMemoryLimit(logger *slog.Logger) (stop func()) {
	limit, ok, err := setMemoryLimit()
	if err != nil {
		logger.Warn("memory limit not derived from the cgroup", "err", err)
	}
	if !ok {
		logger.Info("memory limit: none; set GOMEMLIMIT, or run under a cgroup memory limit, for the node to refuse and shed near it instead of being killed")
		return func() {}
	}
	logger.Info("memory limit", "bytes", limit, "low_at", acceptguard.LowMemoryMark(limit))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		acceptguard.Process.WatchWithCgroup(ctx, logger)
	}()
	return func() {
		cancel()
		<-done
	}
}

// setMemoryLimit sets the runtime's memory limit as useMemoryLimit says
// and returns it; ok is false when there is none.
func setMemoryLimit() (limit int64, ok bool, err error) {
	limit, err = memlimit.Set(memlimit.WithProvider(memlimit.FromCgroup), memlimit.WithRatio(acceptguard.CgroupShare))
	return limit, limit > 0 && limit != math.MaxInt64, err
}

// upgradeRefused is what a balancer or gslb whose binary an upgrade would
// refuse (handoff's rule) is told: at its start (logged) and by `ringlb
// check` of its file (printed), not only when the upgrade comes.
const upgradeRefused = "an upgrade of this node would be refused"

// stopTimeout bounds a balancer's or a gslb's graceful stop; an edge's is
// its drain_timeout and edgeStopMargin for what follows the drain (leaving
// gossip, closing its listeners). -shutdown-timeout overrides either.
const (
	stopTimeout    = 10 * time.Second
	edgeStopMargin = 5 * time.Second
)

// upgradedInPlace says whether role is one SIGUSR2 upgrades (an edge
// drains and restarts instead).
func upgradedInPlace(role string) bool { return role == "balancer" || role == "gslb" }

// runRole is the body of `ringlb edge`, `ringlb balancer` and `ringlb gslb`.
func runRole(ctx context.Context, role string, args []string, stderr io.Writer) error {
	signals := "SIGINT or SIGTERM drains it and stops it (in a cluster its sessions are handed on to the other\nedges; alone, they have drain_timeout to end); SIGHUP reloads the config file."
	article := "an"
	if upgradedInPlace(role) {
		signals = "SIGINT or SIGTERM stops it gracefully; SIGHUP reloads the config file; SIGUSR2\nreplaces the process with the binary at its path without closing a connection (ringlb upgrade)."
		article = "a"
	}
	fs := flagSet(role, fmt.Sprintf("Runs %s %s node from a config file (only its cluster and %s sections are read).\n%s\nIt exits 0 once stopped so, 1 when it cannot start, fails, or does not stop within -shutdown-timeout.", article, role, role, signals), stderr)
	path := fs.String("config", "", "config file (required)")
	stopDefault := fmt.Sprintf("(default %s)", stopTimeout)
	if role == "edge" {
		stopDefault = fmt.Sprintf("(default: edge.drain_timeout + %s)", edgeStopMargin)
	}
	grace := fs.Duration("shutdown-timeout", 0, "bound on graceful stop "+stopDefault)
	// Only a node upgraded in place has a hand-off: an edge's sessions
	// live in its process, which drains and restarts instead.
	var upgradeDir string
	upgradeTimeout := handoff.DefaultReadyTimeout
	if upgradedInPlace(role) {
		fs.StringVar(&upgradeDir, "upgrade-dir", "", "private directory (0700) of the hand-off socket for upgrades (default $RUNTIME_DIRECTORY, else $TMPDIR/ringlb-UID)")
		fs.DurationVar(&upgradeTimeout, "upgrade-timeout", handoff.DefaultReadyTimeout, "how long a new process started by an upgrade has to be ready; then it is killed and this one keeps serving")
	}
	// The log never makes the node wait (logOutput); what is queued when
	// the node stops is written before the process exits, for a bounded time.
	logs := newLogOutput(stderr)
	defer logs.closeWithin(logFlushTimeout)
	newLogger := logFlags(fs, logs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *path == "" {
		return usageError(fs, "-config is required (start from configs/examples/%s.yaml)", role)
	}
	logger, level, err := newLogger()
	if err != nil {
		return err
	}
	logs.reportTo(logger)
	// First: a process started by an upgrade takes its listeners and
	// reports to the old process, which waits to hear why if this one
	// cannot take over.
	proc, err := handoff.Start(handoff.Options{Dir: upgradeDir, ReadyTimeout: upgradeTimeout, Stderr: logs, Logger: logger})
	if err != nil {
		return err
	}
	defer proc.Close()
	refuse := func(err error) error {
		if parent := proc.Parent(); parent != nil {
			parent.Fail(err)
			parent.Close()
		}
		return err
	}
	useOpenFileLimit(logger) // before Load: the connection limits derive from it
	defer useMemoryLimit(logger)()
	cfg, started, err := configs.LoadFile(*path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return refuse(fmt.Errorf("%w\n(give -config the path of a config file: start from configs/examples/%s.yaml, or run ringlb demo, which needs none)", err, role))
	case err != nil:
		return refuse(fmt.Errorf("%w\n(run ringlb check -config %s)", err, *path))
	}
	if err := cfg.RunAs(role); err != nil {
		return refuse(fmt.Errorf("%w\n(the file has no %s section: the node would run on its defaults; add one)", err, role))
	}
	level.use(cfg.Cluster.LogLevel)
	cfg.LogWarnings(logger)
	if upgradedInPlace(role) {
		if err := proc.CheckBinary(); err != nil {
			logger.Warn(upgradeRefused, "err", err)
		}
	}
	start, timeout := startBalancer, stopTimeout
	switch role {
	case "edge":
		start, timeout = startEdge, cfg.Edge.DrainTimeout.D()+edgeStopMargin
	case "gslb":
		start = startGSLB
	}
	if *grace > 0 {
		timeout = *grace
	}
	drainFor := time.Duration(0)
	if role == "edge" {
		drainFor = cfg.Edge.DrainTimeout.D()
	}
	if role == "gslb" && cfg.GSLB.UDPWorkers > 0 && os.Getenv("GOMAXPROCS") == "" {
		// gslb.udp_workers is the CPUs the DNS server uses, as NSD's
		// server-count: with an idle second P the Go scheduler spins
		// looking for work on a core another process (a load generator,
		// a balancer) needs.
		runtime.GOMAXPROCS(cfg.GSLB.UDPWorkers)
	}
	// Signals are caught before the node says it is ready: a reload or an
	// upgrade sent right after READY must not find them ignored.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	usr2 := make(chan os.Signal, 1)
	signal.Notify(usr2, syscall.SIGUSR2)
	defer signal.Stop(usr2)
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	defer signal.Stop(usr1)
	upgraded := proc.Parent() != nil
	// Without a state_dir, the generated admin password stays the one the
	// operator was given across upgrades, and those logged in stay so.
	cfg.Balancer.Admin.Inherited = proc.StartPart(adminStartPart)
	cfg.GSLB.Admin.Inherited = cfg.Balancer.Admin.Inherited
	n, err := start(ctx, cfg, logger, true, proc)
	if err != nil {
		return refuse(err)
	}
	proc.SetStartPart(adminStartPart, n.op.HandOff)
	n.reg.MustRegister(logs.collector())
	// SIGHUP and PUT /api/config reload through the same file, one at a time.
	file := operator.NewConfigFile(*path, role, cfg, started, n.apply(level), logger)
	if role == "gslb" {
		file.UseCheck(func(c *configs.Config) ([]error, error) { return gslb.Check(c.GSLB) }) // as ringlb check
	}
	n.op.UseConfigFile(file)
	n.announce(logger)
	notifySystemd(logger, upgraded)
	var runErr error
wait:
	for {
		select {
		case <-ctx.Done():
			logger.Info("stopping", "node", n.name, "timeout", timeout)
			break wait
		case runErr = <-n.failed:
			break wait
		case <-hup:
			reloadNode(file, logger)
		case <-usr1:
			if n.reopen != nil {
				n.reopen()
				logger.Info("SIGUSR1: log files reopened", "node", n.name)
			}
		case <-usr2:
			if n.handOff == nil {
				logger.Warn("SIGUSR2: an edge is not upgraded in place; drain it and restart it (SIGTERM)", "node", n.name)
				continue
			}
			if handed, err := upgradeNode(ctx, n, proc, file, hup, upgradeDir, timeout, logger); handed {
				return err
			}
		}
	}
	if n.drain != nil && runErr == nil {
		// SIGTERM: refuse new sessions, let the live ones end for up to
		// drain_timeout; stop then closes the rest with 1012.
		logger.Info("draining before stop", "node", n.name, "drain_timeout", drainFor)
		drainCtx, cancel := context.WithTimeout(context.Background(), drainFor)
		n.drain(drainCtx)
		cancel()
	}
	stopCtx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return errors.Join(runErr, n.stop(stopCtx))
}

func runEdgeCmd(ctx context.Context, args []string, _, stderr io.Writer) error {
	return runRole(ctx, "edge", args, stderr)
}

func runBalancerCmd(ctx context.Context, args []string, _, stderr io.Writer) error {
	return runRole(ctx, "balancer", args, stderr)
}

// reloadNode re-reads the config file and applies it (SIGHUP). A file with
// errors, or a change that needs a restart, changes nothing and is logged,
// the fields that need a restart named in restart.
func reloadNode(file *operator.ConfigFile, logger *slog.Logger) {
	if err := file.Reload(); err != nil {
		logger.Error("SIGHUP: reload failed, still running the previous configuration", "config", file.Path(), "err", err,
			"restart", configs.RestartFields(err))
		return
	}
	logger.Info("SIGHUP: configuration reloaded", "config", file.Path())
}

// apply makes the node run next instead of running (SIGHUP, PUT
// /api/config): nothing when a cluster field read only at start changed,
// else the role's section and keyring, its StatsD push and the log level.
func (n *node) apply(level *logLevel) func(running, next *configs.Config) error {
	return func(running, next *configs.Config) error {
		if err := running.Cluster.RestartChanges(next.Cluster); err != nil {
			return fmt.Errorf("reload refused, nothing changed: %w", err)
		}
		if err := n.reload(next); err != nil {
			return err
		}
		n.statsd.Apply(statsdSection(n.role, next))
		level.use(next.Cluster.LogLevel)
		return nil
	}
}

// statsdSection is the StatsD push of role's section.
func statsdSection(role string, cfg *configs.Config) configs.StatsD {
	switch role {
	case "edge":
		return cfg.Edge.StatsD
	case "gslb":
		return cfg.GSLB.StatsD
	}
	return cfg.Balancer.StatsD
}

func runGSLBCmd(ctx context.Context, args []string, _, stderr io.Writer) error {
	return runRole(ctx, "gslb", args, stderr)
}
