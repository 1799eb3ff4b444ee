package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/sessions"
)

func runToken(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flagSet("token", "Mints a signed join token for one session, user and role (edge.auth), and prints it;\n"+
		"its nonce, issue time and expiry go to stderr (revoke it with the edges' POST /api/tokens/revoke nonce=N).\n"+
		"Pass it to the edge as query parameter token or header Authorization: Bearer.", stderr)
	config := fs.String("config", "", "read edge.auth.hmac_secret_file and edge.auth.max_token_ttl from this config file (instead of -secret-file, -max-ttl)")
	secretFile := fs.String("secret-file", "", "HMAC secret file, the edge's edge.auth.hmac_secret_file (required without -config)")
	maxTTL := fs.Duration("max-ttl", configs.DefaultMaxTokenTTL, "the edges' edge.auth.max_token_ttl: a longer -ttl is refused, as the edges would")
	session := fs.String("session", "", "session key the token admits to (required)")
	user := fs.String("user", "", "user the token names (required)")
	role := fs.String("role", sessions.RoleEditor, "editor (may send) or viewer (receives only)")
	ttl := fs.Duration("ttl", time.Hour, "how long the token is valid")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	if *config != "" {
		if given["secret-file"] || given["max-ttl"] {
			return fmt.Errorf("-config reads the secret file and max_token_ttl from edge.auth: give it without -secret-file and -max-ttl")
		}
		cfg, err := configs.Load(*config)
		if err != nil {
			return err
		}
		if cfg.Edge.Auth.HMACSecretFile == "" {
			return fmt.Errorf("%s: edge.auth.hmac_secret_file is not set: the edges admit no tokens", *config)
		}
		*secretFile, *maxTTL = cfg.Edge.Auth.HMACSecretFile, cfg.Edge.Auth.MaxTokenTTL.D()
	}
	if *secretFile == "" || *session == "" || *user == "" {
		return usageError(fs, "-secret-file (or -config), -session and -user are required")
	}
	if *ttl <= 0 || *ttl > *maxTTL {
		return fmt.Errorf("-ttl must be positive and at most %s (edge.auth.max_token_ttl), got %s", *maxTTL, *ttl)
	}
	secret, err := sessions.ReadSecretFile(*secretFile)
	if err != nil {
		return err
	}
	now := time.Now()
	tok, claims, err := sessions.MintToken(secret, sessions.TokenClaims{Session: *session, User: *user, Role: *role, IssuedAt: now, Expires: now.Add(*ttl)}, *maxTTL)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, tok)
	fmt.Fprintf(stderr, "nonce %s, issued %s, expires %s\n", claims.Nonce, claims.IssuedAt.UTC().Format(time.RFC3339), claims.Expires.UTC().Format(time.RFC3339))
	return nil
}
