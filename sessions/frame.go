package sessions

import (
	"encoding/binary"
	"math/bits"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// frameBufferSize is the capacity a fresh frame buffer starts with; a buffer
// grows (doubling) for larger messages and keeps its capacity in the pool.
const frameBufferSize = 1 << 10

// maxPooledFrame is the largest buffer returned to the pool: a session that
// once sent a huge message must not pin that much memory per pooled frame.
const maxPooledFrame = 64<<10 + frameHeadroom

// frameHeadroom is the room kept before the payload for the largest header
// of a server frame: 2 bytes, then up to 8 of length (server frames carry no
// mask, RFC 6455 5.1).
const frameHeadroom = 10

// frame is one WebSocket message read from a participant, shared by every
// recipient's send queue. It is reference counted: the reader holds one
// reference while it relays and each queue slot holds one; the last release
// returns it to its pool. Nothing may touch a frame after releasing it.
//
// The reader encodes the frame once, header in the headroom right before
// the payload, so every recipient's writer sends the same bytes with one
// write(2): no copy into a per-connection buffer, no allocation, whatever
// the size (see participant.writeLoop).
type frame struct {
	kind   int       // websocket.TextMessage or websocket.BinaryMessage
	buf    []byte    // frameHeadroom bytes, then the payload, unchanged from the sender
	start  int       // where the encoded frame (header, payload) begins in buf
	readAt time.Time // when the reader finished reading it (lag is measured from here)
	refs   atomic.Int32
	// presence: a presence batch (presenceBatch), its messages one after
	// another in buf, as many as its session's joins and leaves in an
	// interval.
	presence bool
	pool     *framePool
	// batch, when set, makes this a batch (v1.go): a queue slot holding
	// frames to write in order, one reference on each, released with it;
	// the writer takes them one by one (participant.takeReplayed). A
	// resume replays its history in one slot, however long, so replay is
	// bounded by the history, not by the send queue.
	batch []*frame
}

// payload returns the message as the sender sent it.
func (f *frame) payload() []byte { return f.buf[frameHeadroom:] }

// wire returns the whole server frame, as encoded by encode.
func (f *frame) wire() []byte { return f.buf[f.start:] }

// encode writes the header of a final, unmasked server frame of f.kind
// (the data opcodes equal websocket.TextMessage and BinaryMessage) into the
// headroom, right-aligned against the payload.
func (f *frame) encode() {
	n := len(f.buf) - frameHeadroom
	switch {
	case n <= 125:
		f.start = frameHeadroom - 2
		f.buf[f.start+1] = byte(n)
	case n <= 0xffff:
		f.start = frameHeadroom - 4
		f.buf[f.start+1] = 126
		binary.BigEndian.PutUint16(f.buf[f.start+2:], uint16(n))
	default:
		f.start = 0
		f.buf[1] = 127
		binary.BigEndian.PutUint64(f.buf[2:], uint64(n))
	}
	f.buf[f.start] = 0x80 | byte(f.kind) // FIN: relayed messages are never fragmented
}

// retain adds a reference for one more holder.
func (f *frame) retain() { f.refs.Add(1) }

// release drops one reference; the last one recycles the frame.
func (f *frame) release() {
	switch n := f.refs.Add(-1); {
	case n == 0:
		for _, b := range f.batch {
			b.release()
		}
		if f.pool != nil { // nil: an exactly sized server frame (v1.go), left to the GC
			f.pool.put(f)
		}
	case n < 0:
		panic("sessions: frame released more often than retained")
	}
}

// framePool recycles frames with their buffers, so relaying a message does
// not allocate once the pool is warm. One pool per Server (no package state).
type framePool struct {
	p    sync.Pool
	size int // capacity of a new frame's buffer; 0: frameBufferSize
}

// get returns an empty frame holding one reference (the caller's).
func (fp *framePool) get() *frame {
	f, _ := fp.p.Get().(*frame)
	if f == nil {
		size := fp.size
		if size == 0 {
			size = frameBufferSize
		}
		f = &frame{buf: make([]byte, frameHeadroom, size), pool: fp}
	}
	f.refs.Store(1)
	return f
}

// textPools recycles the frames the edge writes itself (ringlb.v1's msg,
// ack and pong) by size class, so that a msg encoded once for all its
// recipients and its session's history allocates nothing once the pools
// are warm, while a frame kept in a history holds about its own size: a
// class is at most a quarter over what it holds (four classes per
// doubling, from 64 bytes to maxPooledFrame).
type textPools struct{ classes [textClasses]framePool }

const textClasses = 42 // textClass(maxPooledFrame) + 1

// init sizes the classes' pools.
func (tp *textPools) init() {
	tp.classes[0].size = 64
	for c := 1; c < textClasses; c++ {
		e, k := 7+(c-1)/4, (c-1)%4+1
		half := 1 << (e - 1)
		tp.classes[c].size = half + k*half/4
	}
}

// textClass returns the class of a frame of n bytes (headroom included)
// and the buffer capacity of that class.
func textClass(n int) (class, capacity int) {
	if n <= 64 {
		return 0, 64
	}
	e := bits.Len(uint(n - 1)) // 2^(e-1) < n <= 2^e
	half := 1 << (e - 1)
	step := half / 4
	k := (n - half + step - 1) / step // 1..4
	return (e-7)*4 + k, half + k*step
}

// get returns an empty frame with room for size payload bytes, holding
// one reference; beyond maxPooledFrame an unpooled one.
func (tp *textPools) get(size int) *frame {
	n := frameHeadroom + size
	if n > maxPooledFrame {
		f := &frame{buf: make([]byte, frameHeadroom, n)}
		f.refs.Store(1)
		return f
	}
	class, _ := textClass(n)
	return tp.classes[class].get()
}

func (fp *framePool) put(f *frame) {
	if cap(f.buf) > maxPooledFrame {
		return // let the GC have oversized buffers
	}
	f.buf = f.buf[:frameHeadroom]
	fp.p.Put(f)
}

// growRing returns a ring of size slots holding the n frames of ring
// (oldest at head), unrolled to start at index 0.
func growRing(ring []*frame, head, n, size int) []*frame {
	grown := make([]*frame, size)
	for i := range n {
		grown[i] = ring[(head+i)%len(ring)]
	}
	return grown
}

// grow makes room for at least one more byte, doubling the buffer.
func (f *frame) grow() {
	f.buf = slices.Grow(f.buf, max(cap(f.buf), frameBufferSize))
}
