// The raw client of the tests that check that a server's answer to a bad
// request survives the close that follows it (acceptguard's lingering
// close): it keeps sending after the server has answered, as a client still
// sending its request does, then reads to the end. Linux, whose TCP answers
// bytes unread at a close (or arriving after it) with a reset.

package acceptguardtest

import (
	"errors"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Patience bounds each wait of the client: generous, for a busy machine.
const Patience = 30 * time.Second

// Exchange is what the client saw.
type Exchange struct {
	Answer   []byte // everything it read
	WriteErr error  // of what it sent after the answer had arrived
	ReadErr  error  // what ended its reading; nil: the server's FIN
}

// Reset reports whether the server reset the connection: ECONNRESET on the
// write or the read, or EPIPE on a write after a reset.
func (x Exchange) Reset() bool {
	for _, err := range []error{x.WriteErr, x.ReadErr} {
		if errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
			return true
		}
	}
	return false
}

// SendAfterAnswer dials addr and writes first. Once the server's answer has
// arrived (the socket is readable; nothing is read yet) it writes rest, then
// reads until the server closes.
func SendAfterAnswer(tb testing.TB, addr string, first, rest []byte) Exchange {
	tb.Helper()
	c, err := net.DialTimeout("tcp", addr, Patience)
	if err != nil {
		tb.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(Patience))
	if _, err := c.Write(first); err != nil {
		tb.Fatalf("write the request's start: %v", err)
	}
	if err := answerArrived(c.(*net.TCPConn)); err != nil {
		tb.Fatalf("waiting for the answer: %v", err)
	}
	var x Exchange
	_, x.WriteErr = c.Write(rest)
	x.Answer, x.ReadErr = io.ReadAll(c)
	return x
}

// answerArrived waits until c has bytes to read (or an error: a reset), in
// the netpoller, without reading them.
func answerArrived(c *net.TCPConn) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var one [1]byte
	return raw.Read(func(fd uintptr) bool {
		_, _, err := unix.Recvfrom(int(fd), one[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		return err != unix.EAGAIN
	})
}

// Rounds is how many clients NotReset sends.
const Rounds = 20

// NotReset sends Rounds clients to addr that write first, then rest once
// the answer has arrived: each must read an answer that begins with want,
// then the server's FIN, and none may be reset. It logs what they saw.
func NotReset(t *testing.T, addr, first, rest, want string) {
	t.Helper()
	resets, answered, failed := 0, 0, 0
	for range Rounds {
		x := SendAfterAnswer(t, addr, []byte(first), []byte(rest))
		if x.Reset() {
			resets++
		}
		if strings.HasPrefix(string(x.Answer), want) && x.ReadErr == nil {
			answered++
		} else if failed++; failed <= 3 {
			t.Logf("read %.40q (%d bytes); write: %v; read: %v", x.Answer, len(x.Answer), x.WriteErr, x.ReadErr)
		}
	}
	t.Logf("%d clients: %d read the whole answer and the server's FIN, %d were reset", Rounds, answered, resets)
	if resets != 0 || answered != Rounds {
		t.Errorf("%d of %d clients reset; %d of %d read %q… and the server's FIN", resets, Rounds, answered, Rounds, want)
	}
}

// ResetAfterWrite writes p on c, whose peer has ended the connection (c has
// read its FIN), and waits, up to Patience, for the peer's answer to the
// write: true when it is a reset — the peer's socket was closed — and false
// when the write was taken in (a socket still open, lingering, reads and
// drops it, and sends nothing more).
func ResetAfterWrite(tb testing.TB, c *net.TCPConn, p []byte) bool {
	tb.Helper()
	if _, err := c.Write(p); err != nil {
		return (Exchange{WriteErr: err}).Reset()
	}
	raw, err := c.SyscallConn()
	if err != nil {
		tb.Fatal(err)
	}
	var revents int16
	var perr error
	// No events asked: poll reports only an error or a hang-up, which a
	// reset brings (a socket that only read a FIN has neither).
	if err := raw.Control(func(fd uintptr) {
		fds := []unix.PollFd{{Fd: int32(fd)}}
		for {
			_, perr = unix.Poll(fds, int(Patience/time.Millisecond))
			if perr != unix.EINTR {
				break
			}
		}
		revents = fds[0].Revents
	}); err != nil {
		tb.Fatal(err)
	}
	if perr != nil {
		tb.Fatalf("poll: %v", perr)
	}
	return revents&(unix.POLLERR|unix.POLLHUP) != 0
}
