package gslb

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/ringlb/ringlb/configs"
)

// bigSignedZone is bigZone, signed.
func bigSignedZone(tb testing.TB, names int) configs.GSLB {
	tb.Helper()
	ksk, zsk := testKeys(tb)
	return signed(bigZone(tb, names), ksk, zsk)
}

// bigZone is fuzzConfig's zone with names more names (one A record each),
// transferable from 127.0.0.0/8 with the TSIG key of tsigConfig.
func bigZone(tb testing.TB, names int) configs.GSLB {
	tb.Helper()
	cfg := fuzzConfig(tb)
	zone, err := os.ReadFile(cfg.Zones[0].File)
	if err != nil {
		tb.Fatal(err)
	}
	var b strings.Builder
	b.Write(zone)
	for i := range names {
		fmt.Fprintf(&b, "host-%05d 300 IN A 192.0.2.%d\n", i, i%250+1)
	}
	zones := append([]configs.Zone(nil), cfg.Zones...)
	zones[0].File = filepath.Join(tb.TempDir(), "big.zone")
	if err := os.WriteFile(zones[0].File, []byte(b.String()), 0o644); err != nil {
		tb.Fatal(err)
	}
	zones[0].Transfer = configs.Transfer{Allow: []string{"127.0.0.0/8"}, TSIG: tsigConfig(tb)}
	cfg.Zones = zones
	return cfg
}

// rawTransfer asks for a TSIG-signed AXFR of ringlb.test on nc and reads
// its messages as bytes, unparsed (a secondary's parsing is not the
// primary's cost): an SOA query sent behind it is answered after the
// transfer's last message, and ends the read. It returns the messages and
// bytes read.
func rawTransfer(nc net.Conn, buf []byte) (msgs, bytes int, err error) {
	return rawTransferOf(nc, buf, "ringlb.test.", true)
}

// rawTransferOf is rawTransfer of qname (ringlb.test. in any case), the
// request signed only when tsig.
func rawTransferOf(nc net.Conn, buf []byte, qname string, tsig bool) (msgs, bytes int, err error) {
	// A dns.Conn of its own: one signs a request chained to the MAC of the
	// last one it signed, which the server (rightly) calls BADSIG.
	c := &dns.Conn{Conn: nc, TsigSecret: map[string]string{"xfr.ringlb.test.": testTSIGSecret}}
	m := new(dns.Msg)
	m.SetAxfr(qname)
	if tsig {
		m.SetTsig("xfr.ringlb.test.", dns.HmacSHA256, 300, time.Now().Unix())
	}
	if err := c.WriteMsg(m); err != nil {
		return 0, 0, err
	}
	end := new(dns.Msg)
	end.SetQuestion("ringlb.test.", dns.TypeSOA)
	if err := c.WriteMsg(end); err != nil {
		return 0, 0, err
	}
	var head [2]byte
	for {
		if _, err := io.ReadFull(c.Conn, head[:]); err != nil {
			return msgs, bytes, err
		}
		n := int(binary.BigEndian.Uint16(head[:]))
		if _, err := io.ReadFull(c.Conn, buf[:n]); err != nil {
			return msgs, bytes, err
		}
		if n >= 2 && binary.BigEndian.Uint16(buf) == end.Id {
			return msgs, bytes, nil
		}
		msgs, bytes = msgs+1, bytes+n+2
	}
}

// logCachedTransfer logs what the cached transfer of st's first zone holds
// beyond the zone and the signatures' cache (a signed zone's NSECs and
// copies of signatures, the lists, the packed messages), and drops it.
func logCachedTransfer(b *testing.B, st *state, names int) {
	var heap runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&heap)
	with := heap.HeapAlloc
	st.zones[0].xfr.cur = nil
	runtime.GC()
	runtime.ReadMemStats(&heap)
	b.Logf("the cached transfer of %d names holds %.1f MiB", names, (float64(with)-float64(heap.HeapAlloc))/(1<<20))
}

