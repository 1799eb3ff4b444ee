package configs

import (
	"fmt"
	"io/fs"
	"os"
)

// Secret files' permissions: the one rule for every file a config names for
// a secret — the cluster keyring, admin and metrics tokens, the users file,
// the join-token secret, TSIG secrets, DNSSEC .private files. readSecret
// applies it to every read (check, start, SIGHUP, the config API, `ringlb
// token` and `probe`), and the check reports its warnings (secretWarning).
//
//   - Any access for others (mode &0007): refused. Every user of the host
//     could read the secret — join the cluster, drain nodes, sign for a
//     zone. OpenSSH refuses a private key so; BIND and Knot only warn, but a
//     secret already readable cannot be made secret again by a warning.
//   - Writable by the group (&0020): refused. A member could put a key of
//     their own in (a keyring, a token) and be let in by it.
//   - Readable by the group (&0040): accepted — it is how a service is
//     given a secret it must not change: systemd's root:ringlb 0640 (the
//     shipped unit), a Kubernetes Secret mounted 0440 root:fsGroup (the
//     shipped manifests). Owned by root, as both do, it is deliberate and
//     accepted silently (PostgreSQL's rule for its key file); owned by
//     anyone else (a user's own file under umask 027, in a group such as
//     "users"), it is accepted with a warning naming the file, its mode and
//     what to do.
//
// Where the mode says nothing about who may read a file (no Unix owner),
// nothing is checked.
func secretFileMode(path, what string, fi fs.FileInfo) (warning string, err error) {
	uid, gid, ok := FileOwner(fi)
	if !ok {
		return "", nil
	}
	perm := fi.Mode().Perm()
	switch {
	case perm&0o007 != 0:
		return "", fmt.Errorf("%s is open to others (mode %04o): any user of this host can read %s; chmod o= %s (0600, or 0640 with the node's group)", path, perm, what, path)
	case perm&0o020 != 0:
		return "", fmt.Errorf("%s is writable by its group (gid %d, mode %04o): a member of it could replace %s; chmod g-w %s", path, gid, perm, what, path)
	case perm&0o040 != 0 && uid != 0:
		return fmt.Sprintf("%s is readable by its group (gid %d, mode %04o): every member of it can read %s. If the group is the node's own, let root own the file (chown root %s) and this goes; else chmod 600 %s", path, gid, perm, what, path, path), nil
	}
	return "", nil
}

// secretWarning is secretFileMode's warning for the secret file path, ""
// when there is none (or the file does not stat: its reader says why).
func secretWarning(path, what string) string {
	fi, err := os.Stat(path)
	if err != nil {
		return ""
	}
	w, _ := secretFileMode(path, what, fi)
	return w
}

// What each kind of secret file holds, for secretFileMode's messages.
const (
	whatKeyring    = "the cluster key (whoever holds it is a member of the cluster)"
	whatToken      = "the admin token"
	whatUsers      = "the admin users' password hashes"
	whatJoinSecret = "the join-token secret (whoever holds it mints tokens)"
	whatTSIG       = "the TSIG secret (whoever holds it transfers the zone)"
	whatTLSKey     = "the TLS private key"
)

// whatDNSSECKey is what a DNSSEC key's .private file holds.
func whatDNSSECKey(zone string) string {
	return "the private key of " + zone + " (whoever holds it signs for the zone)"
}
