package gslb

import (
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/miekg/dns"
	dto "github.com/prometheus/client_model/go"

	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health/healthtest"
)

func notifyCount(t *testing.T, s *Server, result string) float64 {
	t.Helper()
	var m dto.Metric
	if err := s.metrics.notifies.WithLabelValues("ringlb.test.", result).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// firstNotifyAnswered waits until s has had its first NOTIFY to the test
// zone's secondary answered, and returns its counts taken as acknowledged
// and refused.
func firstNotifyAnswered(t *testing.T, s *Server) (ok, failed float64) {
	t.Helper()
	healthtest.WaitUntil(t, "the first NOTIFY is answered", func() bool {
		return notifyCount(t, s, "ok")+notifyCount(t, s, "error") >= 1
	})
	return notifyCount(t, s, "ok"), notifyCount(t, s, "error")
}

// The zone has a TSIG key, so its NOTIFYs are signed; what answers at the
// secondary's address does not know the key (an impostor on the path, a
// host that took the secondary's old address) and acknowledges unsigned.
// RFC 8945 5.3: an answer to a signed request that carries no TSIG is
// discarded. It was taken as the secondary's acknowledgement: the NOTIFY
// counted "ok", logged acknowledged, never retried — while the secondary
// heard nothing and stayed on the old serial.
func TestUnsignedAckIsNoAcknowledgement(t *testing.T) {
	impostor := serveNotifyUDP(t, "impostor", nil, func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		w.WriteMsg(m) // NOERROR, unsigned
	})

	east, west := newFakeBalancer(t), newFakeBalancer(t)
	cfg := withTransfer(t, gslbConfig(t, east, west, ""), configs.Transfer{Notify: []string{impostor}, TSIG: tsigConfig(t)})
	s := startGSLB(t, cfg)
	ok, failed := firstNotifyAnswered(t, s)
	t.Logf("unsigned answers to signed NOTIFYs: %.0f taken as acknowledged, %.0f refused", ok, failed)
	if ok != 0 {
		t.Errorf("%.0f unsigned answers to a signed NOTIFY were taken as the secondary's acknowledgement", ok)
	}
}

// A reload that takes a zone's NOTIFYs away (the zone, or its notify list)
// takes its ringlb_gslb_notifies_total series with it, as it does a removed
// member's: they are made at 0 when the zone is configured, before its
// first NOTIFY, so that its first error is an increase.
func TestReloadForgetsARemovedZonesNotifies(t *testing.T) {
	secondary := serveNotifyUDP(t, "secondary", nil, func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		w.WriteMsg(m)
	})

	east, west := newFakeBalancer(t), newFakeBalancer(t)
	s := startGSLB(t, withTransfer(t, gslbConfig(t, east, west, ""), configs.Transfer{Notify: []string{secondary}}))
	// exported is the zone's series a scrape shows, by result.
	exported := func() map[string]float64 {
		t.Helper()
		mfs, err := s.reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]float64{}
		for _, mf := range mfs {
			if mf.GetName() != "ringlb_gslb_notifies_total" {
				continue
			}
			for _, m := range mf.GetMetric() {
				if l := labels(m); l["zone"] == "ringlb.test." {
					out[l["result"]] = m.GetCounter().GetValue()
				}
			}
		}
		return out
	}
	waitFor(t, "the secondary acknowledged the first NOTIFY", func() bool { return exported()["ok"] == 1 })
	if got := exported(); len(got) != 2 || got["error"] != 0 {
		t.Errorf("the zone's NOTIFY series: %v, want ok and error", got)
	}
	reloadReturns(t, s, gslbConfig(t, east, west, ""))
	waitFor(t, "the zone's NOTIFY series gone after a reload took its notify away", func() bool { return len(exported()) == 0 })
}

