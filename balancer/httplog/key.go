package httplog

import (
	"encoding/hex"
	"log/slog"

	"github.com/cespare/xxhash/v2"
)

// KeyHash is how a session key appears in ringlb's logs: the 16 hex digits
// of its xxhash (the ring's hash), never the key. Keys come from tokens,
// cookies and URLs, and whoever knows one joins its session, so a log line
// must not carry it; the balancer's access log and the edges' lines write
// the same digits, so the lines about one session match across nodes.
type KeyHash uint64

// Key is key's hash for a log line.
func Key(key []byte) KeyHash { return KeyHash(xxhash.Sum64(key)) }

// KeyString is key's hash for a log line.
func KeyString(key string) KeyHash { return KeyHash(xxhash.Sum64String(key)) }

// AppendText appends the hash's 16 hex digits to b.
func (h KeyHash) AppendText(b []byte) []byte {
	var raw [8]byte
	for i := range raw {
		raw[i] = byte(h >> (56 - 8*i))
	}
	return hex.AppendEncode(b, raw[:])
}

// String is the hash's 16 hex digits.
func (h KeyHash) String() string { return string(h.AppendText(make([]byte, 0, 16))) }

// LogValue writes the hash, as a string, in slog lines.
func (h KeyHash) LogValue() slog.Value { return slog.StringValue(h.String()) }
