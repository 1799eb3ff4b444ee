package sessions

import (
	"bytes"
	"testing"
)

// FuzzDecodeInbound: decodeInbound (its allocation-free scan where it
// answers) agrees with json.Unmarshal, the reference, on every input: the
// same error or none, the same fields.
func FuzzDecodeInbound(f *testing.F) {
	for _, seed := range []string{
		`{"type":"msg","data":"x"}`,
		`{"type":"msg","data":{"a":[1,"}",{"b":null}]},"extra":true}`,
		` { "type" : "ping" , "ts" : 12.5e3 } `,
		`{"type":"resume","after":18446744073709551615,"epoch":"e"}`,
		`{"type":"resume","after":18446744073709551616}`,
		`{"type":"resume","after":-1}`,
		`{"type":"resume","after":null}`,
		`{"after":5,"after":null,"type":"resume"}`,
		`{"TYPE":"msg","Data":1}`,
		`{"typ\u0065":"msg","data":1}`,
		`{"type":"m\u0073g","data":1}`,
		`{"type":null,"data":1}`,
		`{"type":"msg","type":null}`,
		`{"type":"msg","data":null}`,
		`{"type":"msg","data":1,"data":[2]}`,
		`{"data":"\"}{"}`,
		`{}`, `[]`, `"msg"`, `null`, `{"type":"msg",}`, `{"type":"msg"`, ``, `{"type":5}`,
		`{"epoch":"a\"b","type":"resume","after":1}`,
		`{"type":"token","token":"eyJzIjoiZG9jIn0.c2ln"}`,
		`{"type":"token","Token":"a","token":null}`,
		`{"type":"token","token":"\u0041"}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, gotErr := decodeInbound(b)
		want, wantErr := unmarshalInbound(b)
		if (gotErr == nil) != (wantErr == nil) || (gotErr != nil && gotErr.Error() != wantErr.Error()) {
			t.Fatalf("%q: error %v, want %v", b, gotErr, wantErr)
		}
		if !bytes.Equal(got.typ, want.typ) || !bytes.Equal(got.data, want.data) || !bytes.Equal(got.ts, want.ts) ||
			got.after != want.after || got.afterSet != want.afterSet || !bytes.Equal(got.epoch, want.epoch) ||
			!bytes.Equal(got.token, want.token) {
			t.Fatalf("%q:\n got %+v\nwant %+v", b, got, want)
		}
	})
}

// TestDecodeInboundAllocates: the usual envelopes decode without
// allocating.
func TestDecodeInboundAllocates(t *testing.T) {
	for _, env := range []string{
		`{"type":"msg","data":"an edit: insert 'x' at line 42"}`,
		`{"type":"ping","ts":1733212345678}`,
		`{"type":"resume","after":42,"epoch":"Zx9-abc"}`,
		`{"type":"token","token":"eyJzIjoiZG9jIn0.c2ln"}`,
	} {
		b := []byte(env)
		decodeInbound(b) // warm encoding/json's scanner pool
		if n := testing.AllocsPerRun(100, func() { _, _ = decodeInbound(b) }); n != 0 {
			t.Errorf("%s: %v allocations", env, n)
		}
	}
}

// TestTextClasses: every size up to maxPooledFrame has a class whose
// buffer holds it with at most a quarter to spare (beyond 64 bytes).
func TestTextClasses(t *testing.T) {
	var tp textPools
	tp.init()
	for n := 1; n <= maxPooledFrame; n++ {
		c, capacity := textClass(n)
		if c >= textClasses || tp.classes[c].size != capacity || capacity < n || (n > 64 && capacity*4 > n*5) {
			t.Fatalf("size %d: class %d capacity %d (pool %d)", n, c, capacity, tp.classes[min(c, textClasses-1)].size)
		}
	}
}
