package main

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
)

// buildVersion says which build this is: the module version (a tagged
// release, or "(devel)" for a build from a checkout), the commit it was
// built from (with "+dirty" for uncommitted changes) and the Go version —
// all from what the Go toolchain records in every binary.
type buildVersion struct{ version, revision, goVersion string }

func readBuildVersion() buildVersion {
	v := buildVersion{version: "(devel)", revision: "unknown", goVersion: runtime.Version()}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return v
	}
	if info.Main.Version != "" {
		v.version = info.Main.Version
	}
	dirty := false
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			v.revision = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if dirty {
		v.revision += "+dirty"
	}
	return v
}

func (v buildVersion) String() string {
	return fmt.Sprintf("ringlb %s (commit %s, %s)", v.version, v.revision, v.goVersion)
}

func runVersion(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flagSet("version", "Prints the version of this binary: module version, commit and Go version\n(also ringlb -version).", stderr)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	fmt.Fprintln(stdout, readBuildVersion())
	return nil
}

// newBuildInfo is ringlb_build_info: 1, labelled with the build, on every
// role's /metrics, so a dashboard shows which nodes run which build (during
// an upgrade, say).
func newBuildInfo() prometheus.Collector {
	v := readBuildVersion()
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name:        "ringlb_build_info",
		Help:        "1, labelled with the build this node runs: version, commit (revision) and Go version.",
		ConstLabels: prometheus.Labels{"version": v.version, "revision": v.revision, "goversion": v.goVersion},
	}, func() float64 { return 1 })
}
