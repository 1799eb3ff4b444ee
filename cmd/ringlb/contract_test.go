package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// Every metric a package declares is listed in docs/CONTRACT.md with its
// meaning: operators build dashboards and alerts on these names.
func TestMetricsAreDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../docs/CONTRACT.md")
	if err != nil {
		t.Fatal(err)
	}
	// Options' Name fields and collectors' own descriptions (NewDesc).
	declared := regexp.MustCompile(`(?:Name:|NewDesc\()\s*"(ringlb_[a-z_]+)"`)
	found := 0
	for _, pkg := range []string{"balancer", "sessions", "gslb", "health"} {
		files, _ := filepath.Glob(filepath.Join("../..", pkg, "*.go"))
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			src, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range declared.FindAllSubmatch(src, -1) {
				found++
				if !strings.Contains(string(doc), "`"+string(m[1])) {
					t.Errorf("%s declares %s; docs/CONTRACT.md does not list it", f, m[1])
				}
			}
		}
	}
	if found < 20 {
		t.Fatalf("found %d metric declarations; the test lost track of them", found)
	}
}
