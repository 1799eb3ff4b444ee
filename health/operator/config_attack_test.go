package operator

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health/healthtest"
)

// configFileServer is an admin port serving a config file (the one of an
// edge on loopback) with apply, answering the operator's token.
func configFileServer(t *testing.T, apply func(old, next *configs.Config) error) (base, path string) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "edge.yaml")
	if err := os.WriteFile(path, []byte("cluster: { name: e1, bind: 127.0.0.1:7946 }\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	running, err := configs.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if apply == nil {
		apply = func(_, _ *configs.Config) error { return nil }
	}
	n := newTestNode(t, configs.Admin{})
	n.UseConfigFile(NewConfigFile(path, "edge", running, mustRead(t, path), apply, nil))
	return loginServer(t, n, testToken), path
}

// A few kilobytes of YAML whose aliases name aliases must not make a node
// build a config, or an error, a thousand times their size: the config
// API's check (and a PUT, and SIGHUP, and `ringlb check`) parses whatever
// the operator's client sends, up to MaxConfigBytes. Before, the 3 KiB
// "nested" body below answered 25 MB of problems after 190 MB of work, and
// the growth is a power of the aliases' depth: a 1 MiB body ends the node.
func TestConfigCheckAliasesCannotMultiply(t *testing.T) {
	base, _ := configFileServer(t, nil)
	nested := func(k int) string {
		var b strings.Builder
		b.WriteString("edge:\n  admin:\n    hosts: [&s \"" + strings.Repeat("A", 100) + "\"]\n")
		b.WriteString("gslb:\n  zones:\n  - &z\n    origin: example.com\n    records: [")
		b.WriteString(strings.Repeat("*s,", k))
		b.WriteString("]\n")
		b.WriteString(strings.Repeat("  - *z\n", k))
		return b.String()
	}
	wide := func(k int) string {
		return "edge:\n  admin:\n    hosts: [&s \"" + strings.Repeat("A", 10_000) + "\"" + strings.Repeat(",*s", k) + "]\n"
	}
	for _, tc := range []struct{ name, body string }{
		{"nested", nested(300)},
		{"wide", wide(1000)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			req, _ := http.NewRequest("POST", base+"/api/config/check", strings.NewReader(tc.body))
			req.Header.Set("Authorization", "Bearer "+testToken)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			answer, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			runtime.ReadMemStats(&after)
			t.Logf("%d-byte body: %d, %d-byte answer, %d MB allocated", len(tc.body), resp.StatusCode, len(answer), (after.TotalAlloc-before.TotalAlloc)>>20)
			if resp.StatusCode != http.StatusBadRequest {
				t.Errorf("status %d, want 400", resp.StatusCode)
			}
			// The answer may quote what the file holds (a bad value in a
			// problem), a few times over: never what aliases multiply.
			if limit := 8*len(tc.body) + 64<<10; len(answer) > limit {
				t.Errorf("a %d-byte body answered %d bytes (more than %d): aliases multiplied it", len(tc.body), len(answer), limit)
			}
			if !strings.Contains(string(answer), "alias") {
				t.Errorf("the answer does not name the aliases: %.300s", answer)
			}
		})
	}
}

// checkBody posts body to the config check and returns the status and the
// answer.
// editOnHost puts content in the config file at path, as an edit on the
// host does, and returns what puts the file back: the config API reads
// only the files the running config or the file on disk names (a check of
// a host edit before its SIGHUP), and refuses the rest unread.
func editOnHost(t *testing.T, path, content string) (restore func()) {
	t.Helper()
	before := mustRead(t, path)
	if err := os.WriteFile(path, []byte(content), 0o640); err != nil {
		t.Fatal(err)
	}
	return func() {
		if err := os.WriteFile(path, before, 0o640); err != nil {
			t.Error(err)
		}
	}
}

func checkBody(t *testing.T, base, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", base+"/api/config/check", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(answer)
}

