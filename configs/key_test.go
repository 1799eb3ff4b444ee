package configs

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestCheckKey(t *testing.T) {
	for _, tt := range []struct {
		name string
		key  string
		max  int
		want error
	}{
		{"ascii", "room-42", 256, nil},
		{"utf-8", "été-日本-🙂", 256, nil},
		{"at the limit", strings.Repeat("k", 8), 8, nil},
		{"over the limit", strings.Repeat("k", 9), 8, ErrKeyTooLong},
		{"empty", "", 256, ErrKeyEmpty},
		{"NUL", "a\x00b", 256, ErrKeyControl},
		{"tab", "a\tb", 256, ErrKeyControl},
		{"newline", "a\nb", 256, ErrKeyControl},
		{"DEL", "a\x7f", 256, ErrKeyControl},
		{"C1 CSI", "a\u009b[2J", 256, ErrKeyControl},
		{"U+00A0 is not a control", "a\u00a0b", 256, nil},
		{"lone continuation byte", "a\x80", 256, ErrKeyNotUTF8},
		{"0xff", "\xff", 256, ErrKeyNotUTF8},
		{"0xfe", "\xfe", 256, ErrKeyNotUTF8},
		{"truncated rune", "é"[:1], 256, ErrKeyNotUTF8},
		{"overlong slash", "\xc0\xaf", 256, ErrKeyNotUTF8},
		{"surrogate", "\xed\xa0\x80", 256, ErrKeyNotUTF8},
		{"beyond U+10FFFF", "\xf4\x90\x80\x80", 256, ErrKeyNotUTF8},
	} {
		if err := CheckKey([]byte(tt.key), tt.max); !errors.Is(err, tt.want) {
			t.Errorf("%s: CheckKey(%q, %d) = %v, want %v", tt.name, tt.key, tt.max, err, tt.want)
		}
	}
}

func TestCheckKeyAllocs(t *testing.T) {
	keys := [][]byte{[]byte("0123456789abcdef0123456789abcdef"), []byte("été"), []byte("\xff"), []byte("a\x01")}
	if n := testing.AllocsPerRun(100, func() {
		for _, k := range keys {
			_ = CheckKey(k, 256)
		}
	}); n != 0 {
		t.Fatalf("%v allocs per CheckKey round", n)
	}
}

// FuzzCheckKey: an accepted key is non-empty, within the limit, valid
// UTF-8 and free of control characters, so it reads back the same from
// JSON and logs; seeds in testdata/fuzz/FuzzCheckKey.
func FuzzCheckKey(f *testing.F) {
	for _, s := range []string{"room-42", "été", "\xff", "\xfe", "a\x80", "\xed\xa0\x80", "a\u009b", "a\x7f", strings.Repeat("k", 300)} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, key []byte) {
		err := CheckKey(key, 256)
		if err != nil {
			return
		}
		if len(key) == 0 || len(key) > 256 || !utf8.Valid(key) {
			t.Fatalf("accepted %q", key)
		}
		for _, r := range string(key) {
			if r < 0x20 || (r >= 0x7f && r <= 0x9f) {
				t.Fatalf("accepted %q with control character %U", key, r)
			}
		}
	})
}

func TestCrossOriginCookieKey(t *testing.T) {
	for _, tt := range []struct {
		origin, host string
		want         bool
	}{
		{"", "ide.example.com", false},
		{"https://ide.example.com", "ide.example.com", false},
		{"http://IDE.example.com", "ide.example.com", false},
		{"http://127.0.0.1:8080", "127.0.0.1:8080", false},
		{"https://preview.example.com", "ide.example.com", true},
		{"http://127.0.0.1:9090", "127.0.0.1:8080", true},
		{"https://ide.example.com.evil.example", "ide.example.com", true},
		{"null", "ide.example.com", true},
		{"file://", "ide.example.com", true},
		{"chrome-extension://abc", "ide.example.com", true},
	} {
		if got := CrossOriginCookieKey([]byte(tt.origin), []byte(tt.host)); got != tt.want {
			t.Errorf("Origin %q, Host %q: %v, want %v", tt.origin, tt.host, got, tt.want)
		}
	}
	origin, host := []byte("https://ide.example.com"), []byte("ide.example.com")
	if n := testing.AllocsPerRun(100, func() { CrossOriginCookieKey(origin, host) }); n != 0 {
		t.Errorf("allocates %v times", n)
	}
}
