package bench

import (
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseSources(t *testing.T) {
	got, err := ParseSources("127.0.0.1-127.0.0.3,127.0.0.9")
	if err != nil {
		t.Fatal(err)
	}
	var s []string
	for _, ip := range got {
		s = append(s, ip.String())
	}
	if strings.Join(s, " ") != "127.0.0.1 127.0.0.2 127.0.0.3 127.0.0.9" {
		t.Errorf("got %v", s)
	}
	if got, err := ParseSources("127.0.0.0-127.0.3.255"); err != nil || len(got) != 1024 {
		t.Errorf("1024 addresses: %d, %v", len(got), err)
	}
	// 1025 addresses: one more than the error says a range may have.
	for _, bad := range []string{"x", "127.0.0.5-127.0.0.1", "10.0.0.0-10.1.0.0", "127.0.0.0-127.0.4.0"} {
		if _, err := ParseSources(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestWSOptionsValidation(t *testing.T) {
	o := WSOptions{Targets: []string{"http://x"}, Sessions: 0, Size: 8, Duration: 0, Ramp: -time.Second, Drain: 1000 * time.Hour, KeyIn: "body", Mode: "v9"}
	o.setDefaults()
	err := o.validate()
	if err == nil {
		t.Fatal("bad options accepted")
	}
	for _, want := range []string{"ws:// or wss://", "sessions must be", "size must be", "duration must be", "ramp must be", "drain must be", "key must be", "mode must be raw or v1"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

// Percentiles are nearest-rank (the smallest sample with at least q of
// the samples at or below it), the rank the CDF of the same run plots.
// Before, the rank was one too high: p50 of 1..100 was 51, p99 the
// maximum, and the p50 of two resume times the slower one.
func TestPercentiles(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		var d []time.Duration
		for _, x := range v {
			d = append(d, time.Duration(x)*time.Millisecond)
		}
		return d
	}
	var hundred []int
	for i := 100; i >= 1; i-- {
		hundred = append(hundred, i)
	}
	for _, tc := range []struct {
		name               string
		samples            []time.Duration
		p50, p90, p99, max int
	}{
		{"1..100", ms(hundred...), 50, 90, 99, 100},
		{"one", ms(7), 7, 7, 7, 7},
		{"two", ms(20, 10), 10, 20, 20, 20},
		{"ten", ms(10, 9, 8, 7, 6, 5, 4, 3, 2, 1), 5, 9, 10, 10},
	} {
		p := percentiles(slices.Clone(tc.samples))
		want := Percentiles{P50: time.Duration(tc.p50) * time.Millisecond, P90: time.Duration(tc.p90) * time.Millisecond,
			P99: time.Duration(tc.p99) * time.Millisecond, Max: time.Duration(tc.max) * time.Millisecond, Samples: len(tc.samples)}
		if p != want {
			t.Errorf("%s: got %+v, want %+v", tc.name, p, want)
		}
		// The summary line and the chart of one run agree.
		sorted := slices.Sorted(slices.Values(tc.samples))
		for _, pt := range cdf(sorted) {
			for q, got := range map[float64]time.Duration{0.5: p.P50, 0.9: p.P90, 0.99: p.P99} {
				if pt.Fraction >= q && (pt.Latency < got) {
					t.Errorf("%s: the CDF has %.3f of the samples at or below %s, below p%g=%s", tc.name, pt.Fraction, pt.Latency, 100*q, got)
				}
			}
		}
	}
	if (percentiles(nil) != Percentiles{}) {
		t.Error("empty sample")
	}
}

func TestSampleProcs(t *testing.T) {
	rss, cpu, err := sampleProcs([]int{os.Getpid()})
	if err != nil || rss <= 0 || cpu < 0 {
		t.Fatalf("rss %d cpu %g err %v", rss, cpu, err)
	}
	if _, _, err := sampleProcs([]int{1 << 30}); err == nil {
		t.Fatal("no error for a missing process")
	}
}

func TestDNSOptionsValidation(t *testing.T) {
	// A negative -max-queries once counted no query as sent: "0 queries,
	// N answered, 0 lost".
	_, err := RunDNS(t.Context(), DNSOptions{Clients: 5000, Duration: 0, MaxQueries: -1}, nil)
	if err == nil {
		t.Fatal("bad options accepted")
	}
	for _, want := range []string{"server host:port is required", "clients must be", "duration must be", "max queries must be"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

func TestV1MessageStamp(t *testing.T) {
	msg, stamp := newV1Message(40)
	stamp(msg, 123456789*time.Nanosecond, 7, 42)
	var env struct {
		Type string `json:"type"`
		Data string `json:"data"`
	}
	if err := json.Unmarshal(msg, &env); err != nil || env.Type != "msg" || len(env.Data) != 38 {
		t.Fatalf("%s: %+v %v", msg, env, err)
	}
	at, _ := parseHex([]byte(env.Data[:16]))
	from, _ := parseHex([]byte(env.Data[16:24]))
	seq, _ := parseHex([]byte(env.Data[24:32]))
	if at != 123456789 || from != 7 || seq != 42 {
		t.Errorf("stamp read back as %d %d %d", at, from, seq)
	}
	if _, ok := parseHex([]byte("0x")); ok {
		t.Error("parseHex accepted x")
	}
}

func TestEnvelopeFields(t *testing.T) {
	for _, tt := range []struct {
		frame, kind string
		seq         uint64
		ok          bool
	}{
		{`{"type":"msg","seq":17,"from":"abc","ts":1,"data":"00"}`, "msg", 17, true},
		{`{"type":"ack","seq":3}`, "ack", 3, true},
		{`{"type":"join","participant":"p"}`, "", 0, false},
		{`{"type":"ack","seq":x}`, "ack", 0, false},
	} {
		kind := envelopeType([]byte(tt.frame))
		seq, ok := uintField([]byte(tt.frame), `"seq":`)
		if kind != tt.kind || seq != tt.seq || ok != tt.ok {
			t.Errorf("%s: %q %d %v", tt.frame, kind, seq, ok)
		}
	}
}

func TestV1NeedsRoomForTheStamp(t *testing.T) {
	o := WSOptions{Targets: []string{"ws://x/ws"}, Sessions: 1, Duration: time.Second, Mode: "v1", Size: 20}
	o.setDefaults()
	if err := o.validate(); err == nil || !strings.Contains(err.Error(), "at least 34 in v1 mode") {
		t.Errorf("size 20 in v1: %v", err)
	}
}

// A run's percentiles count every delivery alike, however the deliveries
// fall among receivers. Each receiver keeps at most maxSamples of its
// latencies; before, the samples were pooled one for one, so a receiver
// that got 100,000 deliveries at 1 ms weighed as much as one that got
// 4,096 at 100 ms, and nine of the latter made the run's median 100 ms
// when 73 % of its deliveries took 1 ms.
func TestLatencyMergeCountsEveryDeliveryAlike(t *testing.T) {
	busy := &latencySample{max: maxSamples}
	for range 100000 {
		busy.add(time.Millisecond)
	}
	samples := []*latencySample{busy}
	for range 9 {
		quiet := &latencySample{max: maxSamples}
		for range maxSamples {
			quiet.add(100 * time.Millisecond)
		}
		samples = append(samples, quiet)
	}
	l := mergeLatencies(samples)
	p := l.percentiles()
	want := Percentiles{P50: time.Millisecond, P90: 100 * time.Millisecond, P99: 100 * time.Millisecond, Max: 100 * time.Millisecond, Samples: 10 * maxSamples}
	if p != want {
		t.Errorf("100,000 deliveries at 1 ms and 9 × 4,096 at 100 ms: got %+v, want %+v", p, want)
	}
	// The CDF says the same: 100,000 of 136,864 deliveries at 1 ms.
	const fast = 100000.0 / 136864
	c := l.cdf()
	for _, pt := range c {
		if (pt.Latency == time.Millisecond) != (pt.Fraction <= fast+1e-9) {
			t.Errorf("the CDF has %.4f of the deliveries at or below %s; %.4f took 1 ms", pt.Fraction, pt.Latency, fast)
		}
	}
	if last := c[len(c)-1]; last.Fraction != 1 {
		t.Errorf("the CDF ends at %+v", last)
	}
}
