package balancer

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/valyala/fasthttp"

	"github.com/ringlb/ringlb/configs"
)

func ptr[T any](v T) *T { return &v }

func mustExtractor(t testing.TB, cfg configs.Key) *keyExtractor {
	t.Helper()
	c := configs.Balancer{Key: cfg}
	c.Provision()
	return newKeyExtractor(c.Key)
}

func request(uri string, headers ...string) *fasthttp.Request {
	req := &fasthttp.Request{}
	req.SetRequestURI(uri)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	return req
}

func TestExtract(t *testing.T) {
	def := mustExtractor(t, configs.Key{})
	raw := mustExtractor(t, configs.Key{HashQuery: ptr(false), MaxLength: 8})
	cookieFirst := mustExtractor(t, configs.Key{Sources: []string{"cookie:sid", "header:X-Session"}})
	tests := []struct {
		name    string
		e       *keyExtractor
		req     *fasthttp.Request
		wantKey string
		wantSrc sourceKind
		wantErr error
	}{
		{"header", def, request("/", "ctstickiness", "abc"), "abc", sourceHeader, nil},
		{"header wins over cookie", def, request("/", "ctstickiness", "h", "Cookie", "ctstickiness=c"), "h", sourceHeader, nil},
		{"cookie", def, request("/", "Cookie", "a=1; ctstickiness=c1"), "c1", sourceCookie, nil},
		{"empty header falls through", def, request("/", "ctstickiness", "", "Cookie", "ctstickiness=c2"), "c2", sourceCookie, nil},
		{"query hashed", def, request("/ws?token=secret"), hashedKey("secret"), sourceQuery, nil},
		{"query raw", raw, request("/ws?token=secret"), "secret", sourceQuery, nil},
		{"none", def, request("/"), "", 0, errNoKey},
		{"too long", raw, request("/", "ctstickiness", "123456789"), "", sourceHeader, errKeyTooLong},
		{"max length ok", raw, request("/", "ctstickiness", "12345678"), "12345678", sourceHeader, nil},
		{"control", raw, request("/?token=a%01"), "", sourceQuery, errKeyControls},
		{"DEL", raw, request("/?token=a%7F"), "", sourceQuery, errKeyControls},
		{"tab", raw, request("/?token=a%09"), "", sourceQuery, errKeyControls},
		{"query raw, blanks dropped", raw, request("/?token=%20ab%20c%20%20"), "ab c", sourceQuery, nil},
		{"query raw of blanks is no key", raw, request("/?token=%20%20"), "", 0, errNoKey},
		{"query hashed with its blanks", def, request("/?token=%20tok%20"), hashedKey(" tok "), sourceQuery, nil},
		{"utf-8 ok", raw, request("/?token=%C3%A9t%C3%A9"), "été", sourceQuery, nil},
		{"not utf-8 header", def, request("/", "ctstickiness", "\xff"), "", sourceHeader, errKeyNotUTF8},
		{"not utf-8 cookie", def, request("/", "Cookie", "ctstickiness=a\xfe"), "", sourceCookie, errKeyNotUTF8},
		{"not utf-8 query", raw, request("/?token=%FF"), "", sourceQuery, errKeyNotUTF8},
		{"C1 control", raw, request("/?token=a%C2%9B"), "", sourceQuery, errKeyControls},
		{"hashed query of invalid utf-8 ok", def, request("/?token=%FF"), hashedKey("\xff"), sourceQuery, nil},
		{"hashed long token ok", def, request("/?token=" + strings.Repeat("j", 2000)), hashedKey(strings.Repeat("j", 2000)), sourceQuery, nil},
		{"custom order", cookieFirst, request("/", "X-Session", "h", "Cookie", "sid=c"), "c", sourceCookie, nil},
		{"custom header", cookieFirst, request("/", "x-session", "h"), "h", sourceHeader, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf keyBuf
			key, src, err := tt.e.extract(tt.req, &buf)
			if !errors.Is(err, tt.wantErr) || string(key) != tt.wantKey || (err == nil && src != tt.wantSrc) {
				t.Fatalf("extract = %q, %v, %v; want %q, %v, %v", key, src, err, tt.wantKey, tt.wantSrc, tt.wantErr)
			}
		})
	}
}

