package balancer

import (
	"crypto/tls"
	"errors"
	"fmt"
	"time"

	"github.com/ringlb/ringlb/configs"
)

// reloadable is the part of the balancer's configuration that Reload swaps
// in place: key sources and limits, the TLS certificate, the admin token and
// users.
// Everything else (listen addresses, timeouts, the request timeout and
// header bound, whether TLS is on) needs a restart.
type reloadable struct {
	cfg        configs.Balancer
	keys       *keyExtractor
	cert       *tls.Certificate // nil: no TLS
	certStamp  string           // the files' modification times and sizes before cert was read
	adminToken []byte           // empty: no token required
	// metricsToken reads /metrics only (admin.metrics_token_file; empty:
	// none).
	metricsToken []byte
	// edgeTLS is how each static edge is verified and what it is shown
	// (its tls block), by name: built here, its files read once, and
	// handed to the edge's monitor and to the edge pool alike, so what
	// the start or reload checked is what its requests and checks use.
	edgeTLS map[string]*tls.Config
	// applyUsers puts the admin users a reload read in place
	// (operator.Node.ReloadUsers); nil at start.
	applyUsers func()
}

// prepareReloadable loads the reloadable settings of a provisioned cfg (the
// certificate and token files), returning every problem.
func prepareReloadable(cfg configs.Balancer) (*reloadable, []error) {
	var errs []error
	rl := &reloadable{cfg: cfg}
	rl.keys = newKeyExtractor(cfg.Key)
	if cfg.TLS.CertFile != "" || cfg.TLS.KeyFile != "" {
		// As the config's check loaded them: read once, and stamped
		// before that read.
		rl.certStamp = cfg.TLS.PairStamp()
		cert, err := cfg.TLS.KeyPair()
		if err != nil {
			errs = append(errs, fmt.Errorf("balancer.tls: %w", err))
		}
		rl.cert = &cert
	}
	// Read here, and only here: files that do not load refuse the start or
	// the reload rather than every request to the edge, and a file swapped
	// after this read (a renewal landing mid-reload, or anyone who can
	// write there) is not what the edge's requests or checks take up
	// instead (TestEdgeTLSAppliedAsChecked).
	edgeTLS, tlsErrs := edgeTLSConfigs(cfg.Edges)
	errs = append(errs, tlsErrs...)
	rl.edgeTLS = edgeTLS
	// The tokens as the config's check read them (configs.Admin.Token).
	token, err := cfg.Admin.Token()
	if err != nil {
		errs = append(errs, fmt.Errorf("balancer.admin.token_file: %w", err))
	}
	rl.adminToken = token
	metrics, err := cfg.Admin.ReadMetricsToken()
	if err != nil {
		errs = append(errs, fmt.Errorf("balancer.admin.metrics_token_file: %w", err))
	}
	rl.metricsToken = metrics
	return rl, errs
}

// Reload applies a new configuration without dropping a connection: key
// sources, limits, the TLS certificate and key and the static edges' TLS
// files (all re-read, once: what was checked is what is applied) and the
// admin token take effect for the next request or connection; live
// tunnels and keep-alive connections go on. On any error nothing changes.
// Static edges are replaced while the ring follows the cluster
// (FollowCluster).
func (b *Balancer) Reload(cfg configs.Balancer) error {
	rl, err := b.admitReload(cfg)
	if err != nil {
		return err
	}
	b.applyReload(rl)
	return nil
}

// admitReload is a reload's check: cfg's files read and every problem
// found (nothing has changed when it fails), or the state applyReload
// puts in place. Only the access log, checked last, takes effect here.
func (b *Balancer) admitReload(cfg configs.Balancer) (*reloadable, error) {
	if !cfg.Provisioned() {
		return nil, errNotProvisioned
	}
	rl, errs := prepareReloadable(cfg)
	old := b.current.Load()
	errs = append(errs, restartChanges(old.cfg, cfg))
	if (rl.cert == nil) != (old.cert == nil) {
		errs = append(errs, configs.RestartNeeded("balancer.tls", tlsState(old.cert != nil), tlsState(rl.cert != nil)))
	}
	var err error
	rl.applyUsers, err = b.op.ReloadUsers("balancer", cfg.Admin)
	errs = append(errs, err)
	if err := errors.Join(errs...); err == nil {
		errs = append(errs, b.access.apply(cfg.AccessLog)) // last: it takes effect when it works
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("reload refused, nothing changed: %w", err)
	}
	return rl, nil
}

// applyReload puts in place what admitReload read and checked.
func (b *Balancer) applyReload(rl *reloadable) {
	cfg := rl.cfg
	b.current.Store(rl)
	if rl.applyUsers != nil {
		rl.applyUsers()
	}
	b.table.setSettings(cfg.SessionTable)
	b.setLimits(cfg.Limits)
	b.mu.Lock()
	following := b.follower != nil
	b.mu.Unlock()
	if following {
		b.reloadStatic(rl)
	}
	b.log.Info("configuration reloaded", "key_sources", cfg.Key.Sources, "tls", rl.cert != nil)
}

