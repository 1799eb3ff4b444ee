package configs

// Connection limits derived from the open-file limit (RLIMIT_NOFILE), for
// balancer.limits.max_connections and edge.max_connections when the file
// leaves them 0. Every accepted connection holds a descriptor, so a limit
// above what the descriptors allow is no limit at all: the process meets
// EMFILE instead of answering 503. The limit read is this process's, at
// load time: a node reads it after raising its soft limit to the hard one
// (cmd/ringlb does at start), and `ringlb check` derives from its own.

// FDReserveMin is the fewest descriptors kept for a node's own work (DNS,
// probes, dials to edges and peers, logs, state files) out of the
// connection limit; with larger limits FDReserveShare of them is kept
// instead. The reserve keeps, besides, a descriptor for each connection
// the admin port and gossip may hold at their caps (fdReserve).
const (
	FDReserveMin   = 64
	FDReserveShare = 0.05
)

// MaxGossipStreams caps the inbound gossip streams open at once in each of
// the two pools health counts them in, strangers' and members'
// (health/streams.go says why); the reserve keeps a descriptor for each.
const MaxGossipStreams = 64

// assumedOpenFiles stands in for the open-file limit where the platform has
// none (OpenFileLimit reports false).
const assumedOpenFiles = 65536

// MaxConnections bounds every connection limit a node takes, configured
// or derived (an unlimited RLIMIT_NOFILE would otherwise overflow it): so
// also what an edge may say it holds (its users online).
const MaxConnections = 10_000_000

// DefaultBalancerMaxConnections is balancer.limits.max_connections when
// the file leaves it 0: the descriptors left after the reserve (with
// adminConns, the node's admin.max_connections), halved, because every
// tunnel holds two (the client's and the edge's).
func DefaultBalancerMaxConnections(adminConns int) int {
	return maxConnectionsFor(OpenFiles(), 2, adminConns)
}

// DefaultEdgeMaxConnections is edge.max_connections when the file leaves it
// 0: the descriptors left after the reserve (with adminConns, the node's
// admin.max_connections), one per connection.
func DefaultEdgeMaxConnections(adminConns int) int {
	return maxConnectionsFor(OpenFiles(), 1, adminConns)
}

// DefaultGSLBMaxTCPConnections is gslb.max_tcp_connections when the file
// leaves it 0: 1000 (DNS over TCP is the fallback of truncated answers and
// transfers, a few connections per resolver), or the descriptors left after
// the reserve (with adminConns, the node's admin.max_connections) when
// there are fewer.
func DefaultGSLBMaxTCPConnections(adminConns int) int {
	return min(1000, maxConnectionsFor(OpenFiles(), 1, adminConns))
}

// DefaultGSLBMaxTCPConnectionsPerIP is gslb.max_tcp_connections_per_ip
// when the file leaves it 0: a sixteenth of max_tcp_connections (at least
// 1), so that it follows the total wherever that comes from.
func DefaultGSLBMaxTCPConnectionsPerIP(maxTCPConnections int) int {
	return max(1, maxTCPConnections/16)
}

// OpenFiles is the open-file limit the derived defaults start from: the
// process's soft RLIMIT_NOFILE, or an assumed 65536 where there is none.
func OpenFiles() int {
	n, ok := OpenFileLimit()
	if !ok {
		return assumedOpenFiles
	}
	return int(min(n, 1<<40))
}

// maxConnectionsFor is the connection limit that leaves the reserve of
// limit descriptors free (fdReserve) when each connection holds
// fdsPerConn. A limit too small for the reserve leaves one connection:
// the admin port and gossip alone may then hold every descriptor, and
// lowering admin.max_connections, or raising the limit, makes room.
func maxConnectionsFor(limit, fdsPerConn, adminConns int) int {
	return min(max((limit-fdReserve(limit, adminConns))/fdsPerConn, 1), MaxConnections)
}

// OpenFilesTooFew says whether limit open files leave no room for
// connections beside the reserve with an admin port of adminConns: the
// derived connection limits are then 1 (OpenFilesTooFewAdvice).
func OpenFilesTooFew(limit, adminConns int) bool {
	return limit <= fdReserve(limit, adminConns)
}

// OpenFilesTooFewAdvice says what OpenFilesTooFew means and what to do.
const OpenFilesTooFewAdvice = "open-file limit too low: the connection limits derived from it are 1 (the admin port and gossip keep the rest); raise it (LimitNOFILE=, ulimit -n) or set the limits and admin.max_connections"

// fdReserve is the descriptors of limit kept out of a derived connection
// limit: what the admin port (adminConns, its max_connections, each held
// up to its request timeout) and gossip's inbound streams (both pools) may
// hold at their caps, which anyone who reaches those ports can fill, and
// the node's own work. Counted in the own work alone (64 up to a limit of
// 1280), a data port at its limit and an admin port at its cap took the
// process to EMFILE, and its claims, hand-offs and replication dials
// failed until the admin connections closed.
func fdReserve(limit, adminConns int) int {
	own := max(FDReserveMin, int(float64(limit)*FDReserveShare))
	return own + adminConns + 2*MaxGossipStreams
}
