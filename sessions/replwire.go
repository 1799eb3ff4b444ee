package sessions

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health"
)

// The replication stream's wire format (replication.go, replica.go).
//
// An owner opens one stream per replica edge: a WebSocket upgrade of
// GET /_ringlb/replicate?from=OWNER&nonce=N, signed with the cluster key
// like claims and hand-offs (configs.HeaderPeer). Each WebSocket message is
// one batch, in either direction:
//
//	'R' | counter u64 | signature length u16 | signature | records...
//
// The counter starts at 0 (the replica's hello) or 1 (the owner's first
// batch) and grows by one per batch in each direction. The signature is
// health.Keyring.SignRequest's over method "REPL", a URI naming the
// direction, the receiver's nonce and the counter, and the records: a batch
// verifies only on the stream it was made for, once, in order — a replayed
// upgrade gets a fresh nonce, so nothing recorded from an earlier stream
// verifies on it. Without a cluster key (loopback, insecure) batches carry
// no signature and the upgrade is checked by address, as claims are.
//
// A record is type u8 | length u32 | body; all integers big-endian;
// strings are a length (u8 or u16) then bytes:
//
//	snapshot  term u64, base u64, epoch str8, key str16: the session is
//	          this incarnation at seq base; its history follows as appends
//	append    term u64, seq u64, key str16, then the msg envelope (the
//	          rest): the msg at seq, which follows the replica's last
//	skip      term u64, seq u64, key str16: seqs up to seq hold no msg
//	free      term u64, key str16: the session ended or moved; drop it
//	fence     term u64, holder str8, key str16: holder has the session at
//	          term; an owner of an older term yields it to holder
//	hello     nonce str8 (replica → owner, first batch)
//	ack       counter u64 (replica → owner): every batch up to it applied
//	resync    key str16 (replica → owner): send a snapshot of key
const (
	recSnapshot byte = 1 + iota
	recAppend
	recSkip
	recFree
	recFence
	recHello
	recAck
	recResync
)

const (
	batchMagic = 'R'
	// batchHead is the fixed part of a batch before the signature.
	batchHead = 1 + 8 + 2
	// maxSignature bounds a batch's signature (a HeaderPeer value).
	maxSignature = 256
	// recordHead is a record's type and length.
	recordHead = 1 + 4
	// maxNameLength bounds an edge name and an epoch in records (names are
	// at most 64 bytes, epochs 16).
	maxNameLength = 255
	// streamNonceBytes of randomness name a stream's direction.
	streamNonceBytes = 16
)

// Directions a batch travels, part of what its signature covers.
const (
	toReplica = "o" // owner → replica
	toOwner   = "r" // replica → owner
)

// errBadRecord: a record or batch that does not parse. The stream ends.
var errBadRecord = errors.New("malformed replication record")

// appendRecordHead starts a record of type t with body length n.
func appendRecordHead(b []byte, t byte, n int) []byte {
	b = append(b, t)
	return binary.BigEndian.AppendUint32(b, uint32(n))
}

func appendStr8(b []byte, s string) []byte {
	b = append(b, byte(len(s)))
	return append(b, s...)
}

