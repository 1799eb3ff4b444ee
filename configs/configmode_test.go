package configs

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// The attack: a config file any user of the host may write (made 0666, or
// copied in by a tool that does) lets them choose how the node runs —
// gossip without a key, seeds of their own, the answers of its zones — and
// the operator's next SIGHUP or restart applies it. Refused, said with the
// file's other problems; one its group may write (the config API writes it
// as the node's user) is read.
func TestConfigFileWritableByOthersIsRefused(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("file modes do not say who may write a file here")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "edge.yaml")
	write := func(content string, perm os.FileMode) {
		t.Helper()
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, perm); err != nil { // beyond the umask
			t.Fatal(err)
		}
	}
	good := "cluster: { name: e1, bind: 127.0.0.1:7946 }\nedge: { listen: 127.0.0.1:7101 }\n"
	want := path + ": writable by others (mode 0666)"

	write(good, 0o666)
	_, _, err := LoadFile(path)
	t.Logf("a good file of mode 0666: %v", err)
	var refused *Refused
	if !errors.As(err, &refused) || len(refused.Errors) != 1 || !strings.HasPrefix(refused.Errors[0].Error(), want) ||
		!strings.Contains(err.Error(), "chmod o-w "+path) {
		t.Fatalf("a config file others may write: %v, want refused with %q", err, want)
	}
	if len(refused.Roles) != 1 || refused.Roles[0] != "edge" {
		t.Errorf("refused file's roles: %v, want [edge]", refused.Roles)
	}

	// With problems of its own: every one said, in one pass.
	write("cluster: { name: e1, bind: 127.0.0.1:7946 }\nedge: { listen: 127.0.0.1:7101, nope: 1 }\n", 0o666)
	_, _, err = LoadFile(path)
	t.Logf("a bad file of mode 0666: %v", err)
	var errs Errors
	if !errors.As(err, &errs) || len(errs) != 2 || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), path+":2: edge.nope: unknown field") {
		t.Fatalf("a bad config file others may write: %v, want both problems", err)
	}
	write("edge: [oops\n", 0o646)
	if _, _, err = LoadFile(path); !errors.As(err, &errs) || len(errs) != 2 || !strings.Contains(err.Error(), "writable by others (mode 0646)") {
		t.Fatalf("a config file that is no YAML, others may write: %v, want both problems", err)
	}

	for _, perm := range []os.FileMode{0o644, 0o664, 0o660, 0o600} {
		write(good, perm)
		if _, _, err := LoadFile(path); err != nil {
			t.Errorf("a config file of mode %04o: %v", perm, err)
		}
	}
}
