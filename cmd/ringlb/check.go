package main

import (
	"context"
	"fmt"
	"io"

	"github.com/ringlb/ringlb/configs"
)

func runCheck(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flagSet("check", "Validates a config file: prints every problem (file:line: field.path: what is wrong)\nand exits 1, or prints its warnings and a one-line summary and exits 0.", stderr)
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
		if errs, ok := err.(configs.Errors); ok {
			fmt.Fprintln(stderr, errs.Error())
			return fmt.Errorf("%s: %d problem(s); fix them and run ringlb check again", name, len(errs))
		}
		return err
	}
	// Allowed, but worth knowing (an https monitor that verifies nothing):
	// said, and the check still passes.
	for _, w := range cfg.Warnings() {
		fmt.Fprintln(stderr, "warning: "+w.Error())
	}
	// The memory limit a node started here would take (ExecStartPre runs
	// in the unit's cgroup).
	mem := "memory limit none (set GOMEMLIMIT or a cgroup limit)"
	if limit, ok, _ := setMemoryLimit(); ok {
		mem = fmt.Sprintf("memory limit %d MiB", limit>>20)
	}
	fmt.Fprintf(stdout, "%s: ok: %s; %s\n", name, cfg.Summary(), mem)
	return nil
}
