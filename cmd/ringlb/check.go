package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/ringlb/ringlb/balancer/handoff"
	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/gslb"
)

func runCheck(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flagSet("check", "Validates a config file: prints every problem (file:line: field.path: what is wrong)\nand its warnings and exits 1, or prints its warnings and a one-line summary and exits 0.", stderr)
	path := fs.String("config", "", "config file to check (default: the embedded demo config)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	var cfg *configs.Config
	var err error
	name := *path
	if name == "" {
		name = configs.DemoFileName
		cfg, err = configs.LoadDemo()
	} else {
		cfg, err = configs.Load(name)
	}
	if err != nil {
		var errs configs.Errors
		if !errors.As(err, &errs) {
			return err
		}
		// The problems, the zones' (when the gslb section itself has
		// none: its zones load as they would), then what the file would
		// be warned of besides: all of it in one pass.
		fmt.Fprintln(stderr, errs.Error())
		zones, count := "", len(errs)
		var refused *configs.Refused
		if errors.As(err, &refused) {
			if refused.Unsaid > 0 {
				count += refused.Unsaid - 1 // the last of errs counts them
			}
			if refused.GSLB != nil {
				ws, err := gslb.Check(*refused.GSLB)
				if err != nil {
					fmt.Fprintln(stderr, err)
					zones = ", and its gslb section does not start"
				}
				printWarnings(stderr, ws)
			}
			printWarnings(stderr, refused.Warnings)
			warnOfUpgrade(stderr, refused.Roles)
		}
		return fmt.Errorf("%s: %d problem(s)%s; fix them and run ringlb check again", name, count, zones)
	}
	if slices.Contains(cfg.Roles(), "gslb") {
		// The zones as the nameserver loads them: what a start refuses,
		// and what it warns of.
		ws, err := gslb.Check(cfg.GSLB)
		if err != nil {
			fmt.Fprintln(stderr, err)
			printWarnings(stderr, cfg.Warnings())
			return fmt.Errorf("%s: its gslb section does not start; fix it and run ringlb check again", name)
		}
		printWarnings(stderr, ws)
	}
	// Allowed, but worth knowing (an https monitor that verifies nothing):
	// said, and the check still passes.
	printWarnings(stderr, cfg.Warnings())
	warnOfUpgrade(stderr, cfg.Roles())
	// The memory limit a node started here would take (ExecStartPre runs
	// in the unit's cgroup).
	mem := "memory limit none (set GOMEMLIMIT or a cgroup limit)"
	if limit, ok, _ := setMemoryLimit(); ok {
		mem = fmt.Sprintf("memory limit %d MiB", limit>>20)
	}
	fmt.Fprintf(stdout, "%s: ok: %s; %s\n", name, cfg.Summary(), mem)
	return nil
}

// printWarnings says a checked file's warnings, or its zones' (gslb.Check),
// one "warning: " line each.
func printWarnings[E error](w io.Writer, warnings []E) {
	for _, e := range warnings {
		fmt.Fprintln(w, "warning: "+e.Error())
	}
}

// warnOfUpgrade says, for a file with a role upgraded in place, that an
// upgrade of a node run from this binary would be refused, and why: what
// the node says at its start, said before it runs.
func warnOfUpgrade(w io.Writer, roles []string) {
	for _, role := range roles {
		if upgradedInPlace(role) {
			if err := handoff.CheckExecutable(); err != nil {
				fmt.Fprintf(w, "warning: %s: %v\n", upgradeRefused, err)
			}
			return
		}
	}
}
