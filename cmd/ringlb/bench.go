package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/ringlb/ringlb/bench"
)

type benchCommand struct {
	name, summary string
	run           func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

func benchCommands() []benchCommand {
	return []benchCommand{
		{"ws", "WebSocket sessions through a balancer or straight to an edge", runBenchWS},
		{"dns", "a bounded query load against a DNS server", runBenchDNS},
		{"ring", "key shares and keys moved per membership change of a ring of edges", runBenchRing},
		{"chaos", "live ringlb.v1 sessions while edges are added, drained and killed: splits, losses, resumes", runBenchChaos},
	}
}

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	usage := func() {
		fmt.Fprintln(stderr, "Usage: ringlb bench KIND [flags]   (ringlb bench KIND -h for its flags)\n\nLoad generators: each prints progress, one summary line, and writes the full\nresult as JSON (-json FILE) and a chart as SVG beside it (-svg to name it).\n\nKinds:")
		for _, c := range benchCommands() {
			fmt.Fprintf(stderr, "  %-6s %s\n", c.name, c.summary)
		}
		fmt.Fprintf(stderr, "\n%s\n", exitStatus)
	}
	if len(args) == 0 || args[0] == "-h" || args[0] == "-help" || args[0] == "--help" {
		usage()
		if len(args) == 0 {
			return errUsage
		}
		return nil
	}
	for _, c := range benchCommands() {
		if c.name == args[0] {
			return c.run(ctx, args[1:], stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "ringlb bench: unknown kind %q\n\n", args[0])
	usage()
	return errUsage
}

func runBenchWS(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flagSet("bench ws", "Opens sessions × participants WebSockets (spread over the -url targets), sends\n-rate messages per second per participant for -duration, and measures delivery:\nconnections, msgs/s, end-to-end latency, split sessions, lost messages.", stderr)
	urls := fs.String("url", "ws://127.0.0.1:8080/ws", "comma-separated ws:// targets (balancers or edges)")
	var o bench.WSOptions
	fs.IntVar(&o.Sessions, "sessions", 100, "number of sessions")
	fs.IntVar(&o.Participants, "participants", 3, "participants per session")
	fs.Float64Var(&o.Rate, "rate", 1, "messages per second per participant (0: idle connections)")
	fs.BoolVar(&o.Saturate, "saturate", false, "send as fast as the session delivers (ignores -rate)")
	fs.IntVar(&o.Window, "window", 64, "with -saturate: messages each sender keeps in flight")
	fs.IntVar(&o.Size, "size", 256, "message size in bytes (≥ 16)")
	fs.DurationVar(&o.Duration, "duration", 10*time.Second, "how long to send")
	fs.DurationVar(&o.Ramp, "ramp", 0, "spread connection set-up over this long")
	fs.DurationVar(&o.Drain, "drain", 2*time.Second, "after sending, wait at most this long for messages in flight (ends once every one has arrived)")
	fs.StringVar(&o.KeyIn, "key", "header", "where the ctstickiness key goes: header or cookie")
	fs.StringVar(&o.Mode, "mode", "raw", "protocol: raw (frames relayed unchanged) or v1 (ringlb.v1 msg envelopes: seq, ack)")
	sources := fs.String("sources", "", "local source addresses, e.g. 127.0.0.1-127.0.0.8 (each has its own ephemeral ports)")
	out := outputFlags(fs)
	watch := fs.String("watch-pids", "", "comma-separated PIDs (a proxy and its workers) whose RSS and CPU to sample")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	o.Targets = strings.Split(*urls, ",")
	var err error
	if o.Sources, err = bench.ParseSources(*sources); err != nil {
		return err
	}
	for _, p := range strings.Split(*watch, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		pid, err := strconv.Atoi(p)
		if err != nil {
			return usageError(fs, "-watch-pids: %q is not a PID", p)
		}
		o.WatchPIDs = append(o.WatchPIDs, pid)
	}
	res, err := bench.RunWS(ctx, o, stderr)
	if err != nil {
		return benchError(fs, err)
	}
	fmt.Fprintln(stdout, res.Summary())
	if len(o.WatchPIDs) > 0 {
		fmt.Fprintf(stdout, "watched: rss %.1f MiB → %.1f MiB (%.2f KiB per connection), cpu %.2fs while sending\n",
			float64(res.WatchRSSBefore)/(1<<20), float64(res.WatchRSSConnected)/(1<<20), res.WatchRSSPerConn/1024, res.WatchCPUSeconds)
	}
	if res.FirstDialError != "" && res.ConnsOK > 0 {
		fmt.Fprintln(stderr, "first dial error:", res.FirstDialError)
	}
	if err := out.write(res, res.WriteSVG, stderr); err != nil {
		return err
	}
	if res.ConnsOK == 0 && res.ConnsFailed > 0 {
		// Nothing was measured: a script waiting for its target to come
		// up (wait_ws in bench/peers) goes by this exit status.
		return fmt.Errorf("no connection could be made (%d tried): %s", res.ConnsFailed, res.FirstDialError)
	}
	return nil
}

// benchOutputs are the -json and -svg flags every bench kind has.
type benchOutputs struct{ json, svg *string }

func outputFlags(fs *flag.FlagSet) benchOutputs {
	return benchOutputs{
		json: fs.String("json", "", "write the full result as JSON to this file"),
		svg:  fs.String("svg", "", "write a chart as SVG to this file (default: beside -json, FILE.svg for FILE.json)"),
	}
}

// write writes res as JSON and its chart as SVG where the flags ask, and
// names the files on log.
func (b benchOutputs) write(res any, chart func(io.Writer) error, log io.Writer) error {
	svg := *b.svg
	if svg == "" && *b.json != "" {
		svg = strings.TrimSuffix(*b.json, ".json") + ".svg"
	}
	if *b.json != "" {
		data, err := json.MarshalIndent(res, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(*b.json, data, 0o644); err != nil {
			return fmt.Errorf("write result: %w", err)
		}
		fmt.Fprintln(log, "wrote", *b.json)
	}
	if svg != "" {
		f, err := os.Create(svg)
		if err != nil {
			return fmt.Errorf("write chart: %w", err)
		}
		err = chart(f)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("write chart %s: %w", svg, err)
		}
		fmt.Fprintln(log, "wrote", svg)
	}
	return nil
}

// benchError is a run's error, a usage error (exit 2, the usage shown)
// when the run refused its options before starting: a bad value is how the
// command was called, as a bad flag is.
func benchError(fs *flag.FlagSet, err error) error {
	var oe *bench.OptionsError
	if errors.As(err, &oe) {
		return usageError(fs, "%v", oe.Err)
	}
	return err
}
