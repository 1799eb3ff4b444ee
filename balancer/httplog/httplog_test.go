package httplog

import (
	"bytes"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/ringlb/ringlb/balancer/acceptguard"
)

func TestRedact(t *testing.T) {
	const secret = "PLANTED-SECRET"
	for _, tt := range []struct{ in, want string }{
		{
			`error when serving connection "127.0.0.1:8080"<->"127.0.0.1:5123": error when reading request headers: malformed mime header: missing colon: "Authorization Bearer PLANTED-SECRET": buffer size=104`,
			`error when serving connection "127.0.0.1:8080"<->"127.0.0.1:5123": error when reading request headers: malformed mime header: missing colon: "[redacted]": buffer size=104`,
		},
		{
			`unsupported http request method "BLAH\x00" in "BLAH\x00 /x?token=PLANTED-SECRET HTTP/1.1\r\nCookie: c=PLANTED-SECRET\r\n\r\n": buffer size=66, contents: "GET /?token=PLANTED-SECRET`,
			`unsupported http request method "[redacted]" in "[redacted]": buffer size=66, contents: "[redacted]"`,
		},
		{`"[::1]:9090"<->"[::1]:40000": timeout`, `"[::1]:9090"<->"[::1]:40000": timeout`},
		{`no quotes at all`, `no quotes at all`},
		{`a "quoted \"PLANTED-SECRET\" with escapes" end`, `a "[redacted]" end`},
	} {
		got := Redact(tt.in)
		if got != tt.want {
			t.Errorf("Redact(%q)\n got %q\nwant %q", tt.in, got, tt.want)
		}
		if strings.Contains(got, secret) {
			t.Errorf("Redact kept the secret: %q", got)
		}
	}
}

func FuzzRedact(f *testing.F) {
	f.Add(`error when serving connection "127.0.0.1:1"<->"127.0.0.1:2": "x"`)
	f.Add(`"unterminated \"`)
	f.Fuzz(func(t *testing.T, line string) {
		out := Redact(line)
		// Every quoted string left is an address or the redaction mark.
		for rest := out; ; {
			i := strings.IndexByte(rest, '"')
			if i < 0 {
				break
			}
			q, err := strconv.QuotedPrefix(rest[i:])
			if err != nil {
				t.Fatalf("Redact(%q) = %q: unterminated quote", line, out)
			}
			if s, _ := strconv.Unquote(q); q != Redacted {
				if _, err := netip.ParseAddrPort(s); err != nil {
					t.Fatalf("Redact(%q) = %q keeps %s", line, out, q)
				}
			}
			rest = rest[i+len(q):]
		}
	})
}

// A limited Logger writes the first line, holds back the rest of its
// interval (counting every one) and says how many it held back on the next.
func TestLimit(t *testing.T) {
	var out bytes.Buffer
	lines := prometheus.NewCounter(prometheus.CounterOpts{Name: "lines_total"})
	lim := &Limit{LogLimit: acceptguard.LogLimit{Every: time.Hour}, Lines: lines}
	l := Logger{L: slog.New(slog.NewTextHandler(&out, nil)), Limit: lim}
	for range 5 {
		l.Printf("error when serving connection %q<->%q: %s", "127.0.0.1:1", "127.0.0.1:2", "bad")
	}
	if n := strings.Count(out.String(), "\n"); n != 1 {
		t.Fatalf("%d lines written, want 1: %s", n, out.String())
	}
	lim.Every = time.Nanosecond // the interval is over
	time.Sleep(time.Millisecond)
	l.Printf("again")
	if !strings.Contains(out.String(), "suppressed=4") {
		t.Errorf("the next line does not say 4 were held back: %s", out.String())
	}
	var m dto.Metric
	if err := lines.Write(&m); err != nil {
		t.Fatal(err)
	}
	if got := m.GetCounter().GetValue(); got != 6 {
		t.Errorf("counted %v lines, want 6", got)
	}
}

// A key reaches a log line as its hash only: the 16 hex digits of the
// ring's xxhash, the same from []byte and string, in text and JSON lines.
func TestKeyHashInLogs(t *testing.T) {
	const key = "team-42/secret-pad"
	if Key([]byte(key)) != KeyString(key) {
		t.Fatal("Key and KeyString differ")
	}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("x", "key", KeyString(key))
	slog.New(slog.NewTextHandler(&buf, nil)).Info("x", "key", KeyString(key))
	out := buf.String()
	if strings.Contains(out, key) || strings.Count(out, KeyString(key).String()) != 2 || len(KeyString(key).String()) != 16 {
		t.Errorf("log lines %q: want the key's 16-digit hash twice and never the key", out)
	}
	if got := string(KeyHash(0x9f86d081884c7d65).AppendText(nil)); got != "9f86d081884c7d65" {
		t.Errorf("AppendText = %q", got)
	}
}

// A line is cut at MaxLine once redacted, saying how much was cut: what an
// error lists of a client's (crypto/tls's ALPN names) is as long as the
// client makes it.
func TestLongLineCut(t *testing.T) {
	var out bytes.Buffer
	l := Logger{L: slog.New(slog.NewTextHandler(&out, nil))}
	names := make([]string, 5000)
	for i := range names {
		names[i] = "secret"
	}
	l.Printf("error when serving connection %q<->%q: tls: client requested unsupported application protocols (%q)", "127.0.0.1:1", "127.0.0.1:2", names)
	got := out.String()
	if len(got) > 2*MaxLine || !strings.Contains(got, "bytes cut") || strings.Contains(got, "secret") {
		t.Errorf("a line of 5,000 quoted names logged as %d bytes: %.300s", len(got), got)
	}
}
