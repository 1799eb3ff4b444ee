package health

import (
	"encoding/hex"
	"testing"
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
