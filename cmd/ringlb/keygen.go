package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/miekg/dns"

	"github.com/ringlb/ringlb/configs"
)

// runKeygen writes a new random key: a cluster keyring line
// (cluster.secret_key_file), an admin token (*.admin.token_file) or a join
// token secret (edge.auth.hmac_secret_file) — the same 32 random bytes in
// base64 serve each.
func runKeygen(_ context.Context, args []string, stdout, stderr io.Writer) error {
	return keygen(os.Stdin, args, stdout, stderr)
}

func keygen(stdin io.Reader, args []string, stdout, stderr io.Writer) error {
	fs := flagSet("keygen", "Writes a new random 32-byte key, base64: a cluster key (cluster.secret_key_file),\nan admin token (*.admin.token_file) or a join-token secret (edge.auth.hmac_secret_file).\nWith -o the file is created with mode 0600 and never overwritten; without, the key is printed.\nTo rotate a cluster key, add the new key as a line of the keyring file (see docs/SECURITY.md).\n\nWith -dnssec ZONE it writes DNSSEC keys for the zone instead (ECDSA P-256, algorithm 13), as\nBIND's dnssec-keygen does: K<zone>+013+<tag>.key and .private (mode 0600) in -dir, and prints\nthe lines of gslb.zones[].dnssec.keys and the DS record for the parent (gslb/README.md: rollovers).\n\nWith -password USER it prints a line of *.admin.users_file (USER:bcrypt-hash) for the password\nread from standard input: echo -n 'a long password' | ringlb keygen -password alice >> users\n(then chmod 600 users: a node refuses a users file other users of the host can read)", stderr)
	out := fs.String("o", "", "file to create (default: print to standard output)")
	zone := fs.String("dnssec", "", "write DNSSEC keys for this zone (e.g. ringlb.test) instead of a random key")
	kind := fs.String("type", "both", "with -dnssec: ksk (key-signing key), zsk (zone-signing key) or both")
	dir := fs.String("dir", ".", "with -dnssec: the directory to write the key files in")
	user := fs.String("password", "", "print a line of *.admin.users_file for this user instead: USER:bcrypt-hash of the password read from standard input (its first line)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	// A flag of another kind of key is refused, not ignored: -o beside
	// -password printed the line and wrote no file, exiting 0.
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	notFor := func(what string, names ...string) error {
		for _, n := range names {
			if set[n] {
				return usageError(fs, "-%s does not apply %s", n, what)
			}
		}
		return nil
	}
	if *user != "" {
		if err := notFor("to -password (the line is printed: append it to the users file, >> users)", "o", "dnssec", "type", "dir"); err != nil {
			return err
		}
		return passwordLine(stdin, stdout, *user)
	}
	if *zone != "" {
		if *out != "" {
			return usageError(fs, "-o is for a random key; DNSSEC keys go to -dir")
		}
		if !slices.Contains(dnssecKeyTypes, *kind) {
			return usageError(fs, "-type must be ksk, zsk or both, got %q", *kind)
		}
		return dnssecKeygen(stdout, *zone, *kind, *dir)
	}
	if err := notFor("without -dnssec", "type", "dir"); err != nil {
		return err
	}
	key := configs.GenerateKey() + "\n"
	if *out == "" || *out == "-" {
		_, err := io.WriteString(stdout, key)
		return err
	}
	return configs.CreateExclusive(*out, 0o600, key)
}

// dnssecKeyTypes are the kinds of DNSSEC key -type names.
var dnssecKeyTypes = []string{"ksk", "zsk", "both"}

// dnssecKeygen writes the keys of kind (ksk, zsk, both) for zone into dir
// and prints how to use them.
func dnssecKeygen(stdout io.Writer, zone, kind, dir string) error {
	var ksks []bool
	switch kind {
	case "both":
		ksks = []bool{true, false}
	case "ksk":
		ksks = []bool{true}
	case "zsk":
		ksks = []bool{false}
	default:
		return fmt.Errorf("-type must be one of %s, got %q", strings.Join(dnssecKeyTypes, ", "), kind)
	}
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	var files, ds []string
	for _, ksk := range ksks {
		base, key, err := configs.GenerateDNSSECKey(dir, zone, ksk)
		if err != nil {
			return err
		}
		what := "zone-signing key (ZSK)"
		if ksk {
			what = "key-signing key (KSK): give the parent its DS"
			ds = append(ds, key.ToDS(dns.SHA256).String())
		}
		fmt.Fprintf(stdout, "%s  %s\n", base, what)
		files = append(files, base)
	}
	fmt.Fprintf(stdout, "\nIn gslb.zones[] of %s:\n      dnssec:\n        keys:\n", dns.Fqdn(zone))
	for _, f := range files {
		fmt.Fprintf(stdout, "          - { file: %q }\n", f)
	}
	if len(ds) > 0 {
		fmt.Fprintf(stdout, "\nDS for the parent zone (or let it read the CDS the zone serves):\n")
		for _, d := range ds {
			fmt.Fprintln(stdout, d)
		}
	}
	return nil
}

// passwordLine prints a users-file line for user, with the password read
// from the first line of stdin (never from a flag: flags show in ps).
func passwordLine(stdin io.Reader, stdout io.Writer, user string) error {
	line, err := bufio.NewReader(io.LimitReader(stdin, 1024)).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("read the password from standard input: %w", err)
	}
	out, err := configs.UsersLine(user, strings.TrimRight(line, "\r\n"))
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, out)
	return err
}