// BenchmarkSignedAXFR is a TSIG-signed transfer of a signed zone of
// 20,000 names over TCP, the secondary reading as fast as it can:
//   - first: a new serial and no signature cached (every RRset signed);
//   - new-serial: a new serial (a managed answer changed), the signatures
//     cached — the NSEC chain built and every RRset looked up again;
//   - same-serial: the serial transferred before, as every secondary of
//     the zone asks after one NOTIFY;
//   - same-serial-other-case: the same, asked for RingLB.Test. (each
//     message unpacked and packed again behind the question as asked).
func BenchmarkSignedAXFR(b *testing.B) {
	s, err := New(bigSignedZone(b, 20000), "bench", nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Start(b.Context()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Shutdown(b.Context()) })
	st := s.state.Load()
	sg := st.zones[0].signer
	nc, err := net.Dial("tcp", s.Addr())
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	buf := make([]byte, 64<<10)
	if _, _, err := rawTransfer(nc, buf); err != nil { // warm: signatures cached
		b.Fatal(err)
	}
	logCachedTransfer(b, st, 20000)
	if _, _, err := rawTransfer(nc, buf); err != nil { // cached again
		b.Fatal(err)
	}
	for _, tc := range []struct {
		name         string
		bump, resign bool
		qname        string
	}{{"first", true, true, "ringlb.test."}, {"new-serial", true, false, "ringlb.test."}, {"same-serial", false, false, "ringlb.test."}, {"same-serial-other-case", false, false, "RingLB.Test."}} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			var msgs, bytes int
			for b.Loop() {
				b.StopTimer()
				if tc.bump {
					st.serial.Add(1)
				}
				if tc.resign {
					sg.cache.clear()
				}
				b.StartTimer()
				msgs, bytes, err = rawTransferOf(nc, buf, tc.qname, true)
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(msgs), "msgs/op")
			b.ReportMetric(float64(bytes)/(1<<20), "MiB/op")
		})
	}
}

// BenchmarkUnsignedAXFR is a transfer of an unsigned zone of 20,000 names
// over TCP, the secondary reading as fast as it can, the zone's transfers
// signed with TSIG (tsig) or not (plain):
//   - new-serial: a new serial (a managed answer changed);
//   - same-serial: the serial transferred before, as every secondary of
//     the zone asks after one NOTIFY.
func BenchmarkUnsignedAXFR(b *testing.B) {
	for _, tsig := range []bool{true, false} {
		cfg := bigZone(b, 20000)
		name := "tsig"
		if !tsig {
			cfg.Zones[0].Transfer.TSIG = nil
			name = "plain"
		}
		s, err := New(cfg, "bench", nil, nil)
		if err != nil {
			b.Fatal(err)
		}
		if err := s.Start(b.Context()); err != nil {
			b.Fatal(err)
		}
		st := s.state.Load()
		nc, err := net.Dial("tcp", s.Addr())
		if err != nil {
			b.Fatal(err)
		}
		buf := make([]byte, 64<<10)
		if _, _, err := rawTransferOf(nc, buf, "ringlb.test.", tsig); err != nil { // warm
			b.Fatal(err)
		}
		logCachedTransfer(b, st, 20000)
		if _, _, err := rawTransferOf(nc, buf, "ringlb.test.", tsig); err != nil { // cached again
			b.Fatal(err)
		}
		for _, bump := range []bool{true, false} {
			sub := name + "/same-serial"
			if bump {
				sub = name + "/new-serial"
			}
			b.Run(sub, func(b *testing.B) {
				b.ReportAllocs()
				var msgs, bytes int
				for b.Loop() {
					if bump {
						b.StopTimer()
						st.serial.Add(1)
						b.StartTimer()
					}
					msgs, bytes, err = rawTransferOf(nc, buf, "ringlb.test.", tsig)
					if err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(msgs), "msgs/op")
				b.ReportMetric(float64(bytes)/(1<<20), "MiB/op")
			})
		}
		nc.Close()
		s.Shutdown(b.Context())
	}
}
