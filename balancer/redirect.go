package balancer

import (
	"net"
	"strings"

	"github.com/valyala/fasthttp"
)

// ServeRedirect answers every request on ln with a permanent redirect to the
// same URL over HTTPS on the data port (balancer.tls.redirect_from), except
// the health path, which load balancers and the gslb may probe over plain
// HTTP. Shutdown stops it.
func (b *Balancer) ServeRedirect(ln net.Listener) error {
	_, port, _ := net.SplitHostPort(b.cfg.Listen)
	srv := &fasthttp.Server{
		Handler: func(ctx *fasthttp.RequestCtx) {
			if string(ctx.Path()) == HealthPath {
				b.serveHealth(ctx)
				return
			}
			host := string(ctx.Host())
			if h, _, err := net.SplitHostPort(host); err == nil {
				host = h
			}
			if strings.Contains(host, ":") {
				host = "[" + host + "]" // IPv6 literal
			}
			target := "https://" + host
			if port != "" && port != "443" {
				target += ":" + port
			}
			ctx.Redirect(target+string(ctx.RequestURI()), fasthttp.StatusMovedPermanently)
		},
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
