package configs

import (
	"strings"
	"testing"
)

const goodGSLB = `cluster: { bind: 127.0.0.1:7946 }
gslb:
  listen: 127.0.0.1:5353
  zones:
    - origin: ringlb.test
      records:
        - "@ 3600 IN SOA ns1 hostmaster 1 7200 3600 1209600 60"
        - "@ 3600 IN NS ns1"
        - "ns1 3600 IN A 127.0.0.1"
  monitors:
    bal: { type: http, port: 8080, interval: 500ms, timeout: 250ms }
  names:
    - name: ide.ringlb.test
      geo: { east: [127.0.0.1/32], west: [127.0.0.2/32] }
      default_region: east
      regions:
        east: { monitor: bal, failover: [west], members: [ { name: bal-1, address: 127.0.0.1 } ] }
        west: { monitor: bal, failover: [east], members: [ { name: bal-2, address: 127.0.0.2, probe: "127.0.0.1:8081" } ] }
`

func TestGSLBConfig(t *testing.T) {
	cfg, err := Parse("g.yaml", []byte(goodGSLB))
	if err != nil {
		t.Fatal(err)
	}
	n := cfg.GSLB.Names[0]
	if n.Name != "ide.ringlb.test." || n.TTL != 30 || n.FailoverTTL != 10 || !*n.AutoRecover || n.AllDown != "serve_all" {
		t.Errorf("name defaults: %+v", n)
	}
	if m := n.Regions["east"].Members[0]; m.ServeMode != ServeObey {
		t.Errorf("member serve mode default = %q", m.ServeMode)
	}
	if mon := cfg.GSLB.Monitors["bal"]; mon.Path != "/_ringlb/health" || mon.Rise != 2 || mon.Fall != 2 || mon.ExpectStatus != 200 {
		t.Errorf("monitor defaults: %+v", mon)
	}
	if cfg.GSLB.MaxUDPSize != 1232 {
		t.Errorf("max_udp_size default = %d, want 1232", cfg.GSLB.MaxUDPSize)
	}
}

