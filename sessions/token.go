package sessions

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
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

// TokenClaims is what a join token binds: one session key, one user, one
// role, until Expires.
type TokenClaims struct {
	Session string    // the session key (ctstickiness) the token admits to
	User    string    // counted once in ringlb_edge_users_online however many tabs
	Role    string    // RoleEditor or RoleViewer
	Expires time.Time // after this the token is refused (401)
}

// tokenPayload is the signed JSON; short names keep tokens short in URLs.
type tokenPayload struct {
	Session string `json:"s"`
	User    string `json:"u"`
	Role    string `json:"r"`
	Expires int64  `json:"exp"` // Unix seconds
}

func (c TokenClaims) validate() error {
	switch {
	case c.Session == "":
		return fmt.Errorf("%w: session is empty", ErrTokenClaims)
	case len(c.Session) > maxKeyLength:
		return fmt.Errorf("%w: session longer than %d bytes", ErrTokenClaims, maxKeyLength)
	case c.User == "":
		return fmt.Errorf("%w: user is empty", ErrTokenClaims)
	case len(c.User) > 256:
		return fmt.Errorf("%w: user longer than 256 bytes", ErrTokenClaims)
	case c.Role != RoleEditor && c.Role != RoleViewer:
		return fmt.Errorf("%w: role must be %s or %s, got %q", ErrTokenClaims, RoleEditor, RoleViewer, c.Role)
	case c.Expires.IsZero():
		return fmt.Errorf("%w: no expiry", ErrTokenClaims)
	}
	return nil
}

// MintToken signs claims with secret (HMAC-SHA256). The token is
// base64url(JSON claims) "." base64url(MAC), safe in a query string and in
// an Authorization: Bearer header.
func MintToken(secret []byte, claims TokenClaims) (string, error) {
	if len(secret) == 0 {
		return "", errors.New("mint token: empty secret")
	}
	if err := claims.validate(); err != nil {
		return "", fmt.Errorf("mint token: %w", err)
	}
	body, err := json.Marshal(tokenPayload{claims.Session, claims.User, claims.Role, claims.Expires.Unix()})
	if err != nil {
		return "", fmt.Errorf("mint token: %w", err)
	}
	payload := base64.RawURLEncoding.EncodeToString(body)
	return payload + "." + base64.RawURLEncoding.EncodeToString(tokenMAC(secret, payload)), nil
}

// VerifyToken checks token's signature with secret and its expiry against
// now, and returns its claims. The caller checks that Session is the key
// being joined.
func VerifyToken(secret []byte, token string, now time.Time) (TokenClaims, error) {
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
	c := TokenClaims{Session: p.Session, User: p.User, Role: p.Role, Expires: time.Unix(p.Expires, 0)}
	if err := c.validate(); err != nil {
		return TokenClaims{}, err
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

// ReadSecretFile reads an HMAC secret (edge.auth.hmac_secret_file): the
// file's bytes, surrounding whitespace trimmed, at least 16 bytes. The edge
// and `ringlb token` read it alike.
func ReadSecretFile(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read hmac secret: %w", err)
	}
	b = bytes.TrimSpace(b)
	// A short secret makes tokens guessable offline from one leaked token.
	if len(b) < 16 {
		return nil, fmt.Errorf("hmac secret %s: %d bytes, need at least 16", path, len(b))
	}
	return b, nil
}
