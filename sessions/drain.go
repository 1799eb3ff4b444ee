package sessions

import (
	"context"
	"time"
)

// has reports whether a session of key is live here.
func (h *hub) has(key []byte) bool {
	sh := h.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	_, ok := sh.sessions[string(key)]
	return ok
}

// Draining is closed when a drain (or Shutdown) begins; the caller announces
// it (gossip state draining) so balancers stop sending new sessions here.
func (s *Server) Draining() <-chan struct{} { return s.drainStarted }

// Drain takes the edge out of service gently: new sessions are refused (503
// before the upgrade; /healthz answers 503) while participants may still
// join the sessions that are live here, so none splits. With a cluster
// (UseCluster) new sessions get 421 to their owner instead, and every
// session is handed on to its new owner at once (history and epoch), its
// participants closed with 1012 to resume there. It returns nil when
// every connection has ended; when ctx is done first, it asks the rest to
// close with 1012 (service restart: ringlb.v1 clients reconnect through a
// balancer and resume) and returns ctx.Err() without waiting for their close
// handshakes (Shutdown waits). Safe to call more than once.
func (s *Server) Drain(ctx context.Context) error {
	s.beginDrain()
	if o := s.hub.owner.Load(); o != nil {
		s.handOffOnce.Do(func() { o.handOff(ctx) })
	}
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		if _, conns := s.Stats(); conns == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			s.closeAll("edge draining")
			return ctx.Err()
		case <-t.C:
		}
	}
}

func (s *Server) beginDrain() {
	s.drainOnce.Do(func() {
		s.draining.Store(true)
		close(s.drainStarted)
		s.log.Info("draining: refusing new sessions")
	})
}

// startDrain runs a drain bounded by drain_timeout in the background (admin
// POST /api/drain); whoever is still connected then is closed with 1012 so
// the drain ends whatever the clients do. Shutdown cancels and waits for it.
func (s *Server) startDrain() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing || s.drainCancel != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.DrainTimeout.D())
	s.drainCancel = cancel
	s.drainDone.Add(1)
	go func() {
		defer s.drainDone.Done()
		defer cancel()
		_ = s.Drain(ctx) // closes the rest with 1012 at drain_timeout
	}()
}

// closeAll asks every connection to close with 1012 (service restart).
func (s *Server) closeAll(reason string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	for p := range s.conns {
		p.stop(closeServiceRestart, reason)
	}
	return len(s.conns)
}
