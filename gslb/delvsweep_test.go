//go:build linux

package gslb

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/miekg/dns"

	"github.com/ringlb/ringlb/configs"
)

// TestSignedAnswersValidateWithDelv signs the differential test's zone (every
// shape of data an operator's zone file may hold: CNAME chains in and out,
// dangling and looping, wildcards and their own names, empty non-terminals,
// owners in upper case and with escaped dots, a name of 255 octets, big
// RRsets, unknown types, delegations with and without a DS) and asks a real
// validator, delv, trusting the zone's key, every question of that corpus a
// resolver would ask (plus a name below each name, and a type each name
// lacks): each answer, positive or negative, must validate. A signature over
// the wrong owner or TTL, a denial that does not cover its name, a wildcard
// answer without the proof that the name itself does not exist, a referral
// signing the child's records: delv says "bogus" or fails.
func TestSignedAnswersValidateWithDelv(t *testing.T) {
	// Its own server and peer processes (ports of their own, files in its
	// own directories) and no package state: beside the other sweeps.
	t.Parallel()
	if testing.Short() {
		t.Skip("a sweep of answers through an outside validator: not with -short")
	}
	if _, err := exec.LookPath("delv"); err != nil {
		t.Skip("delv not installed (apt-get install bind9-dnsutils): no real validator to check signatures against")
	}
	dir := t.TempDir()
	zoneFile := filepath.Join(dir, "diff.test.zone")
	if err := os.WriteFile(zoneFile, []byte(diffZone), 0o600); err != nil {
		t.Fatal(err)
	}
	ksk, zsk := testKeysFor(t, "diff.test")
	s := startGSLB(t, signed(parseGSLBYAML(t, fmt.Sprintf(`gslb:
  listen: 127.0.0.1:0
  rate_limit: { responses_per_second: 0 }
  zones: [ { origin: diff.test, file: %q } ]
`, zoneFile)), ksk, zsk))
	anchor, _, err := configs.ReadDNSSECKey(ksk, "diff.test")
	if err != nil {
		t.Fatal(err)
	}
	// Four delv processes at a time: each mostly waits on its start.
	d := newDelv(t, s, anchor)
	questions := delvQuestions(t)
	outs := make([]string, len(questions))
	var wg sync.WaitGroup
	next := make(chan int)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				outs[i] = d.run("127.0.0.1", questions[i].name, dns.TypeToString[questions[i].qtype])
			}
		}()
	}
	for i := range questions {
		next <- i
	}
	close(next)
	wg.Wait()
	for i, q := range questions {
		if out := outs[i]; !strings.Contains(out, "; fully validated") && !strings.Contains(out, "; negative response, fully validated") {
			t.Errorf("%s (%s %s): delv did not validate the answer:\n%s", q.what, q.name, dns.TypeToString[q.qtype], out)
		}
	}
	t.Logf("%d answers validated by delv", len(questions))
}

// delvQuestion is a question a validating resolver asks the zone.
type delvQuestion struct {
	what, name string
	qtype      uint16
}

// delvQuestions is the differential corpus's questions for the zone that a
// resolver sends as they are (no edit of the message), less those delv
// cannot be asked of this server alone, plus for every owner of the zone a
// name below it and a type no name has.
func delvQuestions(t *testing.T) []delvQuestion {
	t.Helper()
	// CNAMEs whose answer is not this server's to validate alone (their
	// names and every name below them are left out).
	leaves := map[string]string{
		"out.diff.test.":    "its CNAME leaves the zone: delv asks this server for the target, which it refuses",
		"loop1.diff.test.":  "a CNAME loop: delv follows it until it gives up, whatever the signatures",
		"loop2.diff.test.":  "a CNAME loop: delv follows it until it gives up, whatever the signatures",
		"to-sub.diff.test.": "its CNAME leads into a delegation: the answer is the child's",
		// Below a DNAME, as below a CNAME's owner: the names it rewrites.
		"dn-out.diff.test.": "its DNAME leaves the zone: delv asks this server for the rewritten names, which it refuses",
		"dl1.diff.test.":    "a DNAME loop: delv follows it until it gives up, whatever the signatures",
		"dl2.diff.test.":    "a DNAME loop: delv follows it until it gives up, whatever the signatures",
	}
	var cuts, owners []string
	zp := dns.NewZoneParser(strings.NewReader(diffZone), "", "")
	for rr, ok := zp.Next(); ok; rr, ok = zp.Next() {
		name := strings.ToLower(rr.Header().Name)
		owners = append(owners, name)
		if rr.Header().Rrtype == dns.TypeNS && name != "diff.test." {
			cuts = append(cuts, name)
		}
	}
	if err := zp.Err(); err != nil {
		t.Fatal(err)
	}
	// Below a cut (or at one, but for its DS) the answer is a referral:
	// the child's to answer, which delv would go on to ask.
	referred := func(name string, qtype uint16) bool {
		for _, c := range cuts {
			if dns.IsSubDomain(c, name) && !(name == c && qtype == dns.TypeDS) {
				return true
			}
		}
		return false
	}
	var out []delvQuestion
	seen := map[string]bool{}
	add := func(what, name string, qtype uint16) {
		lower := strings.ToLower(name)
		key := lower + "/" + dns.TypeToString[qtype]
		if seen[key] || referred(lower, qtype) || !dns.IsSubDomain("diff.test.", lower) {
			return
		}
		for l := range leaves {
			if dns.IsSubDomain(l, lower) {
				return
			}
		}
		if _, ok := dns.IsDomainName(name); !ok || len(name) > 254 {
			return
		}
		seen[key] = true
		out = append(out, delvQuestion{what, name, qtype})
	}
	for _, q := range diffCorpus() {
		switch q.qtype {
		case dns.TypeANY, dns.TypeAXFR, dns.TypeIXFR, dns.TypeRRSIG:
			continue // meta types: no RRset to validate
		case dns.TypeDS:
			if strings.EqualFold(q.name, "diff.test.") {
				continue // the apex's DS is its parent's to answer
			}
		}
		if q.what == "DNAME synthesis too long (YXDOMAIN)" {
			// YXDOMAIN is neither an answer nor a denial: delv has nothing
			// to validate, prints nothing and is stopped at its timeout,
			// whatever the signatures (TestDNAMESigned checks the DNAME's).
			continue
		}
		if q.edit == nil {
			add(q.what, q.name, q.qtype)
		}
	}
	for _, o := range owners {
		add("a name below "+o, "x."+o, dns.TypeA)
		add("a type "+o+" lacks", o, dns.TypeSSHFP)
	}
	return out
}
