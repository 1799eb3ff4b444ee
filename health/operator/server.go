package operator

import (
	"log/slog"
	"net"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/netutil"

	"github.com/ringlb/ringlb/balancer/acceptguard"
	"github.com/ringlb/ringlb/configs"
)

// Bounds of every admin request, whatever its handler does.
const (
	// MaxRequestBody bounds any admin request's body: the largest an admin
	// endpoint takes is a config file (MaxConfigBytes). Handlers bound
	// their own bodies tighter; this one holds for a handler that forgets
	// (r.FormValue reads a multipart body of any size, to temporary files).
	MaxRequestBody = MaxConfigBytes
	// maxHeaderBytes bounds a request's head (net/http's default is
	// 1 MiB): a token, a session cookie and a browser's headers fit
	// many times over.
	maxHeaderBytes = 64 << 10
)

// NewServer is the http.Server of an admin port serving h, with the bounds
// a port anyone may reach needs: admin.RequestTimeout for reading a whole
// request (head and body: a body trickled in a byte at a time holds its
// connection no longer) and for writing the answer, and for an idle
// keep-alive connection; heads of at most 64 KiB; bodies of at most
// MaxRequestBody. Serve it on Listener(ln, admin, log).
func NewServer(h http.Handler, admin configs.Admin, log *slog.Logger) *http.Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	timeout := admin.RequestTimeout.D()
	if timeout <= 0 {
		timeout = configs.DefaultAdminRequestTimeout
	}
	return &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			r.Body = http.MaxBytesReader(w, r.Body, MaxRequestBody)
			h.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: timeout,
		ReadTimeout:       timeout,
		WriteTimeout:      timeout,
		IdleTimeout:       timeout,
		MaxHeaderBytes:    maxHeaderBytes,
		// net/http's own lines (a bad TLS handshake, a panic) go to slog.
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

// refusedPerIP answers a connection beyond its client's share: constant,
// nothing of the request read or echoed.
var refusedPerIP = acceptguard.HTTPAnswer(http.StatusTooManyRequests, "too many connections from your address to this admin port; try again shortly")

// Listener caps the connections an admin port holds open at
// admin.MaxConnections. Each is a descriptor of the process, which the
// data port and gossip share: a flood of connections to the admin port
// must not starve them. Beyond the cap, connections wait in the kernel's
// accept queue (no descriptor, no goroutine) until one closes.
//
// One client (an IPv4 address, an IPv6 /64) holds at most
// admin.MaxConnectionsPerIP of them, or it could take every slot and hold
// the operator out for as long as it keeps them open: a connection beyond
// its share is answered 429 and closed at once, counted in
// ringlb_admin_refused_connections_total (registered on reg; nil: not
// counted) and logged at most once per 10 s (acceptguard's refusal line,
// with the client's network).
func Listener(ln net.Listener, admin configs.Admin, log *slog.Logger, reg prometheus.Registerer) net.Listener {
	n := admin.MaxConnections
	if n <= 0 {
		n = configs.DefaultAdminMaxConnections
	}
	perIP := admin.MaxConnectionsPerIP
	if perIP <= 0 {
		perIP = configs.DefaultAdminMaxConnectionsPerIP
	}
	// The share is checked inside the total's Accept: a connection refused
	// never counts against the total.
	return netutil.LimitListener(acceptguard.Wrap(ln, acceptguard.Config{
		Name: "admin " + ln.Addr().String(), Logger: log,
		MaxConnsPerIP: perIP, RefusalPerIP: refusedPerIP, RefusedPerIP: refusedCounter(reg),
	}), n)
}

// refusedCounter is reg's ringlb_admin_refused_connections_total, made on
// first use (a role serves one admin port; a test may serve more on one
// registry).
func refusedCounter(reg prometheus.Registerer) prometheus.Counter {
	c := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "ringlb_admin_refused_connections_total",
		Help: "Connections to the admin port answered 429 and closed: their client (an IPv4 address, an IPv6 /64) held admin.max_connections_per_ip.",
	})
	if reg == nil {
		return c
	}
	return registered(reg, c)
}
