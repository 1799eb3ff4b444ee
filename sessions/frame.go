package sessions

import (
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
const maxPooledFrame = 64 << 10

// frame is one WebSocket message read from a participant, shared by every
// recipient's send queue. It is reference counted: the reader holds one
// reference while it relays and each queue slot holds one; the last release
// returns it to its pool. Nothing may touch a frame after releasing it.
type frame struct {
	kind   int       // websocket.TextMessage or websocket.BinaryMessage
	data   []byte    // payload, unchanged from the sender
	readAt time.Time // when the reader finished reading it (lag is measured from here)
	refs   atomic.Int32
	pool   *framePool
}

// retain adds a reference for one more holder.
func (f *frame) retain() { f.refs.Add(1) }

// release drops one reference; the last one recycles the frame.
func (f *frame) release() {
	switch n := f.refs.Add(-1); {
	case n == 0:
		f.pool.put(f)
	case n < 0:
		panic("sessions: frame released more often than retained")
	}
}

// framePool recycles frames with their buffers, so relaying a message does
// not allocate once the pool is warm. One pool per Server (no package state).
type framePool struct{ p sync.Pool }

// get returns an empty frame holding one reference (the caller's).
func (fp *framePool) get() *frame {
	f, _ := fp.p.Get().(*frame)
	if f == nil {
		f = &frame{data: make([]byte, 0, frameBufferSize), pool: fp}
	}
	f.refs.Store(1)
	return f
}

func (fp *framePool) put(f *frame) {
	if cap(f.data) > maxPooledFrame {
		return // let the GC have oversized buffers
	}
	f.data = f.data[:0]
	fp.p.Put(f)
}

// grow makes room for at least one more byte, doubling the buffer.
func (f *frame) grow() {
	f.data = slices.Grow(f.data, max(cap(f.data), frameBufferSize))
}