// A config names its secret files by path, and a check (a PUT, a SIGHUP)
// reads them: a path to a FIFO must not hold the node in open(2) or read(2)
// until someone writes to it (a PUT holds the reload lock meanwhile: every
// later PUT and SIGHUP waits behind it), and a path to a huge file must not
// be read whole. Before, a FIFO as token_file held the check until the test
// wrote to it, and a 256 MiB users_file was read whole (256 MiB allocated)
// to say that its first line is not a user.
func TestConfigCheckReadsNoEndlessSecretFile(t *testing.T) {
	base, path := configFileServer(t, nil)
	dir := filepath.Dir(path)
	fifo := filepath.Join(dir, "token.fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	huge := filepath.Join(dir, "users")
	f, err := os.OpenFile(huge, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600) // a secret file, as it should be
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(256 << 20); err != nil { // sparse: no disk used
		t.Fatal(err)
	}
	f.Close()

	t.Run("fifo", func(t *testing.T) {
		type answer struct {
			code int
			body string
		}
		body := "edge:\n  admin: { listen: 127.0.0.1:0, token_file: " + fifo + " }\n"
		defer editOnHost(t, path, body)()
		done := make(chan answer, 1)
		go func() {
			code, body := checkBody(t, base, body)
			done <- answer{code, body}
		}()
		blocked := false
		var got answer
		healthtest.WaitUntil(t, "the check answered, or is held by the FIFO", func() bool {
			select {
			case got = <-done:
				return true
			default:
			}
			// A writer opened without blocking gets ENXIO unless a reader
			// holds the FIFO: then the node is the one reading it.
			w, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0)
			if err != nil {
				return false
			}
			blocked = true
			w.Write([]byte("released-by-the-test-0123456789\n"))
			w.Close()
			got = <-done
			return true
		})
		t.Logf("FIFO as token_file: held the check: %v; answered %d %.200s", blocked, got.code, got.body)
		if blocked {
			t.Errorf("the check opened the FIFO and waited for a writer")
		}
		if got.code != http.StatusBadRequest || !strings.Contains(got.body, "not a regular file") {
			t.Errorf("FIFO as token_file: %d %.300s", got.code, got.body)
		}
	})

	t.Run("huge", func(t *testing.T) {
		body := "edge:\n  admin: { listen: 127.0.0.1:0, users_file: " + huge + " }\n"
		defer editOnHost(t, path, body)()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		code, body := checkBody(t, base, body)
		runtime.ReadMemStats(&after)
		allocated := after.TotalAlloc - before.TotalAlloc
		t.Logf("256 MiB users_file: %d MB allocated, answered %d %.200s", allocated>>20, code, body)
		if allocated > 64<<20 {
			t.Errorf("a check read a 256 MiB users file whole (%d MB allocated)", allocated>>20)
		}
		if code != http.StatusBadRequest || !strings.Contains(body, "larger than") {
			t.Errorf("256 MiB users_file: %d %.300s", code, body)
		}
	})
}

// A PUT replaces the file the node was started from as an editor would:
// through a symlink (a config kept under version control and linked into
// /etc), keeping its owner and mode. Before, the link itself was replaced
// by a regular file — later edits of the linked file never reached the
// node — and the file became the node's (root's, for a gslb on port 53),
// which its owner could then no longer edit.
func TestPutConfigKeepsTheLinkAndTheOwner(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "managed", "edge.yaml")
	if err := os.Mkdir(filepath.Dir(target), 0o755); err != nil {
		t.Fatal(err)
	}
	orig := "cluster: { name: e1, bind: 127.0.0.1:7946 }\n"
	if err := os.WriteFile(target, []byte(orig), 0o640); err != nil {
		t.Fatal(err)
	}
	owner := os.Getuid() == 0 // only root can give a file away
	if owner {
		if err := os.Chown(target, 4321, 4321); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(dir, "edge.yaml")
	if err := os.Symlink(filepath.Join("managed", "edge.yaml"), path); err != nil {
		t.Fatal(err)
	}
	base := configServer(t, path)

	_, view, _ := configRequest(t, "GET", base+"/api/config", "", "")
	next := "cluster: { name: e1, bind: 127.0.0.1:7946, log_level: debug }\n"
	code, out, _ := configRequest(t, "PUT", base+"/api/config", `"`+view["version"].(string)+`"`, next)
	if code != 200 {
		t.Fatalf("PUT: %d %v", code, out)
	}
	st, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(target)
	t.Logf("after the PUT: %s is %v; the linked file holds the new config: %v", filepath.Base(path), st.Mode().Type(), string(got) == next)
	if st.Mode().Type() != os.ModeSymlink || string(got) != next {
		t.Errorf("the PUT replaced the link (now %v) instead of the file it names (holding %q)", st.Mode().Type(), got)
	}
	if st, err := os.Stat(path); err == nil { // the file the node reads
		sys := st.Sys().(*syscall.Stat_t)
		t.Logf("the file: mode %v, owner %d:%d", st.Mode().Perm(), sys.Uid, sys.Gid)
		if st.Mode().Perm() != 0o640 || owner && (sys.Uid != 4321 || sys.Gid != 4321) {
			t.Errorf("the file's mode or owner changed: %v %d:%d, want 0640 4321:4321", st.Mode().Perm(), sys.Uid, sys.Gid)
		}
	}
	if bak, _ := os.ReadFile(out["backup"].(string)); string(bak) != orig {
		t.Errorf("backup %v holds %q", out["backup"], bak)
	}
}