func appendStr16(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

// appendSnapshot, appendMsg... append one record each. Keys are at most
// maxKeyLength (< 64 KiB), epochs and names at most maxNameLength: the
// callers' values are bounded so.
func appendSnapshot(b []byte, term, base uint64, epoch, key string) []byte {
	b = appendRecordHead(b, recSnapshot, 8+8+1+len(epoch)+2+len(key))
	b = binary.BigEndian.AppendUint64(b, term)
	b = binary.BigEndian.AppendUint64(b, base)
	b = appendStr8(b, epoch)
	return appendStr16(b, key)
}

func appendMsg(b []byte, term, seq uint64, key string, payload []byte) []byte {
	b = appendRecordHead(b, recAppend, 8+8+2+len(key)+len(payload))
	b = binary.BigEndian.AppendUint64(b, term)
	b = binary.BigEndian.AppendUint64(b, seq)
	b = appendStr16(b, key)
	return append(b, payload...)
}

func appendSkip(b []byte, term, seq uint64, key string) []byte {
	b = appendRecordHead(b, recSkip, 8+8+2+len(key))
	b = binary.BigEndian.AppendUint64(b, term)
	b = binary.BigEndian.AppendUint64(b, seq)
	return appendStr16(b, key)
}

func appendFree(b []byte, term uint64, key string) []byte {
	b = appendRecordHead(b, recFree, 8+2+len(key))
	b = binary.BigEndian.AppendUint64(b, term)
	return appendStr16(b, key)
}

func appendFence(b []byte, term uint64, holder, key string) []byte {
	b = appendRecordHead(b, recFence, 8+1+len(holder)+2+len(key))
	b = binary.BigEndian.AppendUint64(b, term)
	b = appendStr8(b, holder)
	return appendStr16(b, key)
}

func appendHello(b []byte, nonce string) []byte {
	b = appendRecordHead(b, recHello, 1+len(nonce))
	return appendStr8(b, nonce)
}

func appendAck(b []byte, counter uint64) []byte {
	b = appendRecordHead(b, recAck, 8)
	return binary.BigEndian.AppendUint64(b, counter)
}

func appendResync(b []byte, key string) []byte {
	b = appendRecordHead(b, recResync, 2+len(key))
	return appendStr16(b, key)
}

// record is one parsed record; its byte fields alias the batch.
type record struct {
	kind    byte
	term    uint64
	seq     uint64 // base for a snapshot, counter for an ack
	epoch   []byte // snapshot; holder for a fence; nonce for hello
	key     []byte
	payload []byte // append
}

// reader walks the records of a batch.
type reader struct {
	b   []byte
	err error
}

func (r *reader) u8() byte {
	if r.err != nil || len(r.b) < 1 {
		r.err = errBadRecord
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *reader) u64() uint64 {
	if r.err != nil || len(r.b) < 8 {
		r.err = errBadRecord
		return 0
	}
	v := binary.BigEndian.Uint64(r.b)
	r.b = r.b[8:]
	return v
}

func (r *reader) bytes(n int) []byte {
	if r.err != nil || n < 0 || len(r.b) < n {
		r.err = errBadRecord
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) str8() []byte { return r.bytes(int(r.u8())) }

func (r *reader) str16() []byte {
	if r.err != nil || len(r.b) < 2 {
		r.err = errBadRecord
		return nil
	}
	n := int(binary.BigEndian.Uint16(r.b))
	r.b = r.b[2:]
	return r.bytes(n)
}

// next parses the next record into rec; false at the end of the batch or
// on a malformed record (r.err set). Records of a type it does not know (a
// newer edge's) are skipped whole, so edges of two versions keep their
// streams during a rolling upgrade.
func (r *reader) next(rec *record) bool {
	for r.err == nil && len(r.b) > 0 {
		kind := r.u8()
		if len(r.b) < 4 {
			r.err = errBadRecord
			return false
		}
		n := int(binary.BigEndian.Uint32(r.b))
		r.b = r.b[4:]
		body := reader{b: r.bytes(n), err: r.err}
		if r.err != nil {
			return false
		}
		*rec = record{kind: kind}
		switch kind {
		case recSnapshot:
			rec.term, rec.seq, rec.epoch, rec.key = body.u64(), body.u64(), body.str8(), body.str16()
		case recAppend:
			rec.term, rec.seq, rec.key = body.u64(), body.u64(), body.str16()
			rec.payload, body.b = body.b, nil
		case recSkip:
			rec.term, rec.seq, rec.key = body.u64(), body.u64(), body.str16()
		case recFree:
			rec.term, rec.key = body.u64(), body.str16()
		case recFence:
			rec.term, rec.epoch, rec.key = body.u64(), body.str8(), body.str16()
		case recHello:
			rec.epoch = body.str8()
		case recAck:
			rec.seq = body.u64()
		case recResync:
			rec.key = body.str16()
		default:
			continue
		}
		if body.err != nil || len(body.b) != 0 {
			r.err = fmt.Errorf("%w: type %d", errBadRecord, kind)
			return false
		}
		if len(rec.key) > maxKeyLength {
			r.err = fmt.Errorf("%w: key of %d bytes", errBadRecord, len(rec.key))
			return false
		}
		return true
	}
	return false
}

// batchURI is what a batch's signature covers besides its records: the
// direction, the receiver's nonce and the batch's counter.
func batchURI(dir, nonce string, counter uint64) string {
	return configs.PathReplicate + "?dir=" + dir + "&nonce=" + nonce + "&n=" + strconv.FormatUint(counter, 10)
}

// signBatch returns the head of a batch of records (counter, signature)
// signed by node for a receiver whose nonce is nonce; kr nil or keyless:
// unsigned.
func signBatch(dst []byte, kr *health.Keyring, node, dir, nonce string, counter uint64, records []byte) []byte {
	var sig string
	if kr.Enabled() {
		h := http.Header{}
		kr.SignRequest(h, node, "REPL", batchURI(dir, nonce, counter), records)
		sig = h.Get(configs.HeaderPeer)
	}
	dst = append(dst, batchMagic)
	dst = binary.BigEndian.AppendUint64(dst, counter)
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(sig)))
	return append(dst, sig...)
}

// openBatch checks a batch from peer (counter want, our nonce) and returns
// its records.
func openBatch(msg []byte, kr *health.Keyring, peer, dir, nonce string, want uint64) ([]byte, error) {
	if len(msg) < batchHead || msg[0] != batchMagic {
		return nil, errBadRecord
	}
	counter := binary.BigEndian.Uint64(msg[1:])
	n := int(binary.BigEndian.Uint16(msg[9:]))
	if n > maxSignature || len(msg) < batchHead+n {
		return nil, errBadRecord
	}
	if counter != want {
		return nil, fmt.Errorf("batch %d out of order, want %d", counter, want)
	}
	sig, records := string(msg[batchHead:batchHead+n]), msg[batchHead+n:]
	if kr.Enabled() {
		signer, err := kr.VerifyRequest(sig, "REPL", batchURI(dir, nonce, counter), records, time.Now())
		if err != nil {
			return nil, err
		}
		if signer != peer {
			return nil, fmt.Errorf("batch signed by %s, not by %s", signer, peer)
		}
	}
	return records, nil
}
