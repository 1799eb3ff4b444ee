package sessions

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ringlb/ringlb/configs"
)

// Roles a join token grants.
const (
	// RoleEditor may send messages.
	RoleEditor = "editor"
	// RoleViewer receives everything but may not send: its msg frames are
	// refused with an error frame, never relayed.
	RoleViewer = "viewer"
)

// Sentinel errors of VerifyToken and MintToken; a 401 names which.
var (
	ErrTokenMalformed = errors.New("token malformed")
	ErrTokenSignature = errors.New("token signature invalid")
	ErrTokenExpired   = errors.New("token expired")
	ErrTokenClaims    = errors.New("token claims invalid")
)

// maxTokenLength bounds what VerifyToken looks at, before any decoding: a
// token arrives in a query string or header from anyone.
const maxTokenLength = 2048

// maxUserLength bounds a token's user (and a revoked user name).
const maxUserLength = 256

// nonceBytes is a token nonce's size: 96 random bits make two tokens'
// nonces collide (and one revocation hit both) with odds below 2^-40 even
// after 2^28 tokens.
const nonceBytes = 12

// tokenClockSkew is how far in the future a token's issue time may lie:
// the clocks of the minting host and the edge differ a little. Revocations
// reach that far ahead too (revoke.go): a token minted before one may say
// it was issued up to this much after it.
const tokenClockSkew = time.Minute

// TokenClaims is what a join token binds: one session key, one user, one
// role, from IssuedAt until Expires, under a nonce that names this token.
type TokenClaims struct {
	Session string // the session key (ctstickiness) the token admits to
	User    string // counted once in ringlb_edge_users_online however many tabs
	Role    string // RoleEditor or RoleViewer
	// Nonce is 96 random bits, base64url (16 characters), drawn by
	// MintToken: it names this one token, for revocation (POST
	// /api/tokens/revoke nonce=N).
	Nonce string
	// IssuedAt is when the token was minted (whole seconds): a revocation
	// of User refuses the tokens issued at or before it, by a clock up to
	// tokenClockSkew ahead (revoke.go).
	IssuedAt time.Time
	// Expires: from then on the token is refused (401), and a participant
	// that joined with it is closed (lapse.go). Expires − IssuedAt is at
	// most max_token_ttl.
	Expires time.Time
}

// tokenPayload is the signed JSON; short names keep tokens short in URLs.
type tokenPayload struct {
	Session  string `json:"s"`
	User     string `json:"u"`
	Role     string `json:"r"`
	Nonce    string `json:"n"`
	IssuedAt int64  `json:"iat"` // Unix seconds
	Expires  int64  `json:"exp"` // Unix seconds
}

// validate checks the claims themselves, maxTTL included; not the clock.
func (c TokenClaims) validate(maxTTL time.Duration) error {
	// Session and user follow the key rule (configs.CheckKey): both show
	// up in JSON and logs, where invalid UTF-8 would be rewritten (a token
	// for it could never match) and control characters forge lines.
	if err := configs.CheckKey([]byte(c.Session), maxKeyLength); err != nil {
		return fmt.Errorf("%w: session: %v", ErrTokenClaims, err)
	}
	if err := checkUser(c.User); err != nil {
		return fmt.Errorf("%w: %v", ErrTokenClaims, err)
	}
	switch {
	case c.Role != RoleEditor && c.Role != RoleViewer:
		return fmt.Errorf("%w: role must be %s or %s, got %q", ErrTokenClaims, RoleEditor, RoleViewer, c.Role)
	case !validNonce(c.Nonce):
		return fmt.Errorf("%w: nonce must be %d random bytes, base64url", ErrTokenClaims, nonceBytes)
	case c.IssuedAt.Unix() <= 0:
		return fmt.Errorf("%w: no issue time", ErrTokenClaims)
	case c.Expires.IsZero():
		return fmt.Errorf("%w: no expiry", ErrTokenClaims)
	case !c.Expires.After(c.IssuedAt):
		return fmt.Errorf("%w: expires before it is issued", ErrTokenClaims)
	// A bounded lifetime bounds how long a user revocation must be kept
	// (revoke.go): a longer-lived token would outlive its revocation.
	case c.Expires.Sub(c.IssuedAt) > maxTTL:
		return fmt.Errorf("%w: lifetime %s is over max_token_ttl %s", ErrTokenClaims, c.Expires.Sub(c.IssuedAt), maxTTL)
	}
	return nil
}

