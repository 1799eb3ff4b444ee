package sessions

import (
	"crypto/ecdh"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"net/http"
	"time"

	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health"
)

// The replication stream's wire format (replication.go, replica.go).
//
// An owner opens one stream per replica edge: a WebSocket upgrade of
// GET /_ringlb/replicate?from=OWNER&key=K, signed with the cluster key like
// claims and hand-offs (configs.HeaderPeer), K the owner's X25519 public
// key for this stream. The replica's first message (hello) carries its own
// public key, signed with the cluster key too, over the owner's key: so
// only two edges of the cluster complete the exchange, and each direction
// gets a key of its own (HKDF of the shared secret and both public keys).
// Each later WebSocket message is one batch, in either direction:
//
//	'R' | counter u64 | MAC length u16 | MAC | records...
//
// The counter starts at 0 (the hello) or 1 (the owner's first batch) and
// grows by one per batch in each direction; the MAC is HMAC-SHA256 under
// the direction's key over the counter and the records. A batch thus
// verifies only on its stream, once, in order: a replayed upgrade opens a
// stream whose key the replayer cannot compute, and no batch can be
// dropped, reordered or altered on the way. (The hello's MAC is the
// cluster key's signature instead: configs.HeaderPeer's value.) Without a
// cluster key (loopback, insecure) batches carry no MAC and the upgrade is
// checked by address, as claims are.
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
//	hello     public key str8 (replica → owner, first batch)
//	ack       counter u64 (replica → owner): every batch up to it applied
//	resync    key str16 (replica → owner): send a snapshot of key
//	synced    nothing (owner → replica): every session the owner
//	          replicates here went whole on this stream; a copy of its
//	          not sent since the stream began is of a session it no
//	          longer has (it ended while the stream was down). A record
//	          type a reader does not know is skipped: an earlier release
//	          ignores it and keeps such copies until its sweep.
//	refused   key str16 (replica → owner): the replica, at its bound of
//	          copies, kept no copy of key; its ack of the batch is not one
//	          for the session (an earlier release skips the record and
//	          takes the ack for it, as before)
const (
	recSnapshot byte = 1 + iota
	recAppend
	recSkip
	recFree
	recFence
	recHello
	recAck
	recResync
	recSynced
	recRefused
)

const (
	batchMagic = 'R'
	// batchHead is the fixed part of a batch before its MAC.
	batchHead = 1 + 8 + 2
	// maxSignature bounds a batch's MAC (the hello's: a HeaderPeer value).
	maxSignature = 256
	// recordHead is a record's type and length.
	recordHead = 1 + 4
)

