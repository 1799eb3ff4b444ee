package sessions

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ringlb/ringlb/health/operator"
)

// metrics are the edge's Prometheus metrics, named by the wire contract
// (docs/CONTRACT.md, "Metrics"). All of them are declared here and nowhere else.
type metrics struct {
	// sessionsActive counts sessions with at least one participant: the
	// gauge, and the sessions an edge announces as its load (load.go).
	sessionsActive atomic.Int64
	// connectionsActive counts upgraded WebSocket connections, from the 101
	// until the socket is closed (joined or not).
	connectionsActive prometheus.Gauge
	// usersOnline counts distinct users joined to a session: a token's user
	// once however many connections; without a token, each connection.
	usersOnline prometheus.Gauge
	// sessionsHosted counts sessions ever created on this edge.
	sessionsHosted prometheus.Counter
	// messages counts data frames received from participants and relayed.
	messages prometheus.Counter
	// slowConsumers counts participants closed with 1013 because their send
	// queue was full.
	slowConsumers prometheus.Counter
	// fanoutPaced counts the times a participant's reader waited for its
	// fan-out's pace (pace.go), fanoutPacedSeconds how long in all.
	fanoutPaced, fanoutPacedSeconds prometheus.Counter
	// joinersPaced counts the messages of participants in their first
	// second held back for their session's joiners' bucket (pace.go),
	// those dropped when their connection closed meanwhile included.
	joinersPaced prometheus.Counter
	// presencePaced counts join and leave events held back for their
	// session's next presence batch (presence.go); presenceCoalesced,
	// those that cancelled: a participant's join and leave within one
	// interval.
	presencePaced, presenceCoalesced prometheus.Counter
	// misdirected counts joins answered 421 (the session belongs to
	// another edge: pinned, claimed, moved, or the ring's owner).
	misdirected prometheus.Counter
	// handedOff counts sessions a drain handed to another edge.
	handedOff prometheus.Counter
	// peerRefused counts edge-to-edge requests (claims, hand-offs) refused
	// because they were not signed by the edge they name.
	peerRefused prometheus.Counter
	// lag is the time from reading a frame to having written it to one
	// recipient, observed once per recipient.
	lag prometheus.Histogram
	// tokensRevoked counts revocations recorded (POST /api/tokens/revoke,
	// user or nonce).
	tokensRevoked prometheus.Counter
	// revocationsHeld is the revocations held in memory (bounded: revoke.go).
	revocationsHeld prometheus.Gauge
	// revokedRefused counts joins refused (401) and in-band token refreshes
	// refused (error frame forbidden) for a revoked token;
	// revokedClosed, connections closed with 1008 when their token was
	// revoked.
	revokedRefused, revokedClosed prometheus.Counter
	// lapsedExpired and lapsedRotated count connections closed with 1008
	// because their token lapsed (lapse.go): it expired, or the secret
	// that signed it stopped being accepted.
	lapsedExpired, lapsedRotated prometheus.Counter
	// unseated counts anonymous viewers closed with 1008 to give a token
	// holder their seat (seats.go).
	unseated prometheus.Counter
	// acceptErrors counts failed accepts on the data port (EMFILE, ENFILE,
	// ENOBUFS...), each retried after a backoff.
	acceptErrors prometheus.Counter
	// connectionErrors counts data-port connections its HTTP server ended
	// on an error (a malformed request head).
	connectionErrors prometheus.Counter
	// incomingRefused counts connections closed 1013 because the frame
	// they announced would hold more than edge.max_incoming_bytes had left
	// free.
	incomingRefused prometheus.Counter
	// rejected counts data-port connections refused by a limit, by reason
	// (max_connections).
	rejected *prometheus.CounterVec
	// bodiesRefused counts data-port requests whose body was refused on
	// their head (bodies.go), by reason (too_large, busy).
	bodiesRefused *prometheus.CounterVec
	// skipRefused counts joins refused (503) because their X-Ringlb-Skip
	// named a set of edges beyond maxSkipSets for the ring (placement.go).
	skipRefused prometheus.Counter
	// idleForgotten counts idle sessions forgotten before their idle_grace
	// ran out, beyond edge.max_idle_sessions (idle.go).
	idleForgotten prometheus.Counter
	// Replication (replication.go, replica.go); its two gauges are
	// registered by the replicator. replicationBytes counts what streams
	// carried to replicas; promotions, copies this edge made live sessions
	// when their owner died; fencedOwners, sessions this edge gave up
	// because another took them over while this one was unreachable;
	// replicationFallbacks, replica streams turned from sync to async after
	// replication_timeout; replicationLost, seqs a promoted session skipped:
	// msgs its dead owner sequenced that never reached the replica.
	replicationBytes, promotions, fencedOwners, replicationFallbacks, replicationLost prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		connectionsActive: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ringlb_edge_connections_active",
			Help: "Open WebSocket connections on this edge.",
		}),
		usersOnline: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ringlb_edge_users_online",
			Help: "Distinct users joined to a session on this edge (a connection without a token is a user).",
		}),
		sessionsHosted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ringlb_edge_sessions_hosted_total",
			Help: "Sessions created on this edge.",
		}),
		messages: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ringlb_edge_messages_total",
			Help: "Data frames received from participants and relayed.",
		}),
		slowConsumers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ringlb_edge_slow_consumers_total",
			Help: "Participants closed with 1013 because their send queue was full.",
		}),
		fanoutPaced: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ringlb_edge_fanout_paced_total",
			Help: "Times a participant's next message was held back because its messages had made the edge send more than edge.max_fanout_bytes_per_second.",
		}),
		fanoutPacedSeconds: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ringlb_edge_fanout_paced_seconds_total",
			Help: "Time participants' next messages were held back for edge.max_fanout_bytes_per_second, in all.",
		}),
		joinersPaced: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ringlb_edge_joiners_paced_total",
			Help: "Messages of participants in their first second in a session held back because the session's newcomers together had made the edge send more than edge.max_fanout_bytes_per_second (the rate and a second's worth for each newcomer still connected); one whose connection closed while held is dropped.",
		}),
		presencePaced: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ringlb_edge_presence_paced_total",
			Help: "ringlb.v1 join and leave events held back for their session's next presence batch (a session sends presence at most every 100ms).",
		}),
		presenceCoalesced: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ringlb_edge_presence_coalesced_total",
			Help: "Held join and leave events that cancelled: a participant joined and left within one presence interval (2 each), its join told to nobody, its leave only to those whose welcome listed it.",
		}),
		misdirected: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ringlb_edge_misdirected_total",
			Help: "Joins answered 421 + X-Ringlb-Owner: the session belongs to another edge.",
		}),
		handedOff: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ringlb_edge_sessions_handed_off_total",
			Help: "Sessions a drain handed to their new edge.",
		}),
		peerRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ringlb_edge_peer_requests_refused_total",
			Help: "Edge-to-edge requests (claims, hand-offs, replication streams) refused: not signed with the cluster's key by the edge they name (a hand-off's head: not signed by an edge, before its body is read); and joins refused with 403: their X-Ringlb-Skip not signed by a balancer for this edge.",
		}),
		lag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "ringlb_edge_lag_seconds",
			Help:    "Time from reading a frame to writing it to one recipient.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}),
		tokensRevoked: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ringlb_edge_tokens_revoked_total",
			Help: "Token revocations recorded on this edge (POST /api/tokens/revoke, by user or nonce).",
		}),
		revocationsHeld: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ringlb_edge_token_revocations",
			Help: "Token revocations held in memory; each is dropped once every token it refuses has expired.",
		}),
		revokedRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ringlb_edge_revoked_joins_refused_total",
			Help: "Joins refused with 401, and in-band token refreshes refused with an error frame, because their token was revoked.",
		}),
		revokedClosed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ringlb_edge_revoked_connections_closed_total",
			Help: "Connections closed with 1008 because their token was revoked.",
		}),
		unseated: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ringlb_edge_unseated_viewers_total",
			Help: "Anonymous viewers closed with 1008 to give a token holder their seat: the session was full, or spoke the other mode with only anonymous viewers ever in it.",
		}),
		acceptErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ringlb_edge_accept_errors_total",
			Help: "Failed accepts on the data port (out of file descriptors or kernel memory), each retried after a backoff.",
		}),
		incomingRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ringlb_edge_incoming_refused_total",
			Help: "Connections closed with 1013: the frame they announced would have held more of edge.max_incoming_bytes than it had left free, or their message past 16 KiB while the process was low on memory.",
		}),
		connectionErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ringlb_edge_connection_errors_total",
			Help: "Data-port connections its HTTP server ended on an error (a malformed request head, one over the head buffer); logged at most once per 10 s.",
		}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ringlb_edge_rejected_connections_total",
			Help: "Data-port connections refused by a limit, by reason: at accept (max_connections, memory: answered 503 and closed), or beyond its address's share of what no balancer forwarded (direct_per_ip: a WebSocket join answered 429 and closed; a connection not yet served ended at the cap to make room, a request on it answered 503; an idle connection closed after its answer).",
		}, []string{"reason"}),
		bodiesRefused: operator.NewCounterVec(prometheus.CounterOpts{
			Name: "ringlb_edge_request_bodies_refused_total",
			Help: "Data-port requests refused on their head for the body they announced: over their path's limit (too_large: 413), a hand-off while every hand-off slot was taken (busy: 503), while low on memory (memory: 503), or whose head signature already took a slot (replayed: 503), by reason.",
		}, "reason", bodyTooLarge, bodyBusy, bodyMemory, bodyReplayed),
		skipRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ringlb_edge_skip_sets_refused_total",
			Help: "Joins refused with 503 because their X-Ringlb-Skip named a set of edges beyond the sets one ring version builds rings for.",
		}),
		idleForgotten: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ringlb_edge_idle_sessions_forgotten_total",
			Help: "Sessions without participants forgotten before their idle_grace ran out: the oldest idle beyond edge.max_idle_sessions.",
		}),
		replicationBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ringlb_edge_replication_bytes_total",
			Help: "Bytes this edge streamed to its sessions' replicas.",
		}),
		promotions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ringlb_edge_replication_promotions_total",
			Help: "Sessions this edge took over from a dead owner, from its replica copy (same epoch and seq).",
		}),
		fencedOwners: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ringlb_edge_replication_fenced_total",
			Help: "Sessions this edge gave up because another edge took them over (a higher term) while this one was unreachable.",
		}),
		replicationFallbacks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ringlb_edge_replication_fallbacks_total",
			Help: "Replica streams turned from sync to async: the replica did not acknowledge within replication_timeout.",
		}),
		replicationLost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ringlb_edge_replication_lost_total",
			Help: "Seqs a promoted session skipped: msgs its dead owner sequenced that never reached this edge (async, or sync fallen back).",
		}),
	}
	lapsed := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ringlb_edge_lapsed_tokens_closed_total",
		Help: "Connections closed with 1008 because the join token they joined with lapsed, by reason: it expired (expired), or the secret that signed it was rotated out (secret_rotated).",
	}, []string{"reason"})
	m.lapsedExpired, m.lapsedRotated = lapsed.WithLabelValues("expired"), lapsed.WithLabelValues("secret_rotated")
	active := counterGauge("ringlb_edge_sessions_active", "Sessions with at least one participant on this edge.", &m.sessionsActive)
	for _, c := range []prometheus.Collector{active, m.connectionsActive, m.usersOnline, m.sessionsHosted, m.messages, m.slowConsumers, m.fanoutPaced, m.fanoutPacedSeconds, m.joinersPaced, m.presencePaced, m.presenceCoalesced, m.misdirected, m.handedOff, m.peerRefused, m.lag,
		m.tokensRevoked, m.revocationsHeld, m.revokedRefused, m.revokedClosed, lapsed, m.unseated, m.acceptErrors, m.connectionErrors, m.incomingRefused, m.rejected, m.bodiesRefused, m.skipRefused, m.idleForgotten,
		m.replicationBytes, m.promotions, m.fencedOwners, m.replicationFallbacks, m.replicationLost} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// boundGauges are the gauges of the edge's edge-wide bounds, each read
