package configs

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// CheckPath walks a path as the kernel resolves it: "..", ".", doubled and
// trailing slashes and symlinks (relative or not) lead where they lead,
// and what is on the way there is what is checked; a missing last entry
// is no error (nothing there yet), a missing directory on the way is.
func TestCheckPathWalksAsTheKernel(t *testing.T) {
	root := filepath.Join(t.TempDir(), "root")
	for _, d := range []string{"root", "root/a", "root/a/b", "root/open"} {
		if err := os.Mkdir(filepath.Join(filepath.Dir(root), d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	open := filepath.Join(root, "open")
	if err := os.Chmod(open, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("a/b", filepath.Join(root, "rel")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(open, filepath.Join(root, "a", "toopen")); err != nil {
		t.Fatal(err)
	}
	uid := os.Geteuid()
	for _, tc := range []struct {
		path, final, refusal string // refusal: what the error says ("": none)
		missing              bool
	}{
		{path: root + "/a/b", final: root + "/a/b"},
		{path: root + "//a/./b/", final: root + "/a/b"},
		{path: root + "/a/b/..", final: root + "/a"},
		{path: root + "/rel", final: root + "/a/b"},
		{path: root + "/rel/../b/new", final: root + "/a/b/new", missing: true},
		{path: root + "/open", final: open}, // the last entry is the caller's to judge
		{path: root + "/open/x", refusal: "chmod go-w " + open},
		{path: root + "/a/toopen/x", refusal: "chmod go-w " + open},
		{path: root + "/open/../a/b", refusal: "chmod go-w " + open}, // the kernel passes through it
		{path: root + "/none/x", refusal: "no such file"},
	} {
		final, fi, err := CheckPath("thing", tc.path, uid)
		t.Logf("%s: %s %v", tc.path, final, err)
		switch {
		case tc.refusal != "":
			if err == nil || !strings.Contains(err.Error(), tc.refusal) || !strings.HasPrefix(err.Error(), "thing "+tc.path+": ") {
				t.Errorf("%s: %v, want a refusal naming it and saying %q", tc.path, err, tc.refusal)
			}
		case err != nil:
			t.Errorf("%s: %v", tc.path, err)
		case final != tc.final || (fi == nil) != tc.missing:
			t.Errorf("%s: final %s (info %v), want %s (missing %v)", tc.path, final, fi != nil, tc.final, tc.missing)
		}
	}
	if _, _, err := CheckPath("thing", root+"/none/x", uid); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a missing directory on the way: %v, want fs.ErrNotExist", err)
	}
}
