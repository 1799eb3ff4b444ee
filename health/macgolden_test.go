package health

import (
	"encoding/base64"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/hashicorp/memberlist"
)

// The bytes a peer signature covers are a wire contract between releases
// (a rolling upgrade verifies the other release's MACs): fixed here for
// both forms.
func TestPeerMACUnchanged(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	for _, tt := range []struct{ to, want string }{
		{"", "24cfbf85f582215847e6eee14d36ce19f163954607c3c3ec4fd7a7504c9f9dc0"},
		{"edge-1", "49cec6f31761d1342d880d7500a2f4f3e70d224e86d224f47a498f86851f90e9"},
	} {
		got := hex.EncodeToString(peerMAC(key, "bal-1", tt.to, "1700000000", "GET upgrade", "/ws?resume=3", []byte("k1")))
		if got != tt.want {
			t.Errorf("peerMAC to %q = %s, want %s", tt.to, got, tt.want)
		}
	}
}

// An answer's signature (SignAnswer) is the same MAC over the status
// followed by " answer", the request's MAC and the body: its message is
// fixed here too, and SignAnswer checked to make it.
func TestAnswerMACUnchanged(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	const mac = "2M5EZ7Q3xBC2yW8YkFpT0Yq8hx1S3y0Zl1v4QmJ0cX8"
	body := []byte(`{"members":{}}`)
	got := hex.EncodeToString(peerMAC(key, "gslb-b", "gslb-a", "1700000000", "200 answer", mac, body))
	if want := "f291f16de4288566abdd91f21d89e37c141ad8aecca7fe30e61231c1fb0374b3"; got != want {
		t.Errorf("answer MAC = %s, want %s", got, want)
	}
	kr := &Keyring{}
	kr.sign.Store(&[][]byte{key})
	kr.ml = new(memberlist.Keyring)
	f := strings.Fields(kr.SignAnswer("gslb-b", "gslb-a", "gslb-a 1700000000 "+mac+" gslb-b", 200, body))
	if len(f) != 4 || f[0] != "gslb-b" || f[3] != "gslb-a" || f[2] != base64.RawURLEncoding.EncodeToString(peerMAC(key, "gslb-b", "gslb-a", f[1], "200 answer", mac, body)) {
		t.Errorf("SignAnswer made %q, not the MAC of its status, the request's MAC and the body", f)
	}
}
