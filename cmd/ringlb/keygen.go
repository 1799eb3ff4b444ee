package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/ringlb/ringlb/configs"
)

// runKeygen writes a new random key: a cluster keyring line
// (cluster.secret_key_file), an admin token (*.admin.token_file) or a join
// token secret (edge.auth.hmac_secret_file) — the same 32 random bytes in
// base64 serve each.
func runKeygen(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flagSet("keygen", "Writes a new random 32-byte key, base64: a cluster key (cluster.secret_key_file),\nan admin token (*.admin.token_file) or a join-token secret (edge.auth.hmac_secret_file).\nWith -o the file is created with mode 0600 and never overwritten; without, the key is printed.\nTo rotate a cluster key, add the new key as a line of the keyring file (see docs/SECURITY.md).", stderr)
	out := fs.String("o", "", "file to create (default: print to standard output)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	key := configs.GenerateKey() + "\n"
	if *out == "" || *out == "-" {
		_, err := io.WriteString(stdout, key)
		return err
	}
	return writeNewSecret(*out, key)
}

// writeNewSecret creates path with mode 0600 holding content; an existing
// file is left alone (overwriting a key would lock a node out of its cluster).
func writeNewSecret(path, content string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%s exists; not overwriting a key (remove it first, or rotate: docs/SECURITY.md)", path)
	}
	if err != nil {
		return err
	}
	if _, err := io.WriteString(f, content); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
