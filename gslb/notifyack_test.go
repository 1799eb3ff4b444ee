package gslb

import (
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

// The zone has a TSIG key, so its NOTIFYs are signed; what answers at the
// secondary's address does not know the key (an impostor on the path, a
// host that took the secondary's old address) and acknowledges unsigned.
// RFC 8945 5.3: an answer to a signed request that carries no TSIG is
// discarded. It was taken as the secondary's acknowledgement: the NOTIFY
// counted "ok", logged acknowledged, never retried — while the secondary
// heard nothing and stayed on the old serial.
func TestUnsignedAckIsNoAcknowledgement(t *testing.T) {
	impostor := &dns.Server{Addr: "127.0.0.1:0", Net: "udp",
		MsgAcceptFunc: func(dns.Header) dns.MsgAcceptAction { return dns.MsgAccept },
		Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
			m := new(dns.Msg)
			m.SetReply(r)
			w.WriteMsg(m) // NOERROR, unsigned
		})}
	up := make(chan struct{})
	impostor.NotifyStartedFunc = func() { close(up) }
	go impostor.ListenAndServe()
	select {
	case <-up:
	case <-time.After(5 * time.Second):
		t.Fatal("impostor did not start")
	}
	defer impostor.Shutdown()

	east, west := newFakeBalancer(t), newFakeBalancer(t)
	cfg := withTransfer(t, gslbConfig(t, east, west, ""), configs.Transfer{Notify: []string{impostor.PacketConn.LocalAddr().String()}, TSIG: tsigConfig(t)})
	s := startGSLB(t, cfg)
	healthtest.WaitUntil(t, "the first NOTIFY is answered", func() bool {
		return notifyCount(t, s, "ok")+notifyCount(t, s, "error") >= 1
	})
	ok, failed := notifyCount(t, s, "ok"), notifyCount(t, s, "error")
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
	secondary := &dns.Server{Addr: "127.0.0.1:0", Net: "udp",
		MsgAcceptFunc: func(dns.Header) dns.MsgAcceptAction { return dns.MsgAccept },
		Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
			m := new(dns.Msg)
			m.SetReply(r)
			w.WriteMsg(m)
		})}
	up := make(chan struct{})
	secondary.NotifyStartedFunc = func() { close(up) }
	go secondary.ListenAndServe()
	select {
	case <-up:
	case <-time.After(5 * time.Second):
		t.Fatal("secondary did not start")
	}
	defer secondary.Shutdown()

	east, west := newFakeBalancer(t), newFakeBalancer(t)
	s := startGSLB(t, withTransfer(t, gslbConfig(t, east, west, ""), configs.Transfer{Notify: []string{secondary.PacketConn.LocalAddr().String()}}))
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
