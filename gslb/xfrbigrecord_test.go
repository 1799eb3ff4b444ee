package gslb

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/ringlb/ringlb/configs"
)

// A record so big that a transfer message holding it alone, with its
// header, question, OPT and TSIG, would pass the 65,535 octets of a DNS
// message is refused where the zone is loaded, naming its file and line:
// every signed transfer of the zone was cut at that message (miekg/dns
// refuses to write it), and the secondary never had the zone. A record at
// the limit loads, and goes whole in a signed transfer with an OPT
// carrying a Client Subnet option — the most a transfer message holds
// besides.
func TestRecordTooBigForATransferMessageRefused(t *testing.T) {
	base, err := os.ReadFile("testdata/ringlb.test.zone")
	if err != nil {
		t.Fatal(err)
	}
	const owner = "huge.ringlb.test."
	// TXT RDATA of rdata octets: strings of 255 characters, and the rest.
	txt := func(rdata int) string {
		var b strings.Builder
		for ; rdata > 0; rdata -= 256 {
			fmt.Fprintf(&b, " %q", strings.Repeat("x", min(rdata, 256)-1))
		}
		return b.String()
	}
	// zoneWith writes the test zone with the record of rdata octets of
	// RDATA on its last line, which it returns.
	zoneWith := func(rdata int) (string, int) {
		text := string(base) + owner + " IN TXT" + txt(rdata) + "\n"
		file := filepath.Join(t.TempDir(), "ringlb.test.zone")
		if err := os.WriteFile(file, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return file, strings.Count(text, "\n")
	}
	wire := len(owner) + 1 + 10 // owner name, type, class, TTL, RDATA length
	for _, rdata := range []int{65481, xfrRecordBytes - wire + 1} {
		file, line := zoneWith(rdata)
		_, err := loadZone(configs.Zone{Origin: "ringlb.test", File: file}, configs.RateLimit{})
		t.Logf("RDATA of %d octets: %v", rdata, err)
		if where := fmt.Sprintf("%s line %d", file, line); err == nil || !strings.Contains(err.Error(), where) {
			t.Errorf("RDATA of %d octets: loaded (%v); want it refused at %s", rdata, err, where)
		}
	}

	rdata := xfrRecordBytes - wire
	file, _ := zoneWith(rdata)
	cfg := withTransfer(t, gslbConfig(t, newFakeBalancer(t), newFakeBalancer(t), ""), configs.Transfer{Allow: []string{"127.0.0.1/32"}, TSIG: tsigConfig(t)})
	cfg.Zones[0].File = file
	s := startGSLB(t, cfg)
	m := new(dns.Msg)
	m.SetAxfr("ringlb.test.")
	m.SetEdns0(1232, false)
	opt := m.IsEdns0()
	opt.Option = append(opt.Option, &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: 2, SourceNetmask: 128, Address: net.ParseIP("2001:db8::1")})
	m.SetTsig("xfr.ringlb.test.", dns.HmacSHA256, 300, time.Now().Unix())
	tr := &dns.Transfer{ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second, TsigSecret: map[string]string{"xfr.ringlb.test.": testTSIGSecret}}
	ch, err := tr.In(m, s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	got := 0
	for env := range ch {
		if env.Error != nil {
			t.Fatalf("signed transfer with a record of %d octets cut: %v", rdata, env.Error)
		}
		for _, rr := range env.RR {
			if rr.Header().Name == owner && rr.Header().Rrtype == dns.TypeTXT {
				got = dns.Len(rr) - wire
			}
		}
	}
	if got != rdata {
		t.Errorf("transfer carried the record with %d octets of RDATA, want %d", got, rdata)
	}
	t.Logf("RDATA of %d octets transferred signed", rdata)
}