// from the counter the bound keeps.
func boundGauges(s *Server) []prometheus.Collector {
	return []prometheus.Collector{
		counterGauge("ringlb_edge_history_bytes",
			"Bytes of msgs held in every ringlb.v1 history on this edge (idle sessions and replica copies included), bounded by edge.history.total_bytes.",
			&s.hub.budget.used),
		counterGauge("ringlb_edge_idle_sessions",
			"ringlb.v1 sessions kept without participants for idle_grace (so their clients can resume), at most edge.max_idle_sessions.",
			&s.hub.idle.count),
		counterGauge("ringlb_edge_queued_bytes",
			"Bytes waiting in every connection's send queue on this edge, a frame counted once per queue (a resume's replay: each msg until it is written), bounded by edge.max_queued_bytes (beyond it a connection with frames waiting is closed as a slow consumer).",
			&s.sendBudget.used),
		counterGauge("ringlb_edge_incoming_bytes",
			"Bytes of the messages every connection is in the middle of receiving (announced lengths), bounded by edge.max_incoming_bytes (a connection whose frame would hold more than it has left free is closed 1013).",
			&s.incoming.used),
	}
}

// counterGauge is a gauge that reads v when scraped.
func counterGauge(name, help string, v *atomic.Int64) prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 { return float64(v.Load()) })
}
