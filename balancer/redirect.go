package balancer

import (
	"bytes"
	"errors"
	"net"

	"github.com/valyala/fasthttp"

	"github.com/ringlb/ringlb/configs"
)

// ServeRedirect answers every request on ln with a permanent redirect to the
// same URL over HTTPS on the data port (balancer.tls.redirect_from), except
// the health path, which load balancers and the gslb may probe over plain
// HTTP. The redirect goes to balancer.tls.redirect_host when it is set,
// else to the request's Host when that is a host name or an IP address
// (configs.SplitHost); any other request gets 400. Shutdown stops it.
func (b *Balancer) ServeRedirect(ln net.Listener) error {
	_, port, _ := net.SplitHostPort(b.cfg.Listen)
	srv := &fasthttp.Server{
		Handler: func(ctx *fasthttp.RequestCtx) {
			if string(ctx.Path()) == HealthPath {
				b.serveHealth(ctx)
				return
			}
			location, err := b.redirectLocation(ctx, port)
			if err != nil {
				// Constant: nothing of the request is echoed.
				ctx.Error("bad request: "+err.Error()+"\n", fasthttp.StatusBadRequest)
				return
			}
			ctx.Response.Header.Set(fasthttp.HeaderLocation, location)
			ctx.SetStatusCode(fasthttp.StatusMovedPermanently)
		},
		// fasthttp reads a body whole before the handler, allocating
		// what its head declares at once (by default up to 4 MiB): a
		// head declaring 4 MiB, and a byte of it, held 4 MiB for
		// request_timeout (TestRedirectPortReadsNoLargeBody). The
		// redirect reads no body; a small form's is let through to its
		// 301, anything larger is refused at its head (fasthttp's 400).
		MaxRequestBodySize:    redirectMaxBody,
		ReadTimeout:           b.cfg.Limits.RequestTimeout.D(),
		WriteTimeout:          b.cfg.Limits.RequestTimeout.D(),
		IdleTimeout:           b.cfg.IdleTimeout.D(),
		NoDefaultServerHeader: true,
		CloseOnShutdown:       true,
		SecureErrorLogMessage: true,
		Logger:                b.httpLog,
	}
	if !b.register(ln) {
		return ErrClosed
	}
	b.mu.Lock()
	b.redirect = srv
	b.mu.Unlock()
	return b.served(srv.Serve(b.guardRedirect(ln)))
}

// redirectMaxBody bounds a request body on the redirect port.
const redirectMaxBody = 8 << 10

// Why a request to the redirect port gets 400 (constants: a refusal quotes
// nothing of the request).
var (
	errRedirectTarget = errors.New("the request target is neither a path nor a URL")
	errRedirectHost   = errors.New("the Host header is not a host name or an IP address, with an optional port")
)

// redirectLocation is the HTTPS URL a request to the redirect port is sent
// to: balancer.tls.redirect_host, or the request's own host, with dataPort
// (none for 443), then the request's path and query.
//
// The client's Host is the client's to choose, and behind a shared cache
// the answer it gets is served to everyone: a Host that fasthttp passes but
// is no host ("a@evil.example", whose userinfo a URL drops, leaving
// evil.example; markup; 300 bytes) must not become the Location. The path
// and query are fasthttp's parse of the target, always from "/": the raw
// target may be "*" or a whole URL (absolute form, whose host fasthttp
// reads as the Host), and appended as sent those made Locations such as
// "https://host:8443*/" or "https://host:8443http:/".
func (b *Balancer) redirectLocation(ctx *fasthttp.RequestCtx, dataPort string) (string, error) {
	// The host as the client sent it: fasthttp's ctx.Host() is its parse,
	// which drops userinfo ("a@evil.example" is evil.example there).
	hostport := string(ctx.Request.Header.Host())
	switch target := ctx.RequestURI(); {
	case len(target) > 0 && target[0] == '/':
	case absoluteTarget(target):
		// Absolute form: the target's authority is the host (RFC 9112,
		// 3.2.2), whatever the Host header says.
		authority := target[bytes.Index(target, []byte("://"))+3:]
		if end := bytes.IndexAny(authority, "/?#"); end >= 0 {
			authority = authority[:end]
		}
		hostport = string(authority)
	default:
		return "", errRedirectTarget
	}
	canonical := b.current.Load().cfg.TLS.RedirectHost
	if canonical != "" {
		hostport = canonical
	}
	host, port, err := configs.SplitHost(hostport)
	if err != nil {
		return "", errRedirectHost
	}
	// A client's port is the plain port it came in on, never the data
	// port; a configured one is the operator's word.
	if canonical == "" || port == "" {
		port = dataPort
	}
	location := "https://" + host
	if port != "" && port != "443" {
		location += ":" + port
	}
	return location + string(ctx.URI().RequestURI()), nil
}

// absoluteTarget reports whether a request target is in absolute form
// (http:// or https://, any case).
func absoluteTarget(target []byte) bool {
	for _, scheme := range [...]string{"http://", "https://"} {
		if len(target) >= len(scheme) && asciiEqualFold(target[:len(scheme)], scheme) {
			return true
		}
	}
	return false
}
