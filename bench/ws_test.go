package bench

import (
	"encoding/json"
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
	for _, want := range []string{"ws:// or wss://", "sessions must be", "size must be", "duration must be", "key must be", "mode must be raw or v1"} {
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
