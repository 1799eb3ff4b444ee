package balancer

import (
	"encoding/binary"
	"errors"
)

// The session table's messages between balancers (table_sync.go sends and
// applies them).

// Message kinds, the first byte of a channel payload.
const (
	msgDelta   = 'd'
	msgRefresh = 'r'
	msgAsk     = 'Q' // an ask for the whole table (tableSync.askMessage)
	msgAskID   = 'q' // the ask of an earlier release: its id alone
	msgAnswer  = 'a'
)

// Wire form (big-endian):
//
//	delta, refresh: kind | body
//	ask:            kind | id u64 | at i64 | to u8 | to (the balancer asked)
//	ask (earlier):  kind | id u64
//	answer:         kind | id u64 | part u32 | parts u32 | ready u8 | body
//	body:           names u8 | names × (len u8, name) |
//	                drains u8 | drains × (name u8, on u8, deadline i64, stamp i64) |
//	                records u32 | records × record
//	record:         hash u64 | backend u8 | placer u8 | version u16 | flags u8 | placedAt i64 | until i64
//
// names index the message's own name list; times are unix nanoseconds.
const (
	recordSize    = 29
	drainSize     = 18
	recordOpen    = 1 // flags: the sender has tunnels of the key open
	maxStreamPart = 1 << 20
)

var errTableMsg = errors.New("malformed session table message")

// tableRecord is one decoded record, names resolved.
type tableRecord struct {
	hash     uint64
	backend  string
	placer   string
	version  uint16
	open     bool
	placedAt int64
	until    int64
}

// msgWriter builds one message under a size limit.
type msgWriter struct {
	limit  int
	head   []byte
	names  []string
	index  map[string]uint8
	drains []byte
	nd     int
	recs   []byte
	nr     int
}

func newMsgWriter(limit int, head []byte) *msgWriter {
	return &msgWriter{limit: limit, head: head, index: map[string]uint8{}}
}

func (w *msgWriter) size() int {
	n := len(w.head) + 1 + 1 + len(w.drains) + 4 + len(w.recs)
	for _, s := range w.names {
		n += 1 + len(s)
	}
	return n
}

// name returns name's index, adding it when it fits (extra: bytes that
// must fit beside it).
func (w *msgWriter) name(name string, extra *int) (uint8, bool) {
	if i, ok := w.index[name]; ok {
		return i, true
	}
	if len(w.names) == 255 || len(name) > 255 {
		return 0, false
	}
	*extra += 1 + len(name)
	i := uint8(len(w.names))
	w.names = append(w.names, name)
	w.index[name] = i
	return i, true
}

// add appends a record; false when the message is full (nothing added).
func (w *msgWriter) add(r tableRecord) bool {
	extra := recordSize
	names, index := len(w.names), w.index
	bi, ok1 := w.name(r.backend, &extra)
	pi, ok2 := w.name(r.placer, &extra)
	if !ok1 || !ok2 || w.size()+recordSize > w.limit {
		// Undo names added for a record that does not fit.
		for _, n := range w.names[names:] {
			delete(index, n)
		}
		w.names = w.names[:names]
		return false
	}
	b := binary.BigEndian.AppendUint64(w.recs, r.hash)
	b = append(b, bi, pi)
	b = binary.BigEndian.AppendUint16(b, r.version)
	var flags byte
	if r.open {
		flags |= recordOpen
	}
	b = append(b, flags)
	b = binary.BigEndian.AppendUint64(b, uint64(r.placedAt))
	w.recs = binary.BigEndian.AppendUint64(b, uint64(r.until))
	w.nr++
	return true
}

func (w *msgWriter) addDrain(name string, st drainState) bool {
	extra := drainSize
	names := len(w.names)
	i, ok := w.name(name, &extra)
	if !ok || w.nd == 255 || w.size()+drainSize > w.limit {
		for _, n := range w.names[names:] {
			delete(w.index, n)
		}
		w.names = w.names[:names]
		return false
	}
	on := byte(0)
	if st.on {
		on = 1
	}
	w.drains = append(w.drains, i, on)
	w.drains = binary.BigEndian.AppendUint64(w.drains, uint64(st.deadline))
	w.drains = binary.BigEndian.AppendUint64(w.drains, uint64(st.stamp))
	w.nd++
	return true
}

func (w *msgWriter) empty() bool { return w.nr == 0 && w.nd == 0 }

func (w *msgWriter) bytes() []byte {
	b := make([]byte, 0, w.size())
	b = append(b, w.head...)
	b = append(b, byte(len(w.names)))
	for _, n := range w.names {
		b = append(b, byte(len(n)))
		b = append(b, n...)
	}
	b = append(b, byte(w.nd))
	b = append(b, w.drains...)
	b = binary.BigEndian.AppendUint32(b, uint32(w.nr))
	return append(b, w.recs...)
}

// readBody decodes a body, calling drain and rec for each item, after
// checking the whole of it (nothing is applied from a malformed message).
func readBody(b []byte, drain func(name string, st drainState), rec func(tableRecord)) error {
	if len(b) < 1 {
		return errTableMsg
	}
	nn := int(b[0])
	b = b[1:]
	names := make([]string, 0, nn)
	for range nn {
		if len(b) < 1 || len(b) < 1+int(b[0]) {
			return errTableMsg
		}
		// Any name the writer can write: a backend's is a static edge's
		// name as the config gives it (`ringlb check` asks for a unique
		// one of at most configs.MaxNodeName bytes, any characters) or a
		// member's, and a record counts only when its backend is one this
		// balancer routes to (merge), a drain when it names a static edge
		// of its config (mergeDrain); a placer is interned only when it
		// is a balancer member (placerIndex).
		n := string(b[1 : 1+int(b[0])])
		if n == "" {
			return errTableMsg
		}
		names = append(names, n)
		b = b[1+int(b[0]):]
	}
	if len(b) < 1 {
		return errTableMsg
	}
	nd := int(b[0])
	b = b[1:]
	if len(b) < nd*drainSize+4 {
		return errTableMsg
	}
	drains := b[:nd*drainSize]
	b = b[nd*drainSize:]
	nr := binary.BigEndian.Uint32(b)
	b = b[4:]
	if uint64(len(b)) != uint64(nr)*recordSize {
		return errTableMsg
	}
	for i := 0; i < len(drains); i += drainSize {
		if int(drains[i]) >= len(names) || drains[i+1] > 1 {
			return errTableMsg
		}
	}
	for i := 0; i < len(b); i += recordSize {
		if int(b[i+8]) >= len(names) || int(b[i+9]) >= len(names) || b[i+12]&^recordOpen != 0 {
			return errTableMsg
		}
	}
	for i := 0; i < len(drains); i += drainSize {
		drain(names[drains[i]], drainState{on: drains[i+1] == 1,
			deadline: int64(binary.BigEndian.Uint64(drains[i+2:])), stamp: int64(binary.BigEndian.Uint64(drains[i+10:]))})
	}
	for i := 0; i < len(b); i += recordSize {
		r := b[i : i+recordSize]
		rec(tableRecord{
			hash: binary.BigEndian.Uint64(r), backend: names[r[8]], placer: names[r[9]],
			version: binary.BigEndian.Uint16(r[10:]), open: r[12]&recordOpen != 0,
			placedAt: int64(binary.BigEndian.Uint64(r[13:])), until: int64(binary.BigEndian.Uint64(r[21:])),
		})
	}
	return nil
}
