package configs

// Connection limits derived from the open-file limit (RLIMIT_NOFILE), for
// balancer.limits.max_connections and edge.max_connections when the file
// leaves them 0. Every accepted connection holds a descriptor, so a limit
// above what the descriptors allow is no limit at all: the process meets
// EMFILE instead of answering 503. The limit read is this process's, at
// load time: a node reads it after raising its soft limit to the hard one
// (cmd/ringlb does at start), and `ringlb check` derives from its own.

// FDReserveMin is the fewest descriptors kept for a node's own work (admin
// port, gossip, DNS, probes, dials to edges, logs) out of the connection
// limit; with larger limits FDReserveShare of them is kept instead.
const (
	FDReserveMin   = 64
	FDReserveShare = 0.05
)

// assumedOpenFiles stands in for the open-file limit where the platform has
// none (OpenFileLimit reports false).
const assumedOpenFiles = 65536

// MaxConnections bounds every connection limit a node takes, configured
// or derived (an unlimited RLIMIT_NOFILE would otherwise overflow it): so
// also what an edge may say it holds (its users online).
const MaxConnections = 10_000_000

// DefaultBalancerMaxConnections is balancer.limits.max_connections when
// the file leaves it 0: the descriptors left after the reserve, halved,
// because every tunnel holds two (the client's and the edge's).
func DefaultBalancerMaxConnections() int { return maxConnectionsFor(OpenFiles(), 2) }

// DefaultEdgeMaxConnections is edge.max_connections when the file leaves it
// 0: the descriptors left after the reserve, one per connection.
func DefaultEdgeMaxConnections() int { return maxConnectionsFor(OpenFiles(), 1) }

// DefaultGSLBMaxTCPConnections is gslb.max_tcp_connections when the file
// leaves it 0: 1000 (DNS over TCP is the fallback of truncated answers and
// transfers, a few connections per resolver), or the descriptors left after
// the reserve when there are fewer.
func DefaultGSLBMaxTCPConnections() int { return min(1000, maxConnectionsFor(OpenFiles(), 1)) }

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
// limit descriptors free when each connection holds fdsPerConn.
func maxConnectionsFor(limit, fdsPerConn int) int {
	// Half of a tiny limit, so a node started with ulimit -n 64 still
	// takes some connections.
	reserve := max(min(FDReserveMin, limit/2), int(float64(limit)*FDReserveShare))
	return min(max((limit-reserve)/fdsPerConn, 1), MaxConnections)
}
