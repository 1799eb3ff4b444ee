package balancer

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/ringlb/ringlb/configs"
)

func TestPathSegment(t *testing.T) {
	tests := []struct {
		path string
		n    int
		want string
	}{
		{"/s/abc/ws", 2, "abc"}, {"/s/abc/ws", 1, "s"}, {"//s//abc", 2, "abc"}, {"/s", 2, ""}, {"/", 1, ""}, {"/a/b/c", 3, "c"},
	}
	for _, tt := range tests {
		if got := string(pathSegment([]byte(tt.path), tt.n)); got != tt.want {
			t.Errorf("pathSegment(%q, %d) = %q, want %q", tt.path, tt.n, got, tt.want)
		}
	}
}

func TestPathKeySource(t *testing.T) {
	h := newHarness(t, configs.Balancer{Key: configs.Key{Sources: []string{"header:ctstickiness", "path:2"}}})
	owner := h.owner(t, "room-42")
	resp, _ := h.get(t, "/s/room-42/pad", nil)
	if got := resp.Header.Get("X-Ringlb-Edge"); got != owner {
		t.Fatalf("path key served by %q, owner of room-42 is %s", got, owner)
	}
	var kb keyBuf
	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	req.SetRequestURI("/s/room-42/ws")
	keys := h.bal.current.Load().keys
	if key, _, err := keys.extract(req, &kb); string(key) != "room-42" || err != nil {
		t.Fatalf("path key %q, %v", key, err)
	}
	if n := testing.AllocsPerRun(100, func() { keys.extract(req, &kb) }); n != 0 {
		t.Errorf("path key extraction allocates %v times", n)
	}
}

func TestNoKeyPolicies(t *testing.T) {
	t.Run("source_ip", func(t *testing.T) {
		h := newHarness(t, configs.Balancer{Key: configs.Key{Sources: []string{"header:ctstickiness"}, NoKey: "source_ip"}})
		owner := h.owner(t, "127.0.0.1")
		for range 3 {
			resp, w := h.whoami(t, "/whoami", nil)
			if w.Edge != owner || resp.Header.Get("Set-Cookie") != "" {
				t.Fatalf("key-less request served by %s (owner of 127.0.0.1: %s), cookie %q", w.Edge, owner, resp.Header.Get("Set-Cookie"))
			}
		}
	})
	t.Run("reject", func(t *testing.T) {
		h := newHarness(t, configs.Balancer{Key: configs.Key{NoKey: "reject"}})
		if resp, body := h.get(t, "/whoami", nil); resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("key-less request: %d %s, want 400", resp.StatusCode, body)
		}
	})
}

func TestSizeLimits(t *testing.T) {
	h := newHarness(t, configs.Balancer{Limits: configs.Limits{MaxHeaderBytes: 2048, MaxBodyBytes: 1000}})
	resp, _ := h.get(t, "/whoami", http.Header{"Ctstickiness": {"k"}, "X-Big": {strings.Repeat("y", 4000)}})
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge && resp.StatusCode != http.StatusBadRequest {
		t.Errorf("4 KB header through a 2 KB limit: %d", resp.StatusCode)
	}
	req, _ := http.NewRequest(http.MethodPost, "http://"+h.addr+"/upload", strings.NewReader(strings.Repeat("x", 2000)))
	req.Header.Set("Ctstickiness", "k")
	r, err := h.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("2000-byte body through a 1000-byte limit: %d, want 413", r.StatusCode)
	}
}

// TestKeyNotUTF8Refused: two different keys that are not UTF-8 would be
// routed (to different edges) yet show as the same "\ufffd" in JSON and
// logs; the balancer refuses them with 400 before routing.
func TestKeyNotUTF8Refused(t *testing.T) {
	h := newHarness(t, configs.Balancer{})
	for _, k := range []string{"\xff", "\xfe", "room-\xc3"} {
		resp, body := h.get(t, "/whoami", http.Header{"Ctstickiness": {k}})
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "not valid UTF-8") {
			t.Errorf("key %q: %d %s (edge %q), want 400", k, resp.StatusCode, body, resp.Header.Get("X-Ringlb-Edge"))
		}
	}
	if _, w := h.whoami(t, "/whoami", http.Header{"Ctstickiness": {"été"}}); w.Edge != h.owner(t, "été") {
		t.Fatalf("UTF-8 key served by %s", w.Edge)
	}
}

// TestKeyEdgeSeesWhatWasRouted: a key the balancer routes by reaches the
// edge unchanged in ctstickiness, so the edge checks ownership with the
// bytes the balancer hashed. Leading or trailing blanks, which a header
// reader trims, come only from sources that are not headers.
func TestKeyEdgeSeesWhatWasRouted(t *testing.T) {
	h := newHarness(t, configs.Balancer{Key: configs.Key{HashQuery: ptr(false), Sources: []string{"header:ctstickiness", "query:token"}}})
	for _, tt := range []struct{ name, path string }{
		{"query, trailing space", "/whoami?token=room%20"},
		{"query, leading tab", "/whoami?token=%09room"},
		{"query, spaces only", "/whoami?token=%20%20"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := h.get(t, tt.path, http.Header{"Cookie": {"ctstickiness=other"}})
			if resp.StatusCode == http.StatusBadRequest {
				t.Logf("%s: refused: %s", tt.path, body)
				return // nothing routed
			}
			var w whoami
			if err := json.Unmarshal(body, &w); err != nil {
				t.Fatalf("GET %s: %d %v: %s", tt.path, resp.StatusCode, err, body)
			}
			t.Logf("%s: %d, edge %s saw ctstickiness %q", tt.path, resp.StatusCode, w.Edge, w.Key)
			if w.Key == "" || w.Key != strings.TrimSpace(w.Key) || h.owner(t, w.Key) != w.Edge {
				t.Fatalf("%s routed to %s; the edge saw ctstickiness %q (owner %s)", tt.path, w.Edge, w.Key, h.owner(t, w.Key))
			}
		})
	}
}
