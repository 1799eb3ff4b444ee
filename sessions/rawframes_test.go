package sessions

import (
	"bufio"
	"encoding/binary"
	"io"
	"net"
	"time"
)

// rawFrames reads the server frames of a WebSocket opened by hand
// (rawJoinV1With): unmasked, each message one frame (the edge never
// fragments).
type rawFrames struct {
	c  net.Conn
	br *bufio.Reader
}

func newRawFrames(c net.Conn) *rawFrames {
	_ = c.SetReadDeadline(time.Now().Add(testDeadline)) // liveness only
	return &rawFrames{c: c, br: bufio.NewReaderSize(c, 4<<10)}
}

// head reads the next frame's header: its opcode and payload length. The
// payload is left to read (body, skip).
func (r *rawFrames) head() (op byte, n int, err error) {
	var h [8]byte
	if _, err := io.ReadFull(r.br, h[:2]); err != nil {
		return 0, 0, err
	}
	op, n = h[0]&0x0f, int(h[1]&0x7f)
	switch n {
	case 126:
		if _, err := io.ReadFull(r.br, h[:2]); err != nil {
			return 0, 0, err
		}
		n = int(binary.BigEndian.Uint16(h[:2]))
	case 127:
		if _, err := io.ReadFull(r.br, h[:8]); err != nil {
			return 0, 0, err
		}
		n = int(binary.BigEndian.Uint64(h[:8]))
	}
	return op, n, nil
}

// body reads n payload bytes.
func (r *rawFrames) body(n int) ([]byte, error) {
	b := make([]byte, n)
	_, err := io.ReadFull(r.br, b)
	return b, err
}

// skip reads past n payload bytes.
func (r *rawFrames) skip(n int) error {
	_, err := r.br.Discard(n)
	return err
}

// next reads a whole frame.
func (r *rawFrames) next() (op byte, payload []byte, err error) {
	op, n, err := r.head()
	if err != nil {
		return 0, nil, err
	}
	payload, err = r.body(n)
	return op, payload, err
}

// closeFrame is a client's masked close frame with code 1000, the answer
// to the edge's close.
func closeFrame() []byte {
	f := appendClientFrame(nil, []byte{0x03, 0xe8})
	f[0] = 0x88
	return f
}