// checkUser applies the key rule to a user name (at most 256 bytes).
func checkUser(user string) error {
	if err := configs.CheckKey([]byte(user), maxUserLength); err != nil {
		return fmt.Errorf("user: %w", err)
	}
	return nil
}

func validNonce(n string) bool {
	b, err := base64.RawURLEncoding.DecodeString(n)
	return err == nil && len(b) == nonceBytes
}

// newNonce draws a token nonce.
func newNonce() string {
	var b [nonceBytes]byte
	_, _ = rand.Read(b[:]) // never fails since Go 1.24
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// MintToken signs claims with secret (HMAC-SHA256) and returns the token
// and the claims it carries. It draws the nonce (a given one is an error:
// a reused nonce would make one revocation hit two tokens); a zero
// IssuedAt is now; times are whole seconds. The lifetime (Expires −
// IssuedAt) must be at most maxTTL, the edges' edge.auth.max_token_ttl.
// The token is base64url(JSON claims) "." base64url(MAC), safe in a query
// string and in an Authorization: Bearer header.
func MintToken(secret []byte, claims TokenClaims, maxTTL time.Duration) (string, TokenClaims, error) {
	if len(secret) == 0 {
		return "", TokenClaims{}, errors.New("mint token: empty secret")
	}
	if claims.Nonce != "" {
		return "", TokenClaims{}, errors.New("mint token: the nonce is drawn by MintToken, not given")
	}
	claims.Nonce = newNonce()
	if claims.IssuedAt.IsZero() {
		claims.IssuedAt = time.Now()
	}
	claims.IssuedAt, claims.Expires = time.Unix(claims.IssuedAt.Unix(), 0), time.Unix(claims.Expires.Unix(), 0)
	if err := claims.validate(maxTTL); err != nil {
		return "", TokenClaims{}, fmt.Errorf("mint token: %w", err)
	}
	body, err := json.Marshal(tokenPayload{claims.Session, claims.User, claims.Role, claims.Nonce, claims.IssuedAt.Unix(), claims.Expires.Unix()})
	if err != nil {
		return "", TokenClaims{}, fmt.Errorf("mint token: %w", err)
	}
	payload := base64.RawURLEncoding.EncodeToString(body)
	return payload + "." + base64.RawURLEncoding.EncodeToString(tokenMAC(secret, payload)), claims, nil
}

// VerifyToken checks token's signature with secret, its claims (a nonce,
// an issue time, a lifetime of at most maxTTL) and its validity at now,
// and returns its claims. The caller checks that Session is the key being
// joined, and revocations.
func VerifyToken(secret []byte, token string, now time.Time, maxTTL time.Duration) (TokenClaims, error) {
	if len(secret) == 0 || len(token) > maxTokenLength {
		return TokenClaims{}, ErrTokenMalformed
	}
	payload, sig, ok := strings.Cut(token, ".")
	if !ok {
		return TokenClaims{}, ErrTokenMalformed
	}
	mac, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil {
		return TokenClaims{}, ErrTokenMalformed
	}
	// The MAC is checked before the payload is parsed, and in constant
	// time: nothing an attacker made up reaches the JSON decoder, and the
	// comparison leaks nothing about the right MAC.
	if !hmac.Equal(mac, tokenMAC(secret, payload)) {
		return TokenClaims{}, ErrTokenSignature
	}
	body, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil {
		return TokenClaims{}, ErrTokenMalformed
	}
	var p tokenPayload
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return TokenClaims{}, ErrTokenMalformed
	}
	c := TokenClaims{Session: p.Session, User: p.User, Role: p.Role, Nonce: p.Nonce, IssuedAt: time.Unix(p.IssuedAt, 0), Expires: time.Unix(p.Expires, 0)}
	if err := c.validate(maxTTL); err != nil {
		return TokenClaims{}, err
	}
	if c.IssuedAt.After(now.Add(tokenClockSkew)) {
		return TokenClaims{}, fmt.Errorf("%w: issued in the future", ErrTokenClaims)
	}
	if !now.Before(c.Expires) {
		return TokenClaims{}, ErrTokenExpired
	}
	return c, nil
}

func tokenMAC(secret []byte, payload string) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(payload))
	return m.Sum(nil)
}

// ReadSecretFile reads an HMAC secret (edge.auth.hmac_secret_file) as
// configs.ReadJoinSecret does: the edge, its check and `ringlb token` read
// it alike.
func ReadSecretFile(path string) ([]byte, error) {
	return configs.ReadJoinSecret(path)
}
