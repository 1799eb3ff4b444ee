package gslb

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/ringlb/ringlb/configs"
)

// signedQuery is a query for name signed with keyName and secret (base64)
// at timeSigned; it returns the packed query and its MAC.
func signedQuery(t *testing.T, name string, qtype uint16, keyName, alg, secret string, timeSigned int64) ([]byte, string) {
	t.Helper()
	m := question(name, qtype, 0)
	m.SetTsig(keyName, alg, 300, timeSigned)
	b, mac, err := dns.TsigGenerate(m, secret, "", false)
	if err != nil {
		t.Fatal(err)
	}
	return b, mac
}

// signedErrorMACValid checks the MAC of a signed error response the way a
// client does (RFC 8945 5.3.2): over the request MAC, the response without
// its TSIG (ID restored, ARCOUNT one less) and the response's TSIG variables.
// miekg/dns refuses to verify any NOTAUTH message, so the test does it.
func signedErrorMACValid(t *testing.T, resp []byte, secret, requestMAC string) bool {
	t.Helper()
	m := new(dns.Msg)
	if err := m.Unpack(resp); err != nil {
		t.Fatal(err)
	}
	ts := m.IsTsig()
	body := append([]byte(nil), resp[:len(resp)-dns.Len(ts)]...)
	binary.BigEndian.PutUint16(body, ts.OrigId)
	binary.BigEndian.PutUint16(body[10:], binary.BigEndian.Uint16(body[10:])-1)
	reqMAC, _ := hex.DecodeString(requestMAC)
	key, _ := base64.StdEncoding.DecodeString(secret)
	h := hmac.New(sha256.New, key)
	h.Write(binary.BigEndian.AppendUint16(nil, uint16(len(reqMAC))))
	h.Write(reqMAC)
	h.Write(body)
	vars := make([]byte, 512)
	off, _ := dns.PackDomainName(dns.CanonicalName(ts.Hdr.Name), vars, 0, nil, false)
	vars = binary.BigEndian.AppendUint16(vars[:off], dns.ClassANY)
	vars = binary.BigEndian.AppendUint32(vars, 0)
	alg := make([]byte, 256)
	n, _ := dns.PackDomainName(dns.CanonicalName(ts.Algorithm), alg, 0, nil, false)
	vars = append(vars, alg[:n]...)
	vars = append(vars, byte(ts.TimeSigned>>40), byte(ts.TimeSigned>>32), byte(ts.TimeSigned>>24), byte(ts.TimeSigned>>16), byte(ts.TimeSigned>>8), byte(ts.TimeSigned))
	vars = binary.BigEndian.AppendUint16(vars, ts.Fudge)
	vars = binary.BigEndian.AppendUint16(vars, ts.Error)
	vars = binary.BigEndian.AppendUint16(vars, ts.OtherLen)
	other, _ := hex.DecodeString(ts.OtherData)
	h.Write(append(vars, other...))
	mac, _ := hex.DecodeString(ts.MAC)
	return len(mac) > 0 && hmac.Equal(mac, h.Sum(nil))
}

