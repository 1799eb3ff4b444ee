package sessions

import (
	"bytes"
	"crypto/ecdh"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"hash"
	"slices"
	"strings"
	"testing"

	"github.com/ringlb/ringlb/health"
	"github.com/ringlb/ringlb/health/healthtest"
)

// FuzzReplicationBatch: any WebSocket message of a replication stream
// (replwire.go), as the owner's or the replica's reader gets it. splitBatch,
// openBatch (with the stream's MAC and without a cluster key), openHello
// (signed with the cluster key and keyless) and the records' reader never
// panic; every record the reader returns is re-encoded by its append
// function into exactly the bytes it came from (unknown types are skipped
// whole); a reader that ends without an error has read every byte; a batch
// that opens is its head, as appendBatchHead writes it, then its records.
func FuzzReplicationBatch(f *testing.F) {
	macKey := bytes.Repeat([]byte{7}, 32)
	records := slices.Concat(
		appendSnapshot(nil, 3, 41, "epoch-1", "session"),
		appendMsg(nil, 3, 42, "session", []byte(`{"type":"msg","seq":42,"data":"hi"}`)),
		appendSkip(nil, 3, 43, "session"),
		appendFree(nil, 3, "gone"),
		appendFence(nil, 4, "edge-c", "session"),
		appendAck(nil, 9),
		appendResync(nil, "session"),
		appendRefused(nil, "session"),
		appendSynced(nil),
		appendRecordHead(nil, 200, 3), []byte("new"), // a newer edge's record: skipped
	)
	f.Add(slices.Concat(appendBatchHead(nil, hmac.New(sha256.New, macKey), 1, records), records), uint64(1))
	f.Add(slices.Concat(appendBatchHead(nil, nil, 7, records), records), uint64(7))
	f.Add(slices.Concat(appendBatchHead(nil, nil, 2, nil)), uint64(2))
	f.Add(slices.Concat(appendBatchHead(nil, nil, 1, appendAck(nil, 1)), appendAck(nil, 1)), uint64(1))
	f.Add([]byte("R"), uint64(0))

	// A hello signed now by edge-b for edge-a, valid for the signature's
	// time window: the fuzzer starts from what verifies.
	cluster := healthtest.New(f)
	kr := cluster.Join("edge-a", health.Meta{Role: health.RoleEdge, URL: "http://127.0.0.1:1", Weight: 1, State: health.StateAlive}).Keyring()
	priv, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	const ownerKey = "owner-public-key"
	signed := signHello(kr, "edge-a", "edge-a", ownerKey, priv.PublicKey().Bytes())
	if _, err := openHello(signed, kr, "edge-a", "edge-a", ownerKey); err != nil {
		f.Fatalf("a hello signed now: %v", err)
	}
	f.Add(signed, uint64(0))
	f.Add(signHello(nil, "edge-a", "edge-a", ownerKey, priv.PublicKey().Bytes()), uint64(0))

	f.Fuzz(func(t *testing.T, msg []byte, want uint64) {
		if _, _, recs, err := splitBatch(msg); err == nil {
			checkRecords(t, recs)
		}
		for _, m := range []hash.Hash{hmac.New(sha256.New, macKey), nil} {
			recs, err := openBatch(msg, m, want)
			if err != nil {
				continue
			}
			head := appendBatchHead(nil, m, want, recs)
			if m == nil {
				// Keyless, a MAC is not looked at: only its length.
				_, mac, _, _ := splitBatch(msg)
				head = slices.Concat(head[:batchHead-2], []byte{byte(len(mac) >> 8), byte(len(mac))}, mac)
			}
			if !bytes.Equal(slices.Concat(head, recs), msg) {
				t.Fatalf("batch %x opened, re-encoded %x", msg, slices.Concat(head, recs))
			}
		}
		for _, k := range []*health.Keyring{kr, nil} {
			pub, err := openHello(msg, k, "edge-a", "edge-a", ownerKey)
			if err != nil {
				continue
			}
			_, _, recs, _ := splitBatch(msg)
			rd := reader{b: recs}
			var rec record
			if !rd.next(&rec) || !bytes.Equal(rec.epoch, pub) || len(pub) == 0 {
				t.Fatalf("hello %x opened with key %x", msg, pub)
			}
		}
	})
}

// checkRecords reads every record of recs and re-encodes each.
func checkRecords(t *testing.T, recs []byte) {
	t.Helper()
	rd := reader{b: recs}
	var rec record
	for rd.next(&rec) {
		end := len(recs) - len(rd.b)
		enc := appendRecord(nil, &rec)
		if start := end - len(enc); start < 0 || !bytes.Equal(recs[start:end], enc) {
			t.Fatalf("record %+v read from %x, re-encoded %x", rec, recs[:end], enc)
		}
	}
	if rd.err == nil && len(rd.b) != 0 {
		t.Fatalf("reader stopped without an error before %x", rd.b)
	}
	if rd.err != nil && !strings.HasPrefix(rd.err.Error(), errBadRecord.Error()) {
		t.Fatalf("reader error %v", rd.err)
	}
}

// appendRecord encodes rec with the append function of its type.
func appendRecord(b []byte, rec *record) []byte {
	switch rec.kind {
	case recSnapshot:
		return appendSnapshot(b, rec.term, rec.seq, string(rec.epoch), string(rec.key))
	case recAppend:
		return appendMsg(b, rec.term, rec.seq, string(rec.key), rec.payload)
	case recSkip:
		return appendSkip(b, rec.term, rec.seq, string(rec.key))
	case recFree:
		return appendFree(b, rec.term, string(rec.key))
	case recFence:
		return appendFence(b, rec.term, string(rec.epoch), string(rec.key))
	case recHello:
		return appendHello(b, string(rec.epoch))
	case recAck:
		return appendAck(b, rec.seq)
	case recResync:
		return appendResync(b, string(rec.key))
	case recRefused:
		return appendRefused(b, string(rec.key))
	case recSynced:
		return appendSynced(b)
	}
	panic("a record of unknown type returned")
}
