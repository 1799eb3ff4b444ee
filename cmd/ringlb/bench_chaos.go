package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/ringlb/ringlb/bench"
)

func runBenchChaos(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flagSet("bench chaos", `Runs the chaos scenario against a running cluster: -sessions ringlb.v1 sessions ×
-participants through the -url balancers, sending -rate msgs/s each, a guest joining
and leaving every session throughout; after -hold of traffic, each step given, in
this order: -add (scale-out), -drain (drain), -kill (crash). After each step: a
settle (everyone it disconnected back), -hold more traffic, and a split check point.
Prints a progress line a second, one summary line and a table per phase: sessions
split, disconnected (on the step's edge or elsewhere), msgs lost or duplicated,
resets, how soon sessions were back. With -admin, a step is in once every listed
balancer's ring shows it (GET /api/ring); without, when its command exits.`, stderr)
	urls := fs.String("url", "ws://127.0.0.1:8080/ws,ws://127.0.0.1:8081/ws", "comma-separated ws:// balancer URLs; participants alternate over them when they reconnect")
	var s bench.ChaosScenario
	o := &s.Options
	fs.IntVar(&o.Sessions, "sessions", 100, "number of sessions")
	fs.IntVar(&o.Participants, "participants", 3, "participants per session, connected for the whole run")
	fs.Float64Var(&o.Rate, "rate", 1, "messages per second per participant")
	fs.DurationVar(&o.GuestStay, "guest-stay", 5*time.Second, "a guest stays up to this long (0: no guests)")
	fs.DurationVar(&o.GuestAway, "guest-away", 3*time.Second, "the next guest comes after up to this long")
	sources := fs.String("sources", "", "local source addresses, e.g. 127.0.0.1-127.0.0.4 (each has its own ephemeral ports)")
	fs.DurationVar(&o.Duration, "duration", 0, "bound on the whole run (0: what the steps may take at most)")
	fs.DurationVar(&s.Hold, "hold", 5*time.Second, "traffic before the first step and after each step has settled")
	fs.DurationVar(&s.Quiet, "quiet", time.Second, "a step has settled once nobody has lost a connection for this long")
	fs.DurationVar(&s.SettleTimeout, "settle-timeout", time.Minute, "bound on each step's change and on its settle (who is not back then is counted unresumed)")
	admin := fs.String("admin", "", "comma-separated balancer admin URLs (http://host:port): drains go through the first, a step is in once every one's ring has it, and each step's disconnected sessions are checked to be on their key's owner")
	tokenFile := fs.String("admin-token-file", "", "file holding the admin bearer token (balancer.admin.token_file)")
	add := fs.String("add", "", "scale-out step: a shell command that starts a new edge (background it and redirect its output: 'ringlb edge -config e4.yaml >e4.log 2>&1 &')")
	drain := fs.String("drain", "", "drain step: the edge to drain, through POST {admin}/api/nodes/NAME/drain (needs -admin)")
	kill := fs.String("kill", "", "crash step: a shell command that kills an edge ('kill -9 PID', 'systemctl kill -s KILL ringlb-edge@2')")
	killEdge := fs.String("kill-edge", "", "the edge -kill kills: its sessions are told apart from the others', and with -admin the step waits for it to leave the ring (default: any edge leaving)")
	out := outputFlags(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	o.Targets = strings.Split(*urls, ",")
	var err error
	if o.Sources, err = bench.ParseSources(*sources); err != nil {
		return err
	}
	var errs []error
	if *drain != "" && *admin == "" {
		errs = append(errs, errors.New("-drain goes through a balancer's admin API: give -admin"))
	}
	if *killEdge != "" && *kill == "" {
		errs = append(errs, errors.New("-kill-edge names the edge -kill kills: give -kill"))
	}
	if *tokenFile != "" && *admin == "" {
		errs = append(errs, errors.New("-admin-token-file is for -admin"))
	}
	var cluster bench.ChaosCluster
	if f, ok := stderr.(*os.File); ok {
		cluster.Output = f
	}
	if *admin != "" {
		token := ""
		if *tokenFile != "" {
			b, err := os.ReadFile(*tokenFile)
			if err != nil {
				return fmt.Errorf("-admin-token-file: %w", err)
			}
			if token = strings.TrimSpace(string(b)); token == "" {
				errs = append(errs, fmt.Errorf("-admin-token-file %s is empty", *tokenFile))
			}
		}
		if a, err := bench.NewChaosAdmin(strings.Split(*admin, ","), token); err != nil {
			errs = append(errs, fmt.Errorf("-admin: %w", err))
		} else {
			cluster.Admin, s.Owner = a, a.Lookup
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if *add != "" {
		s.Steps = append(s.Steps, cluster.AddStep(*add))
	}
	if *drain != "" {
		s.Steps = append(s.Steps, cluster.DrainStep(*drain))
	}
	if *kill != "" {
		s.Steps = append(s.Steps, cluster.KillStep(*kill, *killEdge))
	}
	s.Progress = stderr
	res, runErr := s.Run(ctx)
	if res == nil {
		return benchError(fs, runErr)
	}
	fmt.Fprintln(stdout, res.Summary())
	if err := res.WriteTable(stdout); err != nil {
		return err
	}
	if err := out.write(res, res.WriteSVG, stderr); err != nil {
		return err
	}
	return runErr
}