// A zone's NOTIFYs are signed with its key. What answers at the
// secondary's address holds another key the gslb knows — another zone's,
// handed to that zone's secondaries — and acknowledges signed with it.
// That proves the key it holds, not the zone's: it is no more the zone's
// secondary than an unsigned answer is (RFC 8945 5.3: the answer is signed
// with the request's key). It was taken as the acknowledgement: miekg/dns
// verifies whatever key an answer names, if the gslb has it.
func TestAckSignedWithAnotherZonesKeyIsNoAcknowledgement(t *testing.T) {
	const otherKey, otherSecret = "other.test.", "YW5vdGhlciB6b25lJ3Mgc2VjcmV0IGtleQ=="
	impostor := serveNotifyUDP(t, "impostor", map[string]string{otherKey: otherSecret}, func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		m.SetTsig(otherKey, dns.HmacSHA256, 300, time.Now().Unix())
		w.WriteMsg(m) // NOERROR, signed with the other zone's key
	})

	east, west := newFakeBalancer(t), newFakeBalancer(t)
	cfg := withTransfer(t, gslbConfig(t, east, west, ""), configs.Transfer{Notify: []string{impostor}, TSIG: tsigConfig(t)})
	f := filepath.Join(t.TempDir(), "other.key")
	if err := os.WriteFile(f, []byte(otherSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.Zones = append(cfg.Zones, configs.Zone{Origin: "other.test",
		Records:  []string{"@ 3600 IN SOA ns1 hostmaster 1 7200 3600 1209600 60", "@ 3600 IN NS ns1.ringlb.test."},
		Transfer: configs.Transfer{Allow: []string{"192.0.2.0/24"}, TSIG: &configs.TSIG{Name: otherKey, Algorithm: "hmac-sha256", SecretFile: f}}})
	s := startGSLB(t, cfg)
	ok, failed := firstNotifyAnswered(t, s)
	t.Logf("answers signed with another zone's key: %.0f taken as acknowledged, %.0f refused", ok, failed)
	if ok != 0 {
		t.Errorf("%.0f answers signed with another zone's key were taken as the secondary's acknowledgement", ok)
	}
}

// Whatever is at the secondary's address sends back what it got (an echo
// service, a reflecting middlebox, a NOTIFY loop): the NOTIFY itself, QR
// clear — a request, no answer. It has the ID, the opcode and NOERROR, and
// was taken as the acknowledgement of an unsigned zone's NOTIFY.
func TestEchoedNotifyIsNoAcknowledgement(t *testing.T) {
	echo, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		buf := make([]byte, 4096)
		for {
			n, from, err := echo.ReadFrom(buf)
			if err != nil {
				return
			}
			echo.WriteTo(buf[:n], from)
		}
	}()
	east, west := newFakeBalancer(t), newFakeBalancer(t)
	s := startGSLB(t, withTransfer(t, gslbConfig(t, east, west, ""), configs.Transfer{Notify: []string{echo.LocalAddr().String()}}))
	ok, failed := firstNotifyAnswered(t, s)
	t.Logf("NOTIFYs echoed back: %.0f taken as acknowledged, %.0f refused", ok, failed)
	if ok != 0 {
		t.Errorf("%.0f NOTIFYs echoed back were taken as the secondary's acknowledgement", ok)
	}
}

// A secondary that is down (its packets dropped: a host gone, a firewall)
// is first in the notify list, a live one after it. The NOTIFYs went one
// after another, each waiting up to its 2 s deadline: the live secondary
// heard of a change only once the dead one had been given up on — per zone
// and per dead secondary in front of it, and again on every retry round,
// so with a dozen zones notifying a dead secondary a failover reached the
// live secondaries about half a minute late. They go at once now: the live
// secondary has its NOTIFY while the dead one's is still unanswered.
func TestSilentSecondaryDelaysNoOtherNotify(t *testing.T) {
	silent, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	live := newFakeSecondary(t)
	east, west := newFakeBalancer(t), newFakeBalancer(t)
	start := time.Now()
	s := startGSLB(t, withTransfer(t, gslbConfig(t, east, west, ""), configs.Transfer{Notify: []string{silent.LocalAddr().String(), live.addr}}))
	live.next(t)
	given := notifyCount(t, s, "error")
	t.Logf("the live secondary heard the first NOTIFY after %s, %.0f NOTIFYs to the silent one given up on by then", time.Since(start).Round(time.Millisecond), given)
	if given != 0 {
		t.Errorf("the live secondary heard of the change only after the silent one's NOTIFY was given up on (%.0f)", given)
	}
}

// A zone without secondaries to notify has an empty round at every serial
// change — every failover — and the round's slots and wait group were
// made for it all the same (BenchmarkFirstAnswerAfterFailover).
func TestEmptyNotifyRoundAllocatesNothing(t *testing.T) {
	east, west := newFakeBalancer(t), newFakeBalancer(t)
	s := startGSLB(t, gslbConfig(t, east, west, ""))
	st := s.state.Load()
	if n := testing.AllocsPerRun(100, func() { s.sendNotifies(t.Context(), st, nil) }); n != 0 {
		t.Errorf("an empty NOTIFY round made %.0f allocations", n)
	}
}