// A query carrying a TSIG the server cannot verify is refused with NOTAUTH
// and the TSIG error that says why (RFC 8945 5.2), never answered: an
// unknown key BADKEY, a wrong MAC BADSIG (both unsigned, 5.3.2), a time
// outside the fudge BADTIME (signed, with the server's time). A correctly
// signed query gets a signed answer. Over UDP and TCP.
func TestQueryTSIG(t *testing.T) {
	cfg := withTransfer(t, gslbConfig(t, newFakeBalancer(t), newFakeBalancer(t), ""), configs.Transfer{Allow: []string{"127.0.0.1/32"}, TSIG: tsigConfig(t)})
	s := startGSLB(t, cfg)
	const key = "xfr.ringlb.test."
	wrong := base64.StdEncoding.EncodeToString([]byte("not the secret"))
	now := time.Now().Unix()
	for _, network := range []string{"udp", "tcp"} {
		for _, tt := range []struct {
			name, key, alg, secret string
			time                   int64
			tsigError              uint16
		}{
			{"unknown key", "other.ringlb.test.", dns.HmacSHA256, testTSIGSecret, now, dns.RcodeBadKey},
			{"algorithm not the key's", key, dns.HmacSHA512, testTSIGSecret, now, dns.RcodeBadKey},
			{"wrong MAC", key, dns.HmacSHA256, wrong, now, dns.RcodeBadSig},
			{"an hour old", key, dns.HmacSHA256, testTSIGSecret, now - 3600, dns.RcodeBadTime},
			{"an hour ahead", key, dns.HmacSHA256, testTSIGSecret, now + 3600, dns.RcodeBadTime},
		} {
			t.Run(network+"/"+tt.name, func(t *testing.T) {
				q, mac := signedQuery(t, "www.ringlb.test.", dns.TypeA, tt.key, tt.alg, tt.secret, tt.time)
				p := exchangeWire(t, s, network, q)
				m := new(dns.Msg)
				if err := m.Unpack(p); err != nil {
					t.Fatal(err)
				}
				ts := m.IsTsig()
				if m.Rcode != dns.RcodeNotAuth || len(m.Answer) != 0 || ts == nil || ts.Error != tt.tsigError {
					t.Fatalf("rcode %s, %d answers, TSIG %v; want NOTAUTH, no answer, TSIG error %s", dns.RcodeToString[m.Rcode], len(m.Answer), ts, tsigErrorName(tt.tsigError))
				}
				if len(m.Question) != 1 || m.Question[0].Name != "www.ringlb.test." {
					t.Errorf("question not echoed: %v", m.Question)
				}
				if tt.tsigError == dns.RcodeBadTime {
					if !signedErrorMACValid(t, p, testTSIGSecret, mac) {
						t.Error("BADTIME answer not signed with the request's key")
					}
					other, _ := hex.DecodeString(ts.OtherData)
					if len(other) != 6 || ts.TimeSigned != uint64(tt.time) {
						t.Errorf("BADTIME: other data %x (want the server's 48-bit time), time signed %d (want the request's %d)", other, ts.TimeSigned, tt.time)
					}
				} else if ts.MACSize != 0 || ts.MAC != "" {
					t.Errorf("%s answer signed (MAC %s): RFC 8945 5.3.2 says unsigned", tsigErrorName(tt.tsigError), ts.MAC)
				}
			})
		}
		t.Run(network+"/signed", func(t *testing.T) {
			m := question("www.ringlb.test.", dns.TypeA, 0)
			m.SetTsig(key, dns.HmacSHA256, 300, time.Now().Unix())
			c := &dns.Client{Net: network, Timeout: 5 * time.Second, TsigSecret: map[string]string{key: testTSIGSecret}}
			r, _, err := c.Exchange(m, s.Addr()) // verifies the answer's TSIG
			if err != nil {
				t.Fatal(err)
			}
			if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 || r.IsTsig() == nil || r.IsTsig().Error != 0 {
				t.Fatalf("signed query: %s, %d answers, TSIG %v", dns.RcodeToString[r.Rcode], len(r.Answer), r.IsTsig())
			}
		})
	}
	// A signed answer that does not fit is cut to the budget with its TSIG
	// counted, and still verifies.
	big := question("many.ringlb.test.", dns.TypeA, 4096)
	big.SetTsig(key, dns.HmacSHA256, 300, time.Now().Unix())
	c := &dns.Client{Net: "udp", Timeout: 5 * time.Second, TsigSecret: map[string]string{key: testTSIGSecret}}
	r, _, err := c.Exchange(big, s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	if !r.Truncated || len(r.Answer) != 0 || r.IsTsig() == nil || r.Len() > 1232 {
		t.Fatalf("signed query for 200 records: TC %v, %d answers, TSIG %v, %d bytes", r.Truncated, len(r.Answer), r.IsTsig(), r.Len())
	}

	// A transfer with a bad MAC says so too.
	q := new(dns.Msg)
	q.SetAxfr("ringlb.test.")
	q.SetTsig(key, dns.HmacSHA256, 300, now)
	b, _, err := dns.TsigGenerate(q, wrong, "", false)
	if err != nil {
		t.Fatal(err)
	}
	m := new(dns.Msg)
	if err := m.Unpack(exchangeWire(t, s, "tcp", b)); err != nil {
		t.Fatal(err)
	}
	if m.Rcode != dns.RcodeNotAuth || len(m.Answer) != 0 || m.IsTsig() == nil || m.IsTsig().Error != dns.RcodeBadSig {
		t.Fatalf("AXFR with a wrong MAC: %s, %d records, TSIG %v", dns.RcodeToString[m.Rcode], len(m.Answer), m.IsTsig())
	}
}

// A TSIG error answer carries the request's time signed and the server's
// fudge (RFC 8945 5.2.3 and 5.3.2; what Knot and BIND answer): a client
// matches the answer to its request by that time, and the fudge is the
// server's to state, never the request's echoed back. BADKEY and BADSIG
// went out with time signed 0 (1970), and every error with the request's
// fudge, whatever it was.
func TestTSIGErrorTimers(t *testing.T) {
	cfg := withTransfer(t, gslbConfig(t, newFakeBalancer(t), newFakeBalancer(t), ""), configs.Transfer{Allow: []string{"127.0.0.1/32"}, TSIG: tsigConfig(t)})
	s := startGSLB(t, cfg)
	const key, fudge = "xfr.ringlb.test.", 77
	wrong := base64.StdEncoding.EncodeToString([]byte("not the secret"))
	now := time.Now().Unix()
	for _, network := range []string{"udp", "tcp"} {
		for _, tt := range []struct {
			name, key, secret string
			time              int64
			tsigError         uint16
		}{
			{"unknown key", "other.ringlb.test.", testTSIGSecret, now - 10, dns.RcodeBadKey},
			{"wrong MAC", key, wrong, now - 10, dns.RcodeBadSig},
			{"an hour old", key, testTSIGSecret, now - 3600, dns.RcodeBadTime},
		} {
			t.Run(network+"/"+tt.name, func(t *testing.T) {
				m := question("www.ringlb.test.", dns.TypeA, 0)
				m.SetTsig(tt.key, dns.HmacSHA256, fudge, tt.time)
				q, _, err := dns.TsigGenerate(m, tt.secret, "", false)
				if err != nil {
					t.Fatal(err)
				}
				r := new(dns.Msg)
				if err := r.Unpack(exchangeWire(t, s, network, q)); err != nil {
					t.Fatal(err)
				}
				ts := r.IsTsig()
				if ts == nil || ts.Error != tt.tsigError {
					t.Fatalf("TSIG %v, want error %s", ts, tsigErrorName(tt.tsigError))
				}
				if ts.TimeSigned != uint64(tt.time) || ts.Fudge != tsigFudge {
					t.Errorf("%s answer: time signed %d, fudge %d; want the request's time %d and the server's fudge %d", tsigErrorName(ts.Error), ts.TimeSigned, ts.Fudge, tt.time, tsigFudge)
				}
			})
		}
	}
}
