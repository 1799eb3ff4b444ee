package bench

import (
	"bytes"
	"encoding/xml"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ringlb/ringlb/balancer/ring"
)

// svgSeries parses an SVG document strictly as XML and returns its panels'
// titles and the series names of each.
func svgSeries(t *testing.T, doc []byte) (panels []string, series map[string][]string) {
	t.Helper()
	dec := xml.NewDecoder(bytes.NewReader(doc))
	dec.Strict = true
	series = map[string][]string{}
	sawRoot := false
	current := ""
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("not valid XML: %v\n%s", err, doc)
		}
		se, ok := tok.(xml.StartElement)
		if !ok {
			continue
		}
		attr := map[string]string{}
		for _, a := range se.Attr {
			attr[a.Name.Local] = a.Value
		}
		switch {
		case !sawRoot:
			if se.Name.Local != "svg" || se.Name.Space != "http://www.w3.org/2000/svg" {
				t.Fatalf("root element %v", se.Name)
			}
			sawRoot = true
		case se.Name.Local == "g" && attr["class"] == "panel":
			current = attr["data-title"]
			panels = append(panels, current)
		case se.Name.Local == "g" && attr["class"] == "series":
			series[current] = append(series[current], attr["data-name"])
		}
	}
	return panels, series
}

func render(t *testing.T, write func(io.Writer) error) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := write(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestWSChart(t *testing.T) {
	var lat []time.Duration
	for i := 1; i <= 5000; i++ {
		lat = append(lat, time.Duration(i)*time.Microsecond)
	}
	r := &WSResult{
		Options: WSOptions{Mode: "v1", Sessions: 10, Participants: 3, Rate: 1, Size: 256, Duration: 3 * time.Second},
		Latency: percentiles(lat), LatencyCDF: cdf(lat),
		Timeline: []Tick{{}, {At: time.Second, Connections: 20}, {At: 1500 * time.Millisecond, Connections: 30},
			{At: 2500 * time.Millisecond, Connections: 30, Delivered: 60}, {At: 3500 * time.Millisecond, Connections: 30, Delivered: 120}},
	}
	panels, series := svgSeries(t, render(t, r.WriteSVG))
	if len(panels) != 3 {
		t.Fatalf("panels %q", panels)
	}
	for i, want := range []string{"latency", "delivered/s", "connections"} {
		if got := series[panels[i]]; !slices.Equal(got, []string{want}) {
			t.Errorf("panel %q: series %q, want %q", panels[i], got, want)
		}
	}
}

func TestDNSChart(t *testing.T) {
	lat := []time.Duration{100 * time.Microsecond, 200 * time.Microsecond, 5 * time.Millisecond}
	r := &DNSResult{
		Options: DNSOptions{Server: "127.0.0.1:5353", Clients: 8}, Latency: percentiles(lat), LatencyCDF: cdf(lat),
		Timeline: []DNSTick{{}, {At: time.Second, Answered: 1000}, {At: 2 * time.Second, Answered: 2100}},
	}
	panels, series := svgSeries(t, render(t, r.WriteSVG))
	if len(panels) != 2 || !slices.Equal(series[panels[0]], []string{"latency"}) || !slices.Equal(series[panels[1]], []string{"answers/s"}) {
		t.Errorf("panels %q, series %q", panels, series)
	}
}

func TestRingRunAndChart(t *testing.T) {
	var progress strings.Builder
	r, err := RunRing(t.Context(), RingOptions{Ring: ring.Config{Partitions: 271, Replication: 20, Load: 1.25}, Edges: 3, Keys: 2000, LookupTime: time.Millisecond}, &progress)
	if err != nil {
		t.Fatal(err)
	}
	var keys, parts float64
	for _, s := range r.Shares {
		keys += s.Keys
		parts += s.Partitions
	}
	if len(r.Shares) != 3 || keys < 0.999 || keys > 1.001 || parts < 0.999 || parts > 1.001 || r.Busiest < 1 || r.LookupNs <= 0 {
		t.Errorf("shares %+v (sum %g, %g), busiest %g, lookup %g", r.Shares, keys, parts, r.Busiest, r.LookupNs)
	}
	var names []string
	for _, c := range r.Changes {
		names = append(names, c.Change)
		if c.Moved < c.Needless || c.Moved > 1 || c.Ideal <= 0 {
			t.Errorf("change %+v", c)
		}
	}
	if !slices.Equal(names, []string{"+edge-4", "-edge-1", "-edge-2", "-edge-3"}) {
		t.Errorf("changes %q", names)
	}
	if !strings.Contains(progress.String(), "[ring] +edge-4") || !strings.Contains(r.Summary(), "+edge-4 moved") {
		t.Errorf("progress %q, summary %q", progress.String(), r.Summary())
	}
	panels, series := svgSeries(t, render(t, r.WriteSVG))
	if len(panels) != 2 || !slices.Equal(series[panels[0]], []string{"keys", "partitions"}) ||
		!slices.Equal(series[panels[1]], []string{"moved", "ideal", "needlessly"}) {
		t.Errorf("panels %q, series %q", panels, series)
	}
}

func TestRingOptionsValidation(t *testing.T) {
	_, err := RunRing(t.Context(), RingOptions{Ring: ring.Config{Partitions: 7, Replication: 1, Load: 0.5}, Edges: 500, Keys: 5}, nil)
	for _, want := range []string{"ring.load", "edges must be", "keys must be"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v lacks %q", err, want)
		}
	}
}

// Charts of empty runs (nothing connected, nothing answered) and names
// with markup characters are still valid XML.
func TestChartEdgeCases(t *testing.T) {
	svgSeries(t, render(t, (&WSResult{}).WriteSVG))
	svgSeries(t, render(t, (&DNSResult{Options: DNSOptions{Server: `<"a&b">`}}).WriteSVG))
	svgSeries(t, render(t, (&RingResult{}).WriteSVG))
}

func TestCDF(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 100000; i++ {
		d = append(d, time.Duration(i))
	}
	c := cdf(d)
	if len(c) > 200 || c[len(c)-1] != (CDFPoint{Latency: 100000, Fraction: 1}) {
		t.Fatalf("%d points, last %+v", len(c), c[len(c)-1])
	}
	for i := 1; i < len(c); i++ {
		if c[i].Fraction <= c[i-1].Fraction || c[i].Latency < c[i-1].Latency {
			t.Fatalf("not increasing at %d: %+v %+v", i, c[i-1], c[i])
		}
	}
	if cdf(nil) != nil {
		t.Error("cdf of nothing")
	}
}

func TestNiceTicks(t *testing.T) {
	for _, tt := range []struct {
		lo, hi float64
		want   []float64
	}{
		{0, 1, []float64{0, 0.2, 0.4, 0.6, 0.8, 1}},
		{0, 7300, []float64{0, 2000, 4000, 6000, 8000}},
		{0, 0, []float64{0, 0.2, 0.4, 0.6, 0.8, 1}},
	} {
		if got := niceTicks(tt.lo, tt.hi); !slices.Equal(got, tt.want) {
			t.Errorf("niceTicks(%g, %g) = %v, want %v", tt.lo, tt.hi, got, tt.want)
		}
	}
}
