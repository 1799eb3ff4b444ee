package sessions

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	"github.com/ringlb/ringlb/configs"
)

// authState is how joins are admitted (edge.auth), swapped whole by Reload.
type authState struct {
	// configured: edge.auth.hmac_secret_file is set (tokens are checked).
	configured bool
	// secret verifies join tokens; nil when configured but unreadable
	// (every token is then refused: fail closed).
	secret []byte
	// previous is the secret before the last rotation, still accepted
	// until previousUntil (edge.auth.rotation_overlap), so tokens handed out
	// just before the rotation keep working; nil: none.
	previous      []byte
	previousUntil time.Time
	// anonymous is what a join without a token becomes (edge.auth.anonymous).
	anonymous string
}

// newAuthState reads the secret of cfg. When it differs from the secret of
// prev (the state being replaced), prev's secret stays accepted for
// cfg.RotationOverlap from now; an overlap still running is kept when the
// secret did not change.
func newAuthState(cfg configs.EdgeAuth, prev *authState, now time.Time) (*authState, error) {
	a := &authState{configured: cfg.HMACSecretFile != "", anonymous: cfg.Anonymous}
	if !a.configured {
		return a, nil
	}
	secret, err := cfg.Secret() // the one checked: configs.EdgeAuth.Secret
	if err != nil {
		return a, err
	}
	a.secret = secret
	if prev == nil || prev.secret == nil {
		return a, nil
	}
	overlap := time.Duration(0)
	if cfg.RotationOverlap != nil {
		overlap = cfg.RotationOverlap.D()
	}
	switch {
	case !bytes.Equal(prev.secret, secret):
		if overlap > 0 {
			a.previous, a.previousUntil = prev.secret, now.Add(overlap)
		}
	case prev.previous != nil && now.Before(prev.previousUntil):
		// The same secret again (another reload): the overlap runs on,
		// cut short if the new overlap is shorter (0s: a leaked secret).
		a.previous, a.previousUntil = prev.previous, prev.previousUntil
		if end := now.Add(overlap); end.Before(a.previousUntil) {
			a.previousUntil = end
		}
		if overlap == 0 {
			a.previous = nil
		}
	}
	return a, nil
}

// verify checks a join token with the secret, then, while the overlap of a
// rotation runs, with the previous one.
func (a *authState) verify(token string, now time.Time, maxTTL time.Duration) (*heldToken, error) {
	claims, err := VerifyToken(a.secret, token, now, maxTTL)
	signer := a.secret
	if errors.Is(err, ErrTokenSignature) && a.previous != nil && now.Before(a.previousUntil) {
		claims, err = VerifyToken(a.previous, token, now, maxTTL)
		signer = a.previous
	}
	if err != nil {
		return nil, err
	}
	return &heldToken{claims, signer}, nil
}

// accepts reports whether a token signed with signer still verifies at
// now: signer is the secret, or the previous one while its overlap runs.
func (a *authState) accepts(signer []byte, now time.Time) bool {
	return bytes.Equal(signer, a.secret) || a.previous != nil && now.Before(a.previousUntil) && bytes.Equal(signer, a.previous)
}

