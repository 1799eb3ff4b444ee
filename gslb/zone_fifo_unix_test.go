//go:build unix

package gslb

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ringlb/ringlb/configs"
)

// A zone file swapped for a FIFO after the config's check is refused when
// the zone is loaded, not waited on: opened as it was, the load (a start, a
// SIGHUP, a PUT of the config holding the reload lock) waited in open(2)
// for a writer that never came.
func TestZoneFileSwappedForAFIFOIsRefused(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "zone")
	if err := os.WriteFile(file, []byte("@ 3600 IN SOA ns1 hostmaster 1 7200 3600 1209600 60\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	zc := configs.Zone{Origin: "ringlb.test", File: file}
	if _, err := loadZone(zc, configs.RateLimit{}); err != nil {
		t.Fatalf("the regular zone file: %v", err)
	}
	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(file, 0o600); err != nil {
		t.Skip("no FIFOs here:", err)
	}
	err := loadWithoutWaiting(t, zc, file)
	t.Logf("the FIFO: %v", err)
	if err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("the FIFO in the zone file's place: %v, want not a regular file", err)
	}
}

// loadWithoutWaiting loads zc, whose file or an include of it is the FIFO
// fifo, and fails the test if the load waits for the FIFO's writer (it is
// then given one, so the load ends with the test).
func loadWithoutWaiting(t *testing.T, zc configs.Zone, fifo string) error {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		_, err := loadZone(zc, configs.RateLimit{})
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(30 * time.Second):
		if w, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			w.Close()
		}
		<-done
		t.Fatal("loading a zone whose file or include is a FIFO waited for a writer")
		return nil
	}
}

// OpenRegular judges what it opened: a FIFO is refused without waiting for
// a writer, whether it was there at the first look or not.
func TestOpenRegularNeverWaitsOnAFIFO(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skip("no FIFOs here:", err)
	}
	if _, _, err := configs.OpenRegular(fifo); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("OpenRegular(a FIFO): %v, want not a regular file", err)
	}
}

// A zone file's $INCLUDEs are read as the file is — relative to its
// directory or absolute — and one that is a FIFO is refused, not waited on.
func TestZoneIncludesAreRegularFilesOnly(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	abs := write("abs.inc", "b 60 IN A 192.0.2.2\n")
	write("rel.inc", "a 60 IN A 192.0.2.1\n")
	file := write("zone", "@ 3600 IN SOA ns1 hostmaster 1 7200 3600 1209600 60\n$INCLUDE rel.inc\n$INCLUDE "+abs+"\n")
	// The zone named relative to the working directory, as a config may.
	t.Chdir(dir)
	z, err := loadZone(configs.Zone{Origin: "ringlb.test", File: "zone"}, configs.RateLimit{})
	if err != nil {
		t.Fatalf("a zone with a relative and an absolute include: %v", err)
	}
	for _, name := range []string{"a.ringlb.test.", "b.ringlb.test."} {
		if len(z.names[name]) == 0 {
			t.Errorf("%s not loaded from its include", name)
		}
	}

	fifo := filepath.Join(dir, "fifo.inc")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skip("no FIFOs here:", err)
	}
	write("zone", "@ 3600 IN SOA ns1 hostmaster 1 7200 3600 1209600 60\n$INCLUDE fifo.inc\n")
	err = loadWithoutWaiting(t, configs.Zone{Origin: "ringlb.test", File: file}, fifo)
	t.Logf("an included FIFO: %v", err)
	if err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("an included FIFO: %v, want not a regular file", err)
	}
}

// A zone file is the file its path names, as the kernel resolves it: a
// path through a symlink and then ".." names the parent of the link's
// target, not the link's own directory. Made absolute by filepath.Abs
// (which cleans the path first) for the includes' sake, "link/../zone"
// opened the zone beside the link, another file than the one named and
// than the one opened before; now the zone is opened as named, and its
// relative includes are still joined to its directory as named, cleaned,
// as the parser always did.
func TestZoneFileThroughSymlinkIsTheOneNamed(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, "real", "sub"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join("real", "sub"), filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	const soa = "@ 3600 IN SOA ns1 hostmaster 1 7200 3600 1209600 60\n"
	write("real/zone", soa+"named 60 IN A 192.0.2.1\n$INCLUDE rel.inc\n")
	write("zone", soa+"beside 60 IN A 192.0.2.2\n")
	write("rel.inc", "inc 60 IN A 192.0.2.3\n")
	for _, file := range []string{filepath.Join(dir, "link") + "/../zone", "link/../zone"} {
		t.Run(file, func(t *testing.T) {
			t.Chdir(dir)
			z, err := loadZone(configs.Zone{Origin: "ringlb.test", File: file}, configs.RateLimit{})
			if err != nil {
				t.Fatal(err)
			}
			if len(z.names["beside.ringlb.test."]) > 0 || len(z.names["named.ringlb.test."]) == 0 {
				t.Errorf("%s: loaded the zone file beside the link, not the one the path names (real/zone)", file)
			}
			if len(z.names["inc.ringlb.test."]) == 0 {
				t.Errorf("%s: its include, relative to its directory as named, not loaded", file)
			}
		})
	}
}
