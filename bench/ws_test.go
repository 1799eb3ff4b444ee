package bench

import (
	"os"
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
	for _, bad := range []string{"x", "127.0.0.5-127.0.0.1", "10.0.0.0-10.1.0.0"} {
		if _, err := ParseSources(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestWSOptionsValidation(t *testing.T) {
	o := WSOptions{Targets: []string{"http://x"}, Sessions: 0, Size: 8, Duration: 0, KeyIn: "body", Mode: "v9"}
	o.setDefaults()
	err := o.validate()
	if err == nil {
		t.Fatal("bad options accepted")
	}
	for _, want := range []string{"ws:// or wss://", "sessions must be", "size must be", "duration must be", "key must be", "mode must be"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

func TestPercentiles(t *testing.T) {
	var d []time.Duration
	for i := 100; i >= 1; i-- {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	p := percentiles(d)
	if p.P50 != 51*time.Millisecond || p.P99 != 100*time.Millisecond || p.Max != 100*time.Millisecond || p.Samples != 100 {
		t.Errorf("%+v", p)
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
	_, err := RunDNS(t.Context(), DNSOptions{Clients: 5000, Duration: 0}, nil)
	if err == nil {
		t.Fatal("bad options accepted")
	}
	for _, want := range []string{"server host:port is required", "clients must be", "duration must be"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}