// Reload applies a new edge section without dropping a connection or a
// session:
//
//   - edge.history: the bounds of every ringlb.v1 session's history, live
//     ones included (a shorter bound trims at their next message);
//   - edge.max_idle_sessions: a lower cap forgets the oldest idle sessions
//     beyond it at once;
//   - edge.auth: the join-token secret (as the config's check read it, with
//     rotation_overlap for tokens signed with the previous one; participants
//     holding a token of a secret no longer accepted are closed with 1008,
//     lapse.go), anonymous;
//   - edge.admin.token_file, metrics_token_file: the admin tokens (as the
//     config's check read them);
//   - edge.max_direct_per_ip: for joins from now on (the participants
//     open stay, and count).
//
// (edge.statsd and cluster.log_level are the caller's: cmd/ringlb.) A
// field read only at start that changed is named in a *configs.RestartError
// and, like a secret file that does not read, changes nothing at all.
func (s *Server) Reload(cfg configs.Edge) error {
	if !cfg.Provisioned() {
		return errors.New("sessions: config not provisioned (load it with configs.Load, or call its Provision)")
	}
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	old := s.applied
	errs := []error{restartChanges(old, cfg)}
	now := time.Now()
	auth, err := newAuthState(cfg.Auth, s.auth.Load(), now)
	if err != nil {
		errs = append(errs, fmt.Errorf("edge.auth.hmac_secret_file: %w", err))
	}
	token, err := cfg.Admin.Token()
	if err != nil {
		errs = append(errs, fmt.Errorf("edge.admin.token_file: %w", err))
	}
	metrics, err := cfg.Admin.ReadMetricsToken()
	if err != nil {
		errs = append(errs, fmt.Errorf("edge.admin.metrics_token_file: %w", err))
	}
	applyUsers, err := s.op.ReloadUsers("edge", cfg.Admin)
	errs = append(errs, err)
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("reload refused, nothing changed: %w", err)
	}
	applyUsers()
	s.auth.Store(auth)
	s.adminToken.Store(&token)
	s.metricsToken.Store(&metrics)
	// Holders of a token whose secret is accepted no more go now, the
	// previous secret's when its overlap ends.
	if n := s.closeLapsedHolders(now); n > 0 {
		s.log.Info("closed participants whose join token's secret was rotated out", "connections", n)
	}
	if s.overlapEnd != nil {
		s.overlapEnd.Stop()
		s.overlapEnd = nil
	}
	if auth.previous != nil {
		s.overlapEnd = time.AfterFunc(auth.previousUntil.Sub(now), func() {
			if n := s.closeLapsedHolders(time.Now()); n > 0 {
				s.log.Info("rotation overlap ended: closed participants holding the previous secret's tokens", "connections", n)
			}
		})
	}
	if cfg.History != old.History {
		s.hub.setHistoryBounds(cfg.History.Messages, cfg.History.Bytes)
		s.hub.budget.limit.Store(int64(cfg.History.TotalBytes))
	}
	s.hub.idle.limit.Store(int64(cfg.MaxIdleSessions))
	s.hub.trimIdle()
	s.sendBudget.limit.Store(int64(cfg.MaxQueuedBytes))
	s.incoming.limit.Store(int64(cfg.MaxIncomingBytes))
	s.fanoutRate.Store(int64(cfg.MaxFanoutBytesPerSecond))
	s.direct.SetLimits(directLimits(cfg))
	s.idleShare.per.SetLimits(directLimits(cfg))
	s.applied = cfg
	overlap := "none"
	if auth.previous != nil {
		overlap = auth.previousUntil.UTC().Format(time.RFC3339)
	}
	s.log.Info("configuration reloaded", "history_messages", cfg.History.Messages, "history_bytes", cfg.History.Bytes, "history_total_bytes", cfg.History.TotalBytes,
		"max_idle_sessions", cfg.MaxIdleSessions, "max_queued_bytes", cfg.MaxQueuedBytes, "max_incoming_bytes", cfg.MaxIncomingBytes,
		"max_fanout_bytes_per_second", cfg.MaxFanoutBytesPerSecond,
		"max_direct_per_ip", cfg.MaxDirectPerIP, "anonymous", auth.anonymous, "previous_secret_accepted_until", overlap)
	return nil
}

// restartChanges names the edge's fields read only at start: listeners and
// what is sized from them, the ring's view of the edge, per-connection and
// per-session limits, the admin plane's users and sampling, and the token
// lifetime the revocations are kept for.
func restartChanges(old, cfg configs.Edge) error {
	return errors.Join(
		configs.RestartNeeded("edge.listen", old.Listen, cfg.Listen),
		old.Admin.RestartChanges("edge", cfg.Admin),
		configs.RestartNeeded("edge.advertise_url", old.AdvertiseURL, cfg.AdvertiseURL),
		configs.RestartNeeded("edge.weight", old.Weight, cfg.Weight),
		configs.RestartNeeded("edge.ownership", old.Ownership, cfg.Ownership),
		configs.RestartNeeded("edge.max_participants", old.MaxParticipants, cfg.MaxParticipants),
		configs.RestartNeeded("edge.max_message_bytes", old.MaxMessageBytes, cfg.MaxMessageBytes),
		configs.RestartNeeded("edge.send_queue", old.SendQueue, cfg.SendQueue),
		configs.RestartNeeded("edge.max_connections", old.MaxConnections, cfg.MaxConnections),
		configs.RestartNeeded("edge.idle_grace", old.IdleGrace, cfg.IdleGrace),
		configs.RestartNeeded("edge.drain_timeout", old.DrainTimeout, cfg.DrainTimeout),
		configs.RestartNeeded("edge.auth.max_token_ttl", old.Auth.MaxTokenTTL, cfg.Auth.MaxTokenTTL),
		configs.RestartNeeded("edge.replication", old.Replication, cfg.Replication),
		configs.RestartNeeded("edge.replication_timeout", old.ReplicationTimeout, cfg.ReplicationTimeout),
	)
}

// historyBounds returns edge.history's messages and bytes as set now.
func (h *hub) historyBounds() (messages, bytes int) {
	sh := &h.shards[0] // every shard's lock is held to set them
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return h.historyMsgs, h.historyByte
}

// setHistoryBounds sets the history bounds of new sessions, of every live
// one and of every replica copy held here (a promoted copy is a session
// here, with its bounds). The hub reads its bounds under a shard lock
// (when a session or a copy is made), so they are written with every shard
// lock held, taken in order (nothing else holds two at once); each live
// session's under its own lock, which its history is only touched under;
// the copies' under the store's, taken after them.
func (h *hub) setHistoryBounds(messages, bytes int) {
	for i := range h.shards {
		h.shards[i].mu.Lock()
	}
	h.historyMsgs, h.historyByte = messages, bytes
	for i := range h.shards {
		for _, sess := range h.shards[i].sessions {
			sess.mu.Lock()
			if sess.v1 != nil {
				sess.v1.maxMessages, sess.v1.maxBytes = messages, bytes
			}
			sess.mu.Unlock()
		}
	}
	if r := h.repl.Load(); r != nil {
		r.store.setBounds(messages, bytes)
	}
	for i := range h.shards {
		h.shards[i].mu.Unlock()
	}
}
