package configs

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// A config file is read to a bound, the config API's (MaxConfigBytes),
// before anything else is made of it: a start, `ringlb check` and a
// SIGHUP read it whole, and the rule of the file and of its directories
// (refused when others may write them) came after the read. So a file, or
// a link to /dev/zero, put in place of it by whoever those rules refuse
// made a reload read until the node was killed for its memory.
func TestConfigFileIsReadToABound(t *testing.T) {
	dir := t.TempDir()
	big := filepath.Join(dir, "big.yaml")
	f, err := os.Create(big)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := os.Truncate(big, 64<<20); err != nil { // sparse: nothing written
		t.Fatal(err)
	}
	files := []string{big}
	if _, err := os.Stat("/dev/zero"); err == nil {
		zero := filepath.Join(dir, "zero.yaml")
		if err := os.Symlink("/dev/zero", zero); err != nil {
			t.Fatal(err)
		}
		files = append(files, zero)
	}
	for _, file := range files {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		_, _, err := LoadFile(file)
		runtime.ReadMemStats(&after)
		t.Logf("%s: %d MiB allocated: %v", filepath.Base(file), (after.TotalAlloc-before.TotalAlloc)>>20, err)
		var errs Errors
		// /dev/zero, mode 0666, is also refused for that.
		if !errors.As(err, &errs) || !slices.ContainsFunc(errs, func(e *FieldError) bool { return strings.Contains(e.Msg, "more than 1048576 bytes") }) {
			t.Errorf("%s: want a problem saying the bound, got %v", file, err)
		}
	}
}
