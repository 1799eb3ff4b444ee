package sessions

import (
	"bytes"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/ringlb/ringlb/configs"
)

// admit decides, before the upgrade, who a request joins as: it verifies
// the join token (edge.auth; token, nil without one) and reads
// ?resume=SEQ&epoch=E. On refusal it has written the response (401, 400)
// and returns false.
//
// Refusing with an HTTP status before the upgrade (not a close code after)
// keeps an unauthenticated client from holding a WebSocket at all.
func (s *Server) admit(ctx *fasthttp.RequestCtx, key []byte) (joinInfo, *heldToken, bool) {
	info := joinInfo{id: newParticipantID()}
	info.user = info.id

	args := ctx.QueryArgs()
	if args.Has("resume") {
		after, err := strconv.ParseUint(string(args.Peek("resume")), 10, 64)
		if err != nil {
			ctx.Error("bad request: resume must be a sequence number\n", fasthttp.StatusBadRequest)
			return info, nil, false
		}
		info.resumeSet, info.resumeAfter, info.resumeEpoch = true, after, string(args.Peek("epoch"))
	}

	token := bearerToken(&ctx.Request.Header)
	if len(token) == 0 {
		token = args.Peek("token")
	}
	auth := s.auth.Load()
	if len(token) > 0 && auth.configured {
		return s.admitToken(ctx, auth, key, string(token), info)
	}
	// No token, or no auth configured: then a token (possibly meant for
	// the balancer's stickiness) is not a claim of anything here.
	switch auth.anonymous {
	case configs.AnonymousEditor:
	case configs.AnonymousViewer:
		info.viewer = true
	default:
		unauthorized(ctx, "join token required")
		return info, nil, false
	}
	return info, nil, true
}

// admitToken admits a join with token or refuses it (401): a token that
// does not verify is never taken for no token, whatever edge.auth.anonymous
// says, or a viewer could turn its link into an anonymous editor's by
// spoiling its token.
func (s *Server) admitToken(ctx *fasthttp.RequestCtx, auth *authState, key []byte, token string, info joinInfo) (joinInfo, *heldToken, bool) {
	if auth.secret == nil {
		// The configured secret could not be read (New logged it): fail
		// closed.
		unauthorized(ctx, "join tokens cannot be verified")
		return info, nil, false
	}
	held, err := auth.verify(token, time.Now(), s.cfg.Auth.MaxTokenTTL.D())
	if err != nil {
		unauthorized(ctx, err.Error())
		return info, nil, false
	}
	// A token admits to one session only; otherwise a viewer token of
	// one session would open every other.
	if held.Session != string(key) {
		unauthorized(ctx, "token is for another session")
		return info, nil, false
	}
	if s.revocations.revoked(&held.TokenClaims) {
		s.metrics.revokedRefused.Inc()
		unauthorized(ctx, "token revoked")
		return info, nil, false
	}
	info.user, info.shared, info.viewer = held.User, true, held.Role == RoleViewer
	return info, held, true
}

var bearerPrefix = []byte("Bearer ")

// bearerToken returns the token of an Authorization: Bearer header, if any.
func bearerToken(h *fasthttp.RequestHeader) []byte {
	v := h.Peek(fasthttp.HeaderAuthorization)
	if len(v) > len(bearerPrefix) && bytes.EqualFold(v[:len(bearerPrefix)], bearerPrefix) {
		return bytes.TrimSpace(v[len(bearerPrefix):])
	}
	return nil
}

func unauthorized(ctx *fasthttp.RequestCtx, reason string) {
	ctx.Error("unauthorized: "+reason+"\n", fasthttp.StatusUnauthorized)
	ctx.Response.Header.Set(fasthttp.HeaderWWWAuthenticate, `Bearer realm="ringlb"`)
}
