package configs

import (
	"os"
	"strings"
	"testing"
)

// A secret file other users of the host can read is theirs: the cluster
// keyring makes its reader a member of the cluster (gossip, signed
// hand-offs, claims), an admin token or a users file's hashes the operator
// (the hashes by guessing offline), a TSIG secret a secondary. One they can
// write is theirs to replace. Such a file is refused, naming the fix; one
// the node's group may read (0640, a Kubernetes Secret's 0440) is not.
func TestSecretFilesOpenToOthersAreRefused(t *testing.T) {
	users, err := UsersLine("alice", "a long password")
	if err != nil {
		t.Fatal(err)
	}
	kinds := []struct {
		name, content string
		read          func(path string) error
	}{
		{"keyring", GenerateKey() + "\n", func(p string) error { _, err := ReadKeyring(p); return err }},
		{"admin token", "0123456789abcdef0123456789abcdef\n", func(p string) error { _, err := ReadToken(p); return err }},
		{"users file", users + "\n", func(p string) error { _, err := Admin{UsersFile: p}.Users(); return err }},
		{"TSIG secret", GenerateKey() + "\n", func(p string) error { _, err := ReadTSIGSecret(p); return err }},
		{"join-token secret", "0123456789abcdef0123456789abcdef\n", func(p string) error { _, err := ReadHMACSecret(p); return err }},
	}
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			path := writeFile(t, "secret", k.content)
			for _, mode := range []os.FileMode{0o600, 0o400, 0o640, 0o440} {
				if err := os.Chmod(path, mode); err != nil {
					t.Fatal(err)
				}
				if err := k.read(path); err != nil {
					t.Errorf("mode %04o refused: %v", mode, err)
				}
			}
			for _, mode := range []os.FileMode{0o644, 0o604, 0o666, 0o620, 0o602} {
				if err := os.Chmod(path, mode); err != nil {
					t.Fatal(err)
				}
				err := k.read(path)
				t.Logf("mode %04o: %v", mode, err)
				if err == nil {
					t.Errorf("a %s of mode %04o was read", k.name, mode)
				} else if !strings.Contains(err.Error(), "chmod 600 "+path) {
					t.Errorf("the refusal does not say what to do: %v", err)
				}
			}
		})
	}
}