func TestGSLBRules(t *testing.T) {
	tests := []struct{ name, from, to, path, msg string }{
		{"record syntax", `"ns1 3600 IN A 127.0.0.1"`, `"ns1 3600 IN A 327.0.0.1"`, "gslb.zones[0].records[2]", "327.0.0.1"},
		{"one soa", `"@ 3600 IN SOA ns1 hostmaster 1 7200 3600 1209600 60"`, `"x 60 IN TXT hi"`, "gslb.zones[0].records", "exactly one SOA"},
		{"cidr", "127.0.0.2/32", "127.0.0.2/33", "gslb.names[0].geo.west[0]", "not a CIDR"},
		{"monitor ref", "{ monitor: bal, failover: [east]", "{ monitor: nope, failover: [east]", "gslb.names[0].regions.west.monitor", `"nope" is not in gslb.monitors`},
		{"failover ref", "failover: [west]", "failover: [north]", "gslb.names[0].regions.east.failover[0]", "another region"},
		{"serve mode", "address: 127.0.0.1 }", "address: 127.0.0.1, serve_mode: sometimes }", "gslb.names[0].regions.east.members[0].serve_mode", "must be always, obey, remove or no"},
		{"address", "address: 127.0.0.1 }", "address: bal-1.example }", "gslb.names[0].regions.east.members[0].address", "not an IPv4 or IPv6"},
		{"timeout > interval", "timeout: 250ms", "timeout: 2s", "gslb.monitors.bal.timeout", "at most interval"},
		{"name outside zones", "name: ide.ringlb.test", "name: ide.example.com", "gslb.names[0].name", "in none of gslb.zones"},
		{"default region", "default_region: east", "default_region: south", "gslb.names[0].default_region", "not one of the regions"},
		{"transfer allow", `"ns1 3600 IN A 127.0.0.1"`, `"ns1 3600 IN A 127.0.0.1"` + "\n      transfer: { allow: [localhost] }", "gslb.zones[0].transfer.allow[0]", "not a CIDR"},
		{"transfer notify", `"ns1 3600 IN A 127.0.0.1"`, `"ns1 3600 IN A 127.0.0.1"` + "\n      transfer: { notify: [127.0.0.1] }", "gslb.zones[0].transfer.notify[0]", ""},
		{"tsig algorithm", `"ns1 3600 IN A 127.0.0.1"`, `"ns1 3600 IN A 127.0.0.1"` + "\n      transfer: { tsig: { name: xfr., algorithm: md5, secret_file: nope } }", "gslb.zones[0].transfer.tsig.algorithm", "must be hmac-sha256"},
		{"rrl slip", "listen: 127.0.0.1:5353", "listen: 127.0.0.1:5353\n  rate_limit: { responses_per_second: 10, slip: 11 }", "gslb.rate_limit.slip", ""},
		{"max_udp_size low", "listen: 127.0.0.1:5353", "listen: 127.0.0.1:5353\n  max_udp_size: 511", "gslb.max_udp_size", "must be in range [512, 4096], got 511"},
		// A prefix two regions list went to whichever the map's order put
		// first, drawn anew at every start and reload: replicas disagreed,
		// and a reload moved the prefix's clients.
		{"geo prefix in two regions", "west: [127.0.0.2/32]", "west: [127.0.0.1/32]", "gslb.names[0].geo.west[0]", "127.0.0.1/32 is also region east's (gslb.names[0].geo.east[0])"},
		{"geo prefix in two regions, host bits set", "geo: { east: [127.0.0.1/32], west: [127.0.0.2/32] }", "geo: { east: [10.0.0.0/8], west: [127.0.0.2/32, 10.1.2.3/8] }", "gslb.names[0].geo.west[1]", "10.1.2.3/8 is also region east's (gslb.names[0].geo.east[0]: 10.0.0.0/8)"},
		{"monitor path", "bal: { type: http, port: 8080", `bal: { type: http, path: "/health%zz", port: 8080`, "gslb.monitors.bal.path", `"/health%zz" is no URL path (invalid URL escape "%zz")`},
		{"max_udp_size high", "listen: 127.0.0.1:5353", "listen: 127.0.0.1:5353\n  max_udp_size: 65535", "gslb.max_udp_size", "must be in range [512, 4096], got 65535"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := strings.Replace(goodGSLB, tt.from, tt.to, 1)
			if src == goodGSLB {
				t.Fatalf("replacement %q not found", tt.from)
			}
			_, err := Parse("g.yaml", []byte(src))
			if e := expectProblem(t, err, tt.path, tt.msg); e != nil && e.Line == 0 && !strings.HasSuffix(tt.path, ".records") {
				t.Errorf("%s has no line", e)
			}
		})
	}
}

// Transfers and rate limiting are accepted once served (gslb/transfer.go, rrl.go).
func TestGSLBTransferAndRateLimit(t *testing.T) {
	src := strings.Replace(goodGSLB, `"ns1 3600 IN A 127.0.0.1"`, `"ns1 3600 IN A 127.0.0.1"`+"\n      transfer: { allow: [192.0.2.53/32], notify: [\"192.0.2.53:53\"] }", 1)
	src = strings.Replace(src, "listen: 127.0.0.1:5353", "listen: 127.0.0.1:5353\n  rate_limit: { responses_per_second: 20 }", 1)
	cfg, err := Parse("g.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if tr := cfg.GSLB.Zones[0].Transfer; len(tr.Allow) != 1 || len(tr.Notify) != 1 {
		t.Errorf("transfer %+v", tr)
	}
	if rl := cfg.GSLB.RateLimit; *rl.ResponsesPerSecond != 20 || *rl.Slip != 2 || rl.IPv4Prefix != 24 || rl.IPv6Prefix != 56 {
		t.Errorf("rate limit %+v", rl)
	}
}