// Directions a batch travels: each has its own key.
const (
	toReplica = "owner to replica"
	toOwner   = "replica to owner"
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

// maxEpochLength bounds a session's epoch: a str8 on the stream. This
// edge's epochs are 16 bytes; a hand-off's are refused beyond it
// (serveHandoff): an epoch the stream cannot carry would be a record the
// replica cannot parse, its stream ended and begun anew for as long as
// the session lived.
const maxEpochLength = 255

// appendSnapshot, appendMsg... append one record each. Keys are at most
// maxKeyLength (< 64 KiB), epochs (maxEpochLength) and names at most 255
// bytes: the callers' values are bounded so.
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

func appendHello(b []byte, key string) []byte {
	b = appendRecordHead(b, recHello, 1+len(key))
	return appendStr8(b, key)
}

func appendAck(b []byte, counter uint64) []byte {
	b = appendRecordHead(b, recAck, 8)
	return binary.BigEndian.AppendUint64(b, counter)
}

func appendResync(b []byte, key string) []byte {
	b = appendRecordHead(b, recResync, 2+len(key))
	return appendStr16(b, key)
}

func appendSynced(b []byte) []byte { return appendRecordHead(b, recSynced, 0) }

func appendRefused(b []byte, key string) []byte {
	b = appendRecordHead(b, recRefused, 2+len(key))
	return appendStr16(b, key)
}

// record is one parsed record; its byte fields alias the batch.
type record struct {
	kind    byte
	term    uint64
	seq     uint64 // base for a snapshot, counter for an ack
	epoch   []byte // snapshot; holder for a fence; public key for hello
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
		case recResync, recRefused:
			rec.key = body.str16()
		case recSynced:
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

// streamKeys are a stream's two MAC states, one per direction, from the
// X25519 exchange of its upgrade and hello; nil ones (no cluster key) MAC
// nothing. Each is used by one goroutine: the writer of its direction, or
// the reader.
type streamKeys struct {
	send, recv hash.Hash
}

// newStreamKeys derives the keys of a stream from our private key and the
// peer's public key; owner says which side we are. Both public keys are in
// the derivation, so each stream's keys are its own.
func newStreamKeys(priv *ecdh.PrivateKey, peerPub []byte, owner bool) (streamKeys, error) {
	pub, err := ecdh.X25519().NewPublicKey(peerPub)
	if err != nil {
		return streamKeys{}, err
	}
	shared, err := priv.ECDH(pub)
	if err != nil {
		return streamKeys{}, err
	}
	ownerPub, replicaPub := priv.PublicKey().Bytes(), peerPub
	if !owner {
		ownerPub, replicaPub = replicaPub, ownerPub
	}
	salt := append(append([]byte(nil), ownerPub...), replicaPub...)
	derive := func(dir string) (hash.Hash, error) {
		k, err := hkdf.Key(sha256.New, shared, salt, "ringlb replication "+dir, 32)
		if err != nil {
			return nil, err
		}
		return hmac.New(sha256.New, k), nil
	}
	o2r, err := derive(toReplica)
	if err != nil {
		return streamKeys{}, err
	}
	r2o, err := derive(toOwner)
	if err != nil {
		return streamKeys{}, err
	}
	if owner {
		return streamKeys{send: o2r, recv: r2o}, nil
	}
	return streamKeys{send: r2o, recv: o2r}, nil
}

// batchMAC appends m's MAC over counter and records to dst.
func batchMAC(dst []byte, m hash.Hash, counter uint64, records []byte) []byte {
	var c [8]byte
	binary.BigEndian.PutUint64(c[:], counter)
	m.Reset()
	m.Write(c[:])
	m.Write(records)
	return m.Sum(dst)
}

// appendBatchHead appends the head of batch counter carrying records,
// MAC'd with m (nil: none).
func appendBatchHead(dst []byte, m hash.Hash, counter uint64, records []byte) []byte {
	dst = append(dst, batchMagic)
	dst = binary.BigEndian.AppendUint64(dst, counter)
	if m == nil {
		return binary.BigEndian.AppendUint16(dst, 0)
	}
	dst = binary.BigEndian.AppendUint16(dst, sha256.Size)
	return batchMAC(dst, m, counter, records)
}

// openBatch checks batch want from the peer (MAC'd with m, nil: none) and
// returns its records.
func openBatch(msg []byte, m hash.Hash, want uint64) ([]byte, error) {
	counter, mac, records, err := splitBatch(msg)
	if err != nil {
		return nil, err
	}
	if counter != want {
		return nil, fmt.Errorf("batch %d out of order, want %d", counter, want)
	}
	if m != nil {
		var sum [sha256.Size]byte
		if !hmac.Equal(mac, batchMAC(sum[:0], m, counter, records)) {
			return nil, errBadMAC
		}
	}
	return records, nil
}

// errBadMAC: a batch that is not the peer's for this stream.
var errBadMAC = errors.New("replication batch does not verify with the stream's key")

func splitBatch(msg []byte) (counter uint64, mac, records []byte, err error) {
	if len(msg) < batchHead || msg[0] != batchMagic {
		return 0, nil, nil, errBadRecord
	}
	n := int(binary.BigEndian.Uint16(msg[9:]))
	if n > maxSignature || len(msg) < batchHead+n {
		return 0, nil, nil, errBadRecord
	}
	return binary.BigEndian.Uint64(msg[1:]), msg[batchHead : batchHead+n], msg[batchHead+n:], nil
}

// helloURI is what the hello's signature covers besides its records: the
// owner's public key (so a recorded hello answers no other stream).
func helloURI(ownerKey string) string { return configs.PathReplicate + "?hello=" + ownerKey }

// signHello returns the replica's hello batch: its public key, signed by
// node for the owner edge with the cluster key over the owner's key (kr
// keyless: unsigned).
func signHello(kr *health.Keyring, node, owner, ownerKey string, pub []byte) []byte {
	records := appendHello(nil, string(pub))
	var sig string
	if kr.Enabled() {
		h := http.Header{}
		kr.SignRequest(h, node, owner, "REPL", helloURI(ownerKey), records)
		sig = h.Get(configs.HeaderPeer)
	}
	b := append([]byte{batchMagic}, make([]byte, 8)...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(sig)))
	return append(append(b, sig...), records...)
}

// openHello checks the hello of the replica peer to the owner self and
// returns the replica's public key.
func openHello(msg []byte, kr *health.Keyring, self, peer, ownerKey string) ([]byte, error) {
	counter, sig, records, err := splitBatch(msg)
	if err != nil {
		return nil, err
	}
	if counter != 0 {
		return nil, fmt.Errorf("hello numbered %d", counter)
	}
	if kr.Enabled() {
		signer, err := kr.VerifyRequest(string(sig), self, "REPL", helloURI(ownerKey), records, time.Now())
		if err != nil {
			return nil, err
		}
		if signer != peer {
			return nil, fmt.Errorf("hello signed by %s, not by %s", signer, peer)
		}
	}
	var rec record
	rd := reader{b: records}
	if !rd.next(&rec) || rec.kind != recHello || len(rec.epoch) == 0 {
		return nil, errors.Join(errBadRecord, rd.err)
	}
	return rec.epoch, nil
}
