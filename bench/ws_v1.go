package bench

// `ringlb bench ws -mode v1`: the same load in ringlb.v1 envelopes
// (docs/CONTRACT.md, "WebSocket relay"). A client sends {"type":"msg","data":D};
// the edge gives it a sequence number, relays {"type":"msg","seq",...,
// "data":D} to the others and acks the sender with {"type":"ack","seq"}.
// Every participant of a session therefore sees each seq once, as a msg or
// as the ack of its own: a gap is a lost message, a repeat a duplicate.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"time"
)

const (
	protocolV1 = "ringlb.v1"
	// v1Stamp is the hex head of a msg's data: send time (16 digits),
	// sender index and per-sender sequence (8 each).
	v1Stamp = 32
	// v1MinSize is the smallest data: the stamp, quoted.
	v1MinSize = v1Stamp + 2
	// v1EnvelopeRoom is what the edge's msg envelope adds around the data.
	v1EnvelopeRoom = 256
	// v1MaxWelcome bounds a welcome, which names the session's
	// participants (an id and a user each, a few hundred bytes at most):
	// thousands fit.
	v1MaxWelcome = 1 << 20
)

// v1State is one participant's view of its session's sequence.
type v1State struct {
	next  uint64 // the seq expected next (as a msg or an ack)
	gaps  int64  // seqs skipped
	acked int64  // acks of its own msgs
	// dups are seqs seen again (as msg or ack): duplicates never counted
	// as deliveries, so not taken off them either.
	dups int64
}

// welcome reads the first frame of a ringlb.v1 connection, which says
// where the session's sequence stands.
func (c *wsClient) welcome() error {
	c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	defer c.conn.SetReadDeadline(time.Time{})
	_, r, err := c.conn.NextReader()
	if err != nil {
		return fmt.Errorf("read welcome: %w", err)
	}
	data, ok, err := readAll(r, nil, v1MaxWelcome)
	if err != nil {
		return fmt.Errorf("read welcome: %w", err)
	}
	if !ok {
		return fmt.Errorf("first frame is longer than a welcome (%d bytes)", v1MaxWelcome)
	}
	var w struct {
		Type string `json:"type"`
		Seq  uint64 `json:"seq"`
	}
	if err := json.Unmarshal(data, &w); err != nil || w.Type != "welcome" {
		return fmt.Errorf("first frame is not a welcome: %.100s", data)
	}
	c.v1.next = w.Seq + 1
	return nil
}

// newV1Message returns a client msg envelope whose data is a JSON string of
// size bytes, and the function that stamps it.
func newV1Message(size int) ([]byte, func([]byte, time.Duration, uint32, uint32)) {
	head := `{"type":"msg","data":"`
	buf := make([]byte, 0, len(head)+size+1)
	buf = append(buf, head...)
	at := len(buf)
	for i := range size - 2 {
		buf = append(buf, 'a'+byte(i%26))
	}
	buf = append(buf, `"}`...)
	return buf, func(b []byte, sent time.Duration, from, seq uint32) {
		putHex(b[at:at+16], uint64(sent))
		putHex(b[at+16:at+24], uint64(from))
		putHex(b[at+24:at+32], uint64(seq))
	}
}

// readV1 reads envelopes until the connection ends or its read deadline
// passes: msgs are deliveries (latency from the stamp), acks count the
// sender's own; both advance the session sequence. Welcome-time presence
// and pongs are skipped. A frame longer than a msg of size bytes in its
// envelope is no msg of the load: foreign, read past, never held.
func (c *wsClient) readV1(start time.Time, delivered *atomic.Int64, participants, size int) {
	buf := make([]byte, 0, 4096)
	for {
		_, r, err := c.conn.NextReader()
		ok := true
		if err == nil {
			buf, ok, err = readAll(r, buf[:0], size+v1EnvelopeRoom)
		}
		if err != nil {
			var ne net.Error
			if !(errors.As(err, &ne) && ne.Timeout()) {
				c.closedErr = err
			}
			return
		}
		if !ok {
			c.foreign++
			continue
		}
		kind := envelopeType(buf)
		if kind != "msg" && kind != "ack" {
			continue
		}
		seq, ok := uintField(buf, `"seq":`)
		if !ok {
			continue
		}
		switch {
		case seq == c.v1.next:
			c.v1.next++
		case seq < c.v1.next:
			c.v1.dups++
			continue
		default:
			c.v1.gaps += int64(seq - c.v1.next)
			c.v1.next = seq + 1
		}
		if kind == "ack" {
			// Acks come in the order the msgs were sent: the n-th acks
			// this client's n-th msg (per-sender sequence n-1).
			c.received1(uint32(c.v1.acked))
			c.v1.acked++
			c.arrivals.add()
			continue
		}
		i := bytes.Index(buf, []byte(`"data":"`))
		if i < 0 || len(buf) < i+8+v1Stamp {
			continue
		}
		stamp := buf[i+8 : i+8+v1Stamp]
		sentAt, ok1 := parseHex(stamp[:16])
		from, ok2 := parseHex(stamp[16:24])
		fromSeq, ok3 := parseHex(stamp[24:32])
		if !ok1 || !ok2 || !ok3 || int(from) >= participants || int(from) == c.index {
			continue
		}
		c.delivered(start, delivered, int(from), uint32(fromSeq), time.Duration(sentAt))
	}
}

// envelopeType returns the value of a server envelope's "type" for the
// types the load counts (the edge writes it first; see sessions/v1.go).
func envelopeType(b []byte) string {
	switch {
	case bytes.HasPrefix(b, []byte(`{"type":"msg"`)):
		return "msg"
	case bytes.HasPrefix(b, []byte(`{"type":"ack"`)):
		return "ack"
	}
	return ""
}

// uintField parses the unsigned number after the first occurrence of key.
// The data of the load's msgs is hex, so it cannot contain key.
func uintField(b []byte, key string) (uint64, bool) {
	i := bytes.Index(b, []byte(key))
	if i < 0 {
		return 0, false
	}
	var v uint64
	n := 0
	for _, ch := range b[i+len(key):] {
		if ch < '0' || ch > '9' {
			break
		}
		v = v*10 + uint64(ch-'0')
		n++
	}
	return v, n > 0
}

// readAll appends r's rest to b, reusing b's capacity, while b holds at
// most limit bytes: a frame longer is read to its end and dropped (false),
// so a target cannot make the load hold what it sends, however much.
func readAll(r io.Reader, b []byte, limit int) ([]byte, bool, error) {
	for {
		if len(b) > limit {
			_, err := io.Copy(io.Discard, r)
			return b[:0], false, err
		}
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):min(cap(b), limit+1)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, len(b) <= limit, nil
		}
		if err != nil {
			return b, true, err
		}
	}
}

const hexDigits = "0123456789abcdef"

// putHex writes v in lower-case hex, right-aligned in dst (len(dst) digits).
func putHex(dst []byte, v uint64) {
	for i := len(dst) - 1; i >= 0; i-- {
		dst[i] = hexDigits[v&0xf]
		v >>= 4
	}
}

func parseHex(b []byte) (uint64, bool) {
	var v uint64
	for _, ch := range b {
		switch {
		case ch >= '0' && ch <= '9':
			v = v<<4 | uint64(ch-'0')
		case ch >= 'a' && ch <= 'f':
			v = v<<4 | uint64(ch-'a'+10)
		default:
			return 0, false
		}
	}
	return v, true
}
