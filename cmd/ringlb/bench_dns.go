package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/ringlb/ringlb/bench"
)

func runBenchDNS(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flagSet("bench dns", "Sends a mix of DNS queries from -clients concurrent clients for -duration and\nreports QPS, latency percentiles and response codes.", stderr)
	var o bench.DNSOptions
	fs.StringVar(&o.Server, "server", "127.0.0.1:5353", "DNS server host:port")
	fs.IntVar(&o.Clients, "clients", 8, "concurrent clients (one query in flight each)")
	fs.DurationVar(&o.Duration, "duration", 10*time.Second, "how long to send")
	fs.Int64Var(&o.MaxQueries, "max-queries", 0, "stop after this many queries (0: duration only)")
	fs.BoolVar(&o.TCP, "tcp", false, "query over TCP")
	mix := fs.String("mix", "", "comma-separated NAME/TYPE list (default: the demo zone's managed name, CNAME, NXDOMAIN, MX, AAAA)")
	out := outputFlags(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	for _, item := range strings.Split(*mix, ",") {
		if item = strings.TrimSpace(item); item == "" {
			continue
		}
		name, typ, ok := strings.Cut(item, "/")
		t, known := dns.StringToType[strings.ToUpper(typ)]
		if !ok || !known {
			return usageError(fs, "-mix entry %q must be NAME/TYPE, e.g. ide.ringlb.test/A", item)
		}
		o.Mix = append(o.Mix, bench.DNSQuery{Name: dns.Fqdn(name), Type: t})
	}
	res, err := bench.RunDNS(ctx, o, stderr)
	if err != nil {
		return benchError(fs, err)
	}
	fmt.Fprintln(stdout, res.Summary())
	return out.write(res, res.WriteSVG, stderr)
}
