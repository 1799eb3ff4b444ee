package configs

// The wire contract's names: what clients, operators and tests rely on, and
// what balancers and edges must agree on byte for byte. Each is written
// here once and used by every role; extend the list, never rename an entry
// (docs/CONTRACT.md describes each).

// Cookies.
const (
	// CookieAdmin is the admin ports' login session (operator.Logins): a
	// credential for them alone. Cookies go by host, not port, so a
	// browser sends it to the data port of the same name too: a balancer
	// neither forwards it to a backend nor lets a backend set it, and no
	// key source may read it.
	CookieAdmin = "ringlb_admin"
	// CookieAdminHost is CookieAdmin's name when the login came over
	// TLS, taken before it and over TLS alone: a browser takes a __Host- cookie only from a
	// secure page of the very host, Secure, Path=/ and without Domain, so
	// neither a sibling host name nor a man in the middle of a plain-HTTP
	// page can plant one (cookie tossing). A credential like CookieAdmin,
	// held to the same rules on data ports.
	CookieAdminHost = "__Host-" + CookieAdmin
)

// HTTP headers.
const (
	// HeaderKey is the stickiness key's header and cookie name; a balancer
	// always forwards the key it routed with in this header, whatever its
	// source, so the edge checks ownership with the very key hashed.
	HeaderKey = "ctstickiness"
	// HeaderEdge names the edge on every response from it, the 101 included.
	HeaderEdge = "X-Ringlb-Edge"
	// HeaderOwner names the edge a session belongs to, on a 421.
	HeaderOwner = "X-Ringlb-Owner"
	// HeaderSkip lists, on an upgrade a balancer sends to a fallback edge,
	// the edges it could not reach (comma-separated): the edge checks
	// ownership on the ring without them. Balancers strip it from clients.
	HeaderSkip = "X-Ringlb-Skip"
	// HeaderOwnerURL, on a claim's 409 naming a third edge, is that
	// edge's data address as the answering edge knows it: a hint for a
	// claimer that has not heard of that edge yet, which asks it itself
	// (its answer is signed; the hint is not: a claimer announcing
	// peer_signing 9 is given the address in the signed body too, and
	// reads it there).
	HeaderOwnerURL = "X-Ringlb-Owner-URL"
	// HeaderClaimBy names the edge making a session claim.
	HeaderClaimBy = "X-Ringlb-Claim-By"
	// HeaderPeer carries a node's signature on a request to another node
	// (health.Keyring).
	HeaderPeer = "X-Ringlb-Peer"
	// HeaderPeerHead carries a node's signature on the head of a request
	// whose body the receiver reads only in a slot it has few of (a
	// hand-off): over the request line and the Content-Length it
	// announces (health.Keyring.SignHead), so the receiver knows the
	// sender before it allots the body anything. HeaderPeer, over the
	// body, is checked once the body has come.
	HeaderPeerHead = "X-Ringlb-Peer-Head"
	// HeaderPeerAnswer carries a node's signature on its answer to another
	// node's signed read of its admin API: over the request's MAC, the
	// status and the body (health.Keyring.SignAnswer), so the reader takes
	// no answer altered on the way, nor one made for another request.
	HeaderPeerAnswer = "X-Ringlb-Peer-Answer"
	// HeaderAdmin marks an admin request as an admin client's, not another
	// web site's (operator.Access).
	HeaderAdmin = "X-Ringlb-Admin"
	// HeaderOnBehalf names, on a change a balancer's dashboard forwards to
	// another node with the operator's token, the logged-in user it was
	// made for: an annotation of the audit record, never a credential.
	HeaderOnBehalf = "X-Ringlb-On-Behalf"
	// HeaderStarting marks a balancer's 503 on PathHealth while it is
	// still starting (its live-session table not in yet, within
	// balancer.session_table.startup_wait; requests wait for it): a gslb
	// monitor takes that answer for no finding, neither up nor down, so a
	// region does not fail over while its balancer starts. Its value says
	// what the balancer waits for.
	HeaderStarting = "X-Ringlb-Starting"
	// HeaderRequestID carries a request's id from the client (kept) or the
	// balancer (generated), so edge logs match the balancer's.
	HeaderRequestID = "X-Request-Id"
)

// Paths.
const (
	// PathReserved is ringlb's own namespace on data ports: a balancer
	// proxies nothing under it but PathHealth.
	PathReserved = "/_ringlb/"
	// PathHealth on a balancer's data port: 200 while an edge is routable,
	// else 503 (keepalived, the gslb's monitors, load balancers in front).
	PathHealth = "/_ringlb/health"
	// PathClaim and PathHandoff are edge-to-edge (signed, never proxied).
	PathClaim   = "/_ringlb/claim"
	PathHandoff = "/_ringlb/handoff"
	// ArgClaimGone on a claim names the edges the claimer took for dead
	// (nothing listens there), comma-separated: the asked edge disregards
	// their claims and hand-over marks, as a join's HeaderSkip.
	ArgClaimGone = "gone"
	// ArgClaimHanded on a draining edge's claim names the edge it handed
	// the key to: the asked edge records that edge's claim instead (the
	// edge balancers fail over to when the drained one is gone).
	ArgClaimHanded = "handed"
	// ArgClaimHandedAt, with ArgClaimHanded, is that edge's data address
	// as the draining edge knows it: the asked edge gives it with its
	// answers naming that edge (HeaderOwnerURL) while it has not heard of
	// it itself.
	ArgClaimHandedAt = "at"
	// ArgClaimNonce on a claim is a random value of the claimer's, in
	// what it signs: no two claims share a signature, and the asked edge
	// takes each signature once (a copy seen on the wire records nothing).
	ArgClaimNonce = "n"
	// PathReplicate is edge-to-edge too: a signed WebSocket upgrade that
	// carries an owner's session records to its replica (sessions/).
	PathReplicate = "/_ringlb/replicate"
	// PathRelay is the edge's WebSocket relay endpoint.
	PathRelay = "/ws"
	// PathWhoami answers {"edge","region"} on an edge.
	PathWhoami = "/whoami"
)

// ProtocolV1 is the WebSocket subprotocol of JSON envelopes with sequence
// numbers, history and resume; without it a session is in raw mode.
const ProtocolV1 = "ringlb.v1"

// WebSocket close codes an edge sends.
const (
	CloseTooBig         = 1009 // a frame over edge.max_message_bytes
	ClosePolicy         = 1008 // auth, limits, a revoked token
	CloseServiceRestart = 1012 // drain or restart: reconnect and resume
	CloseTryAgainLater  = 1013 // overload, slow consumer
)
