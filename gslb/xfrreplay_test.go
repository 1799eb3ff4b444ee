package gslb

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// rawXFR asks s for a transfer of qname with qtype (RD set, so the answer's
// flags are seen to be the request's; an IXFR's version serial 1), signed
// with tsigConfig's key when signed, and reads its messages as sent
// (rawXFRRequest).
func rawXFR(t *testing.T, s *Server, qname string, qtype uint16, signed bool) (req *dns.Msg, msgs []*dns.Msg) {
	t.Helper()
	req = new(dns.Msg)
	req.SetQuestion(qname, qtype)
	req.RecursionDesired = true
	if qtype == dns.TypeIXFR {
		req.Ns = []dns.RR{&dns.SOA{Hdr: dns.RR_Header{Name: qname, Rrtype: dns.TypeSOA, Class: dns.ClassINET}, Ns: "ns1." + qname, Mbox: "hostmaster." + qname, Serial: 1}}
	}
	return req, rawXFRRequest(t, s, req, signed)
}

// rawXFRRequest sends req, a transfer request, to s, signed with
// tsigConfig's key when signed, and reads its messages as sent: up to the
// closing SOA, or a first message that is one SOA alone (RFC 1995 2: an
// IXFR of a version the server has). Each TSIG is checked with miekg/dns's
// own code (dns.TsigVerify), chained to the MAC before (RFC 8945 5.3.1),
// not with the server's.
func rawXFRRequest(t *testing.T, s *Server, req *dns.Msg, signed bool) (msgs []*dns.Msg) {
	t.Helper()
	nc, err := net.DialTimeout("tcp", s.Addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(30 * time.Second))
	key := tsigConfig(t).Name
	var wire []byte
	mac := ""
	if signed {
		req.SetTsig(key, dns.HmacSHA256, 300, time.Now().Unix())
		wire, mac, err = dns.TsigGenerate(req, testTSIGSecret, "", false)
	} else {
		wire, err = req.Pack()
	}
	if err != nil {
		t.Fatal(err)
	}
	if _, err := nc.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(wire))), wire...)); err != nil {
		t.Fatal(err)
	}
	soas := 0
	var head [2]byte
	for soas < 2 {
		if _, err := io.ReadFull(nc, head[:]); err != nil {
			t.Fatalf("after %d messages: %v", len(msgs), err)
		}
		raw := make([]byte, binary.BigEndian.Uint16(head[:]))
		if _, err := io.ReadFull(nc, raw); err != nil {
			t.Fatal(err)
		}
		m := new(dns.Msg)
		if err := m.Unpack(raw); err != nil {
			t.Fatalf("message %d: %v", len(msgs), err)
		}
		if m.Rcode != dns.RcodeSuccess {
			t.Fatalf("message %d: %s", len(msgs), dns.RcodeToString[m.Rcode])
		}
		if signed {
			ts := m.IsTsig()
			if ts == nil {
				t.Fatalf("message %d of a signed transfer has no TSIG", len(msgs))
			}
			if err := dns.TsigVerify(raw, testTSIGSecret, mac, len(msgs) > 0); err != nil {
				t.Fatalf("message %d: TSIG: %v", len(msgs), err)
			}
			mac = ts.MAC
		}
		for _, rr := range m.Answer {
			if rr.Header().Rrtype == dns.TypeSOA {
				soas++
			}
		}
		msgs = append(msgs, m)
		if len(msgs) == 1 && len(m.Answer) == 1 && soas == 1 {
			break
		}
	}
	return msgs
}