// reloadStatic replaces the static edges by rl's, the ring following the
// cluster (applyReload).
func (b *Balancer) reloadStatic(rl *reloadable) {
	// New monitors first, then the old ones go: a static edge in both
	// files at the same URL keeps the state its monitor settled on.
	next := newStaticEdges(rl.cfg.Edges, rl.edgeTLS, b.static.Load(), b.staticChanged, b.checkNotMade, b.log)
	if b.beforeStaticSwap != nil {
		b.beforeStaticSwap()
	}
	old := b.static.Swap(next)
	if old != nil {
		old.Close()
	}
	b.mu.Lock()
	stopped := b.follower == nil
	b.mu.Unlock()
	if stopped {
		// A shutdown stopped following since the check before and closed
		// the static edges it found, not next: left in place, next's
		// monitors probed, owned by nobody, until the process exits.
		// Whichever of the two takes next out closes it.
		if b.static.CompareAndSwap(next, nil) {
			next.Close()
		}
		return
	}
	b.saveZeroSince()
	b.rebuildRing()
	// The routes read the static edges too, whether or not the ring
	// changed (routeMembers): rebuilt before the round below.
	b.table.routesGen.Add(1)
	// A static edge at another URL is another backend under its name,
	// where the key's next participants go now: the sessions on the
	// old one move whole, their tunnels closed so their clients
	// reconnect there. Left open, they stayed on the old backend,
	// still running, beside the newcomers on the new one.
	var moved []*tunnel
	for _, e := range old.all() {
		if n, ok := next.edge(e.member.Name); ok && n.member.URL != e.member.URL {
			moved = b.table.tunnelsTo(e.member.Name, moved)
		}
	}
	if len(moved) > 0 {
		b.log.Info("static edges at another URL: their sessions move", "tunnels_closed", len(moved))
		b.table.closeTunnels(moved, closeMoved)
	}
}

// restartChanges names the fields read only at start (listeners, their
// timeouts, bounds and wrappers, the admin plane's users file path and
// sampling).
func restartChanges(old, cfg configs.Balancer) error {
	return errors.Join(
		configs.RestartNeeded("balancer.listen", old.Listen, cfg.Listen),
		old.Admin.RestartChanges("balancer", cfg.Admin),
		configs.RestartNeeded("balancer.tls.redirect_from", old.TLS.RedirectFrom, cfg.TLS.RedirectFrom),
		configs.RestartNeeded("balancer.proxy_protocol", old.ProxyProtocol, cfg.ProxyProtocol),
		configs.RestartNeeded("balancer.dial_timeout", old.DialTimeout, cfg.DialTimeout),
		configs.RestartNeeded("balancer.idle_timeout", old.IdleTimeout, cfg.IdleTimeout),
		configs.RestartNeeded("balancer.tunnel_idle_timeout", old.TunnelIdleTimeout, cfg.TunnelIdleTimeout),
		configs.RestartNeeded("balancer.tunnel_fin_timeout", old.TunnelFinTimeout, cfg.TunnelFinTimeout),
		// The data port's server and the edge pool take these at start
		// (fasthttp reads them while serving): a reload that changed them
		// was answered "reloaded" and changed nothing.
		configs.RestartNeeded("balancer.limits.request_timeout", old.Limits.RequestTimeout, cfg.Limits.RequestTimeout),
		configs.RestartNeeded("balancer.limits.max_header_bytes", old.Limits.MaxHeaderBytes, cfg.Limits.MaxHeaderBytes),
	)
}

func tlsState(on bool) string {
	if on {
		return "on"
	}
	return "off"
}

// certCheckInterval is how often the certificate files are checked for a
// change (a renewal by an ACME client): a changed pair is loaded without a
// SIGHUP.
const certCheckInterval = 5 * time.Second

// watchCertificates reloads the TLS certificate when its files change, until
// stop is closed. A pair that fails to load (caught mid-write) is retried at
// the next check; the old certificate stays in use meanwhile.
func (b *Balancer) watchCertificates(stop <-chan struct{}, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		cur := b.current.Load()
		now := configs.KeyPairStamp(cur.cfg.TLS.CertFile, cur.cfg.TLS.KeyFile)
		if now == cur.certStamp {
			continue
		}
		cert, err := configs.LoadKeyPair(cur.cfg.TLS.CertFile, cur.cfg.TLS.KeyFile)
		if err != nil {
			b.log.Warn("certificate files changed but do not load; keeping the old certificate", "err", err)
			continue
		}
		next := *cur
		next.cert, next.certStamp = &cert, now
		b.current.CompareAndSwap(cur, &next)
		b.log.Info("certificate reloaded after its files changed", "cert_file", cur.cfg.TLS.CertFile)
	}
}

// certExpiry is when the certificate in use expires, in Unix seconds; 0
// without TLS (or before the first one loaded).
func (b *Balancer) certExpiry() float64 {
	rl := b.current.Load()
	if rl == nil || rl.cert == nil || rl.cert.Leaf == nil {
		return 0
	}
	return float64(rl.cert.Leaf.NotAfter.Unix())
}
