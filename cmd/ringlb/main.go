// Command ringlb is the one binary of ringlb: each subcommand runs one role
// (edge, balancer), the whole demo, or a tool (check). It only parses flags,
// loads config, wires packages together and handles signals.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/ringlb/ringlb/configs"
)

type command struct {
	name, summary string
	run           func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

func commands() []command {
	return []command{
		{"demo", "run 3 edges, 2 balancers and a gslb on loopback from the embedded config", runDemo},
		{"edge", "run an edge node (session relay)", runEdgeCmd},
		{"balancer", "run a regional balancer", runBalancerCmd},
		{"gslb", "run the authoritative DNS server with region pools and failover", runGSLBCmd},
		{"upgrade", "replace a running balancer or gslb with a new binary without closing a connection", runUpgrade},
		{"check", "validate a config file and report every problem", runCheck},
		{"token", "mint a signed join token for an edge session (edge.auth)", runToken},
		{"keygen", "write a new random key: cluster key, admin token or join-token secret", runKeygen},
		{"bench", "load generators: ringlb bench ws|dns|ring|chaos", runBench},
		{"probe", "check a health URL once (for HEALTHCHECK and keepalived)", runProbe},
		{"version", "print the version of this binary", runVersion},
	}
}

// exitStatus is what every command's exit status means, as run returns
// it; each -h ends with it, and a command whose 0 or 1 means more says so
// in its own text.
const exitStatus = "Exit status: 0 done, 1 failed (the reason on stderr), 2 a usage error (what is wrong and the usage on stderr)."

// errUsage means the command was called wrongly, and has said how (the
// flag package, or usageError): exit 2.
var errUsage = errors.New("usage")

// usageError says what is wrong with how a command was called (an argument
// it needs and was not given), then the command's usage; it returns
// errUsage.
func usageError(fs *flag.FlagSet, format string, args ...any) error {
	fmt.Fprintf(fs.Output(), "%s: %s\n\n", fs.Name(), fmt.Sprintf(format, args...))
	fs.Usage()
	return errUsage
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	switch {
	case len(args) == 0:
		usage(stderr)
		return 2
	case args[0] == "-h" || args[0] == "-help" || args[0] == "--help":
		usage(stdout)
		return 0
	case args[0] == "-version" || args[0] == "--version":
		fmt.Fprintln(stdout, readBuildVersion())
		return 0
	case args[0] == "help":
		// ringlb help CMD is ringlb CMD -h.
		if len(args) == 1 {
			usage(stdout)
			return 0
		}
		if len(args) > 2 {
			fmt.Fprintf(stderr, "ringlb help: one command, got %q\n", strings.Join(args[1:], " "))
			return 2
		}
		args = []string{args[1], "-h"}
	}
	for _, c := range commands() {
		if c.name == args[0] {
			err := c.run(ctx, args[1:], stdout, stderr)
			switch {
			case err == nil, errors.Is(err, flag.ErrHelp):
				return 0
			case errors.Is(err, errUsage):
				return 2
			default:
				fmt.Fprintf(stderr, "ringlb %s: %v\n", c.name, err)
				return 1
			}
		}
	}
	fmt.Fprintf(stderr, "ringlb: unknown command %q\n\n", args[0])
	usage(stderr)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "ringlb — consistent-hashing WebSocket load balancer for collaborative IDE sessions")
	fmt.Fprintln(w, "\nUsage: ringlb COMMAND [flags]   (ringlb COMMAND -h for its flags)")
	fmt.Fprintln(w, "\nCommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "\n%s\n", exitStatus)
}

// flagSet returns a FlagSet whose -h prints a usage line and the flags.
func flagSet(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("ringlb "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: ringlb %s [flags]\n\n%s\n\nFlags:\n", name, synopsis)
		fs.PrintDefaults()
		fmt.Fprintf(stderr, "\n%s\n", exitStatus)
	}
	return fs
}

func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "unexpected arguments: %s\n", strings.Join(fs.Args(), " "))
		fs.Usage()
		return errUsage
	}
	return nil
}

// logFlags adds -log-level and -log-format and returns a constructor for the
// logger they describe and its level, which a node's config may change
// (cluster.log_level, on every reload).
func logFlags(fs *flag.FlagSet, stderr io.Writer) func() (*slog.Logger, *logLevel, error) {
	level := fs.String("log-level", "info", "log level: debug, info, warn or error (cluster.log_level overrides it)")
	format := fs.String("log-format", "text", "log format: text or json")
	return func() (*slog.Logger, *logLevel, error) {
		lv, err := configs.ParseLogLevel(*level)
		if err != nil {
			return nil, nil, fmt.Errorf("-log-level %w", err)
		}
		l := &logLevel{flag: lv}
		l.v.Set(lv)
		opts := &slog.HandlerOptions{Level: &l.v}
		switch *format {
		case "text":
			return slog.New(slog.NewTextHandler(stderr, opts)), l, nil
		case "json":
			return slog.New(slog.NewJSONHandler(stderr, opts)), l, nil
		default:
			return nil, nil, fmt.Errorf("-log-format %q: want text or json", *format)
		}
	}
}

// logLevel is a logger's level: the -log-level flag's, unless the config's
// cluster.log_level says otherwise.
type logLevel struct {
	v    slog.LevelVar
	flag slog.Level
}

// use sets the level from cluster.log_level ("" : the flag's); configs has
// checked it.
func (l *logLevel) use(config string) {
	lv := l.flag
	if config != "" {
		if parsed, err := configs.ParseLogLevel(config); err == nil {
			lv = parsed
		}
	}
	l.v.Set(lv)
}