// A transfer answers the question as asked — its ID, its RD flag, its
// name's case, AXFR or IXFR — whether built for the request or replayed,
// every message signed for the request and chained to the one before;
// and carries what one built afresh holds. A question in another case
// than the zone's is answered from the records, the packed messages
// (compressed against the zone's spelling) left aside.
func TestTransferAnswersAsAsked(t *testing.T) {
	for _, tc := range bothZones(t, 3000, 300) {
		t.Run(tc.name, func(t *testing.T) {
			s := transferServer(t, tc.cfg, nil)
			st := s.state.Load()
			z := st.zones[0]
			want := texts(freshTransfer(t, st, z))
			for _, q := range []struct {
				name  string
				qtype uint16
			}{{"ringlb.test.", dns.TypeAXFR}, {"RingLB.Test.", dns.TypeAXFR}, {"ringlb.test.", dns.TypeIXFR}} {
				for _, round := range []string{"first", "again"} {
					req, msgs := rawXFR(t, s, q.name, q.qtype, true)
					var got []dns.RR
					for i, m := range msgs {
						asked := dns.Question{Name: q.name, Qtype: q.qtype, Qclass: dns.ClassINET}
						if m.Id != req.Id || !m.Response || !m.Authoritative || !m.RecursionDesired || len(m.Question) != 1 || m.Question[0] != asked {
							t.Fatalf("%s %s (%s), message %d: id %d (asked %d), qr %v aa %v rd %v, question %v",
								q.name, dns.TypeToString[q.qtype], round, i, m.Id, req.Id, m.Response, m.Authoritative, m.RecursionDesired, m.Question)
						}
						got = append(got, m.Answer...)
					}
					t.Logf("%s %s (%s): %d records in %d messages", q.name, dns.TypeToString[q.qtype], round, len(got), len(msgs))
					if d := sameRecords(want, texts(got)); d != "" {
						t.Errorf("%s %s (%s): differs from a transfer built afresh: %s", q.name, dns.TypeToString[q.qtype], round, d)
					}
				}
			}
		})
	}
}

// Real secondaries' clients take a replayed transfer: dig (BIND) and kdig
// (Knot) verify every message's TSIG, and count every record of the zone's
// transfer, unsigned and signed, built and replayed; and an IXFR from the
// current serial, answered with its SOA alone (TestIXFRUpToDateAnswersOneSOA).
func TestTransferToRealClients(t *testing.T) {
	tools := map[string]*regexp.Regexp{
		// ";; XFR size: 1085 records (messages 3, bytes 123456)"
		"dig": regexp.MustCompile(`;; XFR size: (\d+) records \(messages (\d+),`),
		// ";; Received 123456 B (3 messages, 1085 records)"
		"kdig": regexp.MustCompile(`;; Received \d+ B \((\d+) messages?, (\d+) records?\)`),
	}
	for name := range tools {
		if _, err := exec.LookPath(name); err != nil {
			t.Skipf("%s not installed (bind9-dnsutils, knot-dnsutils): no real client to check transfers against", name)
		}
	}
	key := tsigConfig(t).Name
	for _, tc := range bothZones(t, 3000, 300) {
		t.Run(tc.name, func(t *testing.T) {
			s := transferServer(t, tc.cfg, nil)
			st := s.state.Load()
			whole := len(freshTransfer(t, st, st.zones[0]))
			ixfr := fmt.Sprintf("IXFR=%d", st.soa(st.zones[0]).Serial)
			host, port, _ := net.SplitHostPort(s.Addr())
			secret := "hmac-sha256:" + key + ":" + testTSIGSecret
			for _, tool := range []string{"dig", "kdig", "dig", "kdig", "dig " + ixfr, "kdig " + ixfr} {
				tool, qtype, _ := strings.Cut(tool, " ")
				want := whole
				if qtype == "" {
					qtype = "AXFR"
				} else {
					want = 1
				}
				args := []string{"@" + host, "-p", port, "-y", secret, "ringlb.test.", qtype}
				ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
				out, err := exec.CommandContext(ctx, tool, args...).CombinedOutput()
				cancel()
				text := string(out)
				m := tools[tool].FindStringSubmatch(text)
				if err != nil || m == nil {
					t.Fatalf("%s: %v\n%s", tool, err, tail(text))
				}
				// dig says so and goes on; kdig stops.
				for _, bad := range []string{"Couldn't verify signature", "could not be validated", "failed to verify", ";; ERROR"} {
					if strings.Contains(text, bad) {
						t.Fatalf("%s: %q\n%s", tool, bad, tail(text))
					}
				}
				records, msgs := m[1], m[2]
				if tool == "kdig" {
					records, msgs = m[2], m[1]
				}
				t.Logf("%s %s: %s records in %s messages", tool, qtype, records, msgs)
				if n, _ := strconv.Atoi(records); n != want {
					t.Errorf("%s %s counts %s records of the %d sent\n%s", tool, qtype, records, want, tail(text))
				}
			}
		})
	}
}

// tail is the last lines of a tool's output.
func tail(out string) string {
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-8):], "\n") + fmt.Sprintf("\n(%d lines)", len(lines))
}