// The check reads the files a file on the host names (it is the only way to
// tell whether a key file holds a key), and answers its problems: none may carry
// the content of a file that is not what the field wants. Before, the
// gossip keyring named as a zone's DNSSEC key (a .key file is its DNSKEY)
// came back in the zone parser's problem, the cluster key quoted.
func TestConfigCheckQuotesNoKeyFile(t *testing.T) {
	base, path := configFileServer(t, nil)
	key := configs.GenerateKey()
	keyFile := filepath.Join(filepath.Dir(path), "gossip.key")
	if err := os.WriteFile(keyFile, []byte(key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	body := "gslb:\n  zones:\n  - origin: ringlb.test\n    records: [ '@ 3600 IN SOA ns1 hostmaster 1 7200 3600 1209600 60' ]\n    dnssec: { keys: [ { file: " + keyFile + " } ] }\n"
	defer editOnHost(t, path, body)()
	code, answer := checkBody(t, base, body)
	t.Logf("the keyring as a DNSSEC key: %d %.400s", code, answer)
	if code != http.StatusBadRequest || strings.Contains(answer, key) {
		t.Errorf("the check's answer quotes the cluster key (or passed): %d", code)
	}
}

// The config API tells nothing of a host file that neither the running
// config nor the file on disk names: a check or a PUT naming one is refused
// (403, the fields listed) before it is read, the same whatever the file
// holds, and whether it exists. Before, a check naming two host files as
// token_file and metrics_token_file answered whether their contents were
// equal ("holds the operator's token"), whether each existed, its length
// class and its mode (the secret-mode warning) — an oracle on every file
// the node (root, for a gslb on port 53) can read — and a PUT answered the
// same problems before its refusal of the files.
func TestConfigAPITellsNothingOfOtherFiles(t *testing.T) {
	base, path := configFileServer(t, nil)
	host := t.TempDir() // not the config's directory: files the node was never told of
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(host, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	secret := strings.Repeat("s", 32)
	a, same, other := write("a", secret, 0o600), write("same", secret, 0o600), write("other", strings.Repeat("o", 32), 0o644)
	short := write("short", "x", 0o600)
	cases := []struct{ name, token, metrics string }{
		{"equal", a, same},
		{"different", a, other},
		{"missing", a, filepath.Join(host, "missing")},
		{"short", a, short},
	}
	body := func(token, metrics string) string {
		return "cluster: { name: e1, bind: 127.0.0.1:7946 }\nedge:\n  admin: { listen: 127.0.0.1:0, token_file: " + token + ", metrics_token_file: " + metrics + " }\n"
	}
	answers := map[string]bool{}
	for _, tc := range cases {
		code, answer := checkBody(t, base, body(tc.token, tc.metrics))
		t.Logf("check, %s: %d %.300s", tc.name, code, answer)
		if code != http.StatusForbidden {
			t.Errorf("check naming other host files (%s): %d, want 403", tc.name, code)
		}
		answers[strings.ReplaceAll(strings.ReplaceAll(answer, tc.token, "TOKEN"), tc.metrics, "METRICS")] = true

		_, view, _ := configRequest(t, "GET", base+"/api/config", "", "")
		code, out, _ := configRequest(t, "PUT", base+"/api/config", `"`+view["version"].(string)+`"`, body(tc.token, tc.metrics))
		t.Logf("PUT, %s: %d %v", tc.name, code, out)
		if code != http.StatusForbidden {
			t.Errorf("PUT naming other host files (%s): %d, want 403", tc.name, code)
		}
	}
	if len(answers) != 1 {
		t.Errorf("the check answered %d different ways for files of different contents, existence and modes", len(answers))
	}
	if got := string(mustRead(t, path)); strings.Contains(got, host) {
		t.Errorf("a PUT naming other host files was written: %q", got)
	}
}
