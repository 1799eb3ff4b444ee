package gslb

import (
	"fmt"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// Two members of a region may share an address (a floating address held
// by either of two balancers, each checked at its own probe): the address
// is served while either is up, once. Answered once per member, an RRset
// held a record twice (RFC 2181 5: duplicates are suppressed), and under
// max_answers a client's subset could be that one address twice.
func TestAnAddressIsAnsweredOnce(t *testing.T) {
	y := gslbYAML("  rate_limit: { responses_per_second: 0 }\n", "      max_answers: 2\n", "127.0.0.1:1", "127.0.0.1:1")
	for _, mode := range []string{"always", "no"} { // "no" everywhere: all_down's serve_all
		t.Run(mode, func(t *testing.T) {
			answeredOnce(t, strings.ReplaceAll(y, "{ monitor: bal, ", "{ serve_mode: "+mode+", "))
		})
	}
}

func answeredOnce(t *testing.T, y string) {
	from := `members: [ { name: bal-1, address: 192.0.2.1, probe: "127.0.0.1:1" } ]`
	if !strings.Contains(y, from) {
		t.Fatalf("no %s in the config", from)
	}
	y = strings.Replace(y, from, `members: [ { name: bal-1, address: 192.0.2.1 }, { name: bal-1b, address: 192.0.2.1 }, { name: bal-1c, address: "::ffff:192.0.2.1" }, { name: bal-3, address: 192.0.2.3 } ]`, 1)
	s := startGSLB(t, parseGSLBYAML(t, y))
	for i := range 8 {
		client := fmt.Sprintf("10.1.%d.0", i)
		got := answerIPs(query(t, s, "udp", "ide.ringlb.test.", dns.TypeA, ecs(client, 24)))
		if ips := strings.Split(got, ","); len(ips) != 2 || ips[0] == ips[1] {
			t.Errorf("client %s/24: answer %s, want 192.0.2.1 and 192.0.2.3 once each", client, got)
		}
	}
}
