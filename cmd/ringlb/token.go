package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/ringlb/ringlb/sessions"
)

func runToken(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flagSet("token", "Mints a signed join token for one session, user and role (edge.auth), and prints it.\nPass it to the edge as query parameter token or header Authorization: Bearer.", stderr)
	secretFile := fs.String("secret-file", "", "HMAC secret file, the edge's edge.auth.hmac_secret_file (required)")
	session := fs.String("session", "", "session key the token admits to (required)")
	user := fs.String("user", "", "user the token names (required)")
	role := fs.String("role", sessions.RoleEditor, "editor (may send) or viewer (receives only)")
	ttl := fs.Duration("ttl", time.Hour, "how long the token is valid")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *secretFile == "" || *session == "" || *user == "" {
		fs.Usage()
		return fmt.Errorf("-secret-file, -session and -user are required")
	}
	if *ttl <= 0 {
		return fmt.Errorf("-ttl must be positive, got %s", *ttl)
	}
	secret, err := sessions.ReadSecretFile(*secretFile)
	if err != nil {
		return err
	}
	tok, err := sessions.MintToken(secret, sessions.TokenClaims{Session: *session, User: *user, Role: *role, Expires: time.Now().Add(*ttl)})
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, tok)
	return nil
}
