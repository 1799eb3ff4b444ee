package balancer

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ringlb/ringlb/balancer/ring"
	"github.com/ringlb/ringlb/configs"
)

// FuzzHandOff: what the old process sends the new one in a hitless upgrade
// (handoff.go), any bytes. decodeMoved never panics, and a record it
// accepts is encode's: re-encoded, it is the same bytes but for what the
// record does not carry (flag bits other than the two EOFs, the reserved
// word, both written 0). addCounters never panics; whatever it added, a
// balancer's counters sent on (countersPayload) and added to a new
// balancer's zeros are the same counters there.
func FuzzHandOff(f *testing.F) {
	for _, m := range []movedTunnel{
		{edge: "edge-1", key: "k", start: time.Unix(0, 1234), lastActive: 99, bytes: [2]uint64{7, 8}, clientEOF: true, toClient: []byte("abc"), toEdge: []byte("de")},
		{edge: "e", clientAddr: netip.MustParseAddr("192.0.2.1"), edgeEOF: true},
		{edge: "e", key: "session", clientAddr: netip.MustParseAddr("2001:db8::1"), toEdge: bytes.Repeat([]byte{1}, 300)},
		{edge: "e", clientAddr: netip.MustParseAddr("::ffff:192.0.2.1")},
	} {
		f.Add(m.encode(), []byte(`[{"name":"ringlb_balancer_requests_total","labels":{"edge":"e","code":"200"},"value":5}]`))
	}
	f.Add([]byte{movedRecordVersion}, []byte(`[{"name":"ringlb_balancer_requests_total","labels":{"nope":"x"},"value":1}]`))
	f.Add([]byte(nil), []byte(`[{"name":"ringlb_balancer_accept_errors_total","labels":{},"value":1e300},{"name":"x","value":-1}]`))
	f.Add([]byte(nil), []byte(`[{"name":"ringlb_balancer_requests_total","labels":{"edge":"\xff","code":"1"},"value":1}]`))
	f.Add([]byte(nil), []byte(`{}`))

	newBalancer := func(t *testing.T) *Balancer {
		cfg := configs.Balancer{}
		cfg.Provision()
		b, err := New(cfg, "bal", ring.New(ring.DefaultConfig()), nil, prometheus.NewRegistry())
		if err != nil {
			t.Fatal(err)
		}
		// Never served: Shutdown stops what New started.
		t.Cleanup(func() { _ = b.Shutdown(context.Background()) })
		return b
	}
	f.Fuzz(func(t *testing.T, record, counters []byte) {
		if m, err := decodeMoved(record); err == nil {
			want := slices.Clone(record)
			want[1] &= 3
			clear(want[37:45])
			if got := m.encode(); !bytes.Equal(got, want) {
				t.Fatalf("record %x decoded as %+v, re-encoded %x", record, m, got)
			}
			again, err := decodeMoved(m.encode())
			if err != nil || !reflect.DeepEqual(again, m) {
				t.Fatalf("record %+v re-decoded as %+v, %v", m, again, err)
			}
		}

		from := newBalancer(t)
		_ = from.addCounters(counters)
		p, err := from.countersPayload()
		if err != nil {
			t.Fatal(err)
		}
		to := newBalancer(t)
		if err := to.addCounters(p); err != nil {
			t.Fatalf("counters sent on refused: %v", err)
		}
		if got, want := carriedValues(t, to), carriedValues(t, from); !slices.Equal(got, want) {
			t.Fatalf("counters %v carried as %v", want, got)
		}
	})
}

// carriedValues lists b's carried counter series and values, sorted.
func carriedValues(t *testing.T, b *Balancer) []string {
	t.Helper()
	families, err := b.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	carried := b.metrics.carriedCounters()
	var out []string
	for _, f := range families {
		if _, ok := carried[f.GetName()]; !ok {
			continue
		}
		for _, m := range f.GetMetric() {
			v := m.GetCounter().GetValue()
			if v < 0 {
				t.Fatalf("%s %v = %v", f.GetName(), m.GetLabel(), v)
			}
			out = append(out, fmt.Sprintf("%s %v %v", f.GetName(), m.GetLabel(), v))
		}
	}
	sort.Strings(out)
	return out
}