func TestAssignKey(t *testing.T) {
	var a, b keyBuf
	ka, kb := string(assignKey(&a)), string(assignKey(&b))
	if len(ka) != 32 || strings.Trim(ka, "0123456789abcdef") != "" || ka == kb {
		t.Fatalf("assigned %q and %q", ka, kb)
	}
}

// Without a cookie source and no explicit assign_cookie, keys are not
// assigned (nobody would read the cookie back). The key section's checks
// are configs' (configs/balancer_test.go).
func TestNoCookieNoAssignment(t *testing.T) {
	e := mustExtractor(t, configs.Key{Sources: []string{"header:ctstickiness"}})
	if e.assignCookie != "" {
		t.Fatalf("assigns cookie %q without a cookie source", e.assignCookie)
	}
}

// BenchmarkExtract proves key extraction allocation-free for every source.
func BenchmarkExtract(b *testing.B) {
	e := mustExtractor(b, configs.Key{Sources: slices.Concat(configs.DefaultKeySources, []string{"path:2"})})
	for _, bb := range []struct {
		name string
		req  *fasthttp.Request
	}{
		{"header", request("/ws", "ctstickiness", "0123456789abcdef0123456789abcdef")},
		{"cookie", request("/ws", "Cookie", "theme=dark; ctstickiness=0123456789abcdef0123456789abcdef")},
		{"query", request("/ws?room=1&token=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U")},
		{"path", request("/s/0123456789abcdef0123456789abcdef/ws")},
		{"none", request("/ws")},
	} {
		b.Run(bb.name, func(b *testing.B) {
			var buf keyBuf
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := e.extract(bb.req, &buf); err != nil && !errors.Is(err, errNoKey) {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestExtractAllocs keeps the zero-allocation property in the ordinary test run.
func TestExtractAllocs(t *testing.T) {
	e := mustExtractor(t, configs.Key{})
	for _, req := range []*fasthttp.Request{
		request("/", "ctstickiness", "k"),
		request("/", "Cookie", "ctstickiness=k"),
		request("/?token=t"),
		request("/", "ctstickiness", "été"),
		request("/", "ctstickiness", "\xff"), // refused without allocating
	} {
		var buf keyBuf
		_, _, _ = e.extract(req, &buf) // first call parses lazily into reused buffers
		if n := testing.AllocsPerRun(100, func() { _, _, _ = e.extract(req, &buf) }); n != 0 {
			t.Errorf("%s: %v allocs per extract", req.URI(), n)
		}
	}
}

// FuzzExtract: whatever a client sends, a key that is accepted is non-empty,
// within max_length, valid UTF-8 and free of control characters.
func FuzzExtract(f *testing.F) {
	for _, s := range []string{"abc", "", "a\x01b", "\x7f", strings.Repeat("x", 300), "é", "a;b=c", "  ", "\xff", "a\x80"} {
		f.Add(s, s)
	}
	e := mustExtractor(f, configs.Key{HashQuery: ptr(false)})
	f.Fuzz(func(t *testing.T, header, query string) {
		req := &fasthttp.Request{}
		req.Header.Set("ctstickiness", header)
		req.URI().QueryArgs().Set("token", query)
		var buf keyBuf
		key, _, err := e.extract(req, &buf)
		if err != nil {
			return
		}
		if len(key) == 0 || len(key) > e.maxLength {
			t.Fatalf("accepted key of length %d", len(key))
		}
		if !utf8.Valid(key) {
			t.Fatalf("accepted key %q that is not UTF-8", key)
		}
		for _, c := range key {
			if c < 0x20 || c == 0x7f {
				t.Fatalf("accepted key %q with a control character", key)
			}
		}
	})
}
