package sessions

import (
	_ "embed"

	"github.com/valyala/fasthttp"
)

// The demo pad: a small page on the data port's "/" (so reachable through
// any balancer at "/") where every window with the same ?session= edits one
// shared text over ringlb.v1, with presence, cursors and resume after a
// reconnect. It is the client a new user tries first; its protocol use is
// described in pad/pad.js. Plain files, embedded: no build step.
var (
	//go:embed pad/index.html
	padHTML []byte
	//go:embed pad/pad.js
	padScript []byte
	//go:embed pad/pad.css
	padStyle []byte
)

// Paths of the pad's files on the data port.
const (
	padScriptPath = "/pad/pad.js"
	padStylePath  = "/pad/pad.css"
)

// servePad answers "/", padScriptPath and padStylePath.
func servePad(ctx *fasthttp.RequestCtx, path string) {
	if !getOrHead(ctx) {
		return
	}
	h := &ctx.Response.Header
	// The page runs only its own script and talks only to its own origin
	// (the WebSocket included): session text from other participants is
	// put in the page as text, and this keeps it that way even if that
	// ever slipped.
	h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
	// frame-ancestors for the browsers that predate it: a framed pad
	// could be clicked into typing for another page.
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-cache")
	switch path {
	case padScriptPath:
		ctx.SetContentType("text/javascript; charset=utf-8")
		ctx.SetBody(padScript)
	case padStylePath:
		ctx.SetContentType("text/css; charset=utf-8")
		ctx.SetBody(padStyle)
	default:
		ctx.SetContentType("text/html; charset=utf-8")
		ctx.SetBody(padHTML)
	}
}
