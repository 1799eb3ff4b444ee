package bench

import (
	"errors"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/ringlb/ringlb/health/healthtest"
)

// A participant's connection end is named by how it ended, so a table's
// "disconnected" column says whose doing it was: the server's close code,
// a reset, this client's own read or write deadline — and, when that
// deadline passed with nothing of the server's holding the socket (bytes
// waiting unread, nothing unacknowledged), this client's own stall.
func TestConnEndKind(t *testing.T) {
	ends := make(chan func(*websocket.Conn), 1)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	up := websocket.Upgrader{}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		(<-ends)(c)
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	dial := func(t *testing.T) *websocket.Conn {
		c, _, err := (&websocket.Dialer{HandshakeTimeout: 10 * time.Second}).Dial("ws://"+l.Addr().String()+"/", nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	held := make(chan struct{})
	t.Cleanup(func() { close(held) })
	send := make(chan struct{})
	for _, tc := range []struct {
		name string
		end  func(*websocket.Conn)
		// read makes the client's read fail as the case needs.
		read func(*testing.T, *websocket.Conn) error
		want string
	}{
		{"close frame", func(c *websocket.Conn) {
			_ = c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseServiceRestart, "moved"), time.Now().Add(5*time.Second))
		}, nil, "1012"},
		{"reset", func(c *websocket.Conn) {
			_ = c.NetConn().(*net.TCPConn).SetLinger(0)
			c.NetConn().Close()
		}, nil, "read reset"},
		{"read deadline", func(*websocket.Conn) { <-held }, func(_ *testing.T, c *websocket.Conn) error {
			_ = c.SetReadDeadline(time.Now().Add(-time.Second))
			_, _, err := c.ReadMessage()
			return err
		}, "read timeout"},
		{"read deadline with the server's bytes unread", func(c *websocket.Conn) {
			<-send // after the handshake's answer has been read
			_ = c.WriteMessage(websocket.TextMessage, []byte("here"))
			<-held
		}, func(t *testing.T, c *websocket.Conn) error {
			// What a client that did not run for its read deadline sees:
			// the bytes came, the deadline passed before the read.
			send <- struct{}{}
			healthtest.WaitUntil(t, "the server's msg in the socket", func() bool { in, _ := socketQueues(c.NetConn()); return in > 0 })
			_ = c.SetReadDeadline(time.Now().Add(-time.Second))
			_, _, err := c.ReadMessage()
			return err
		}, endClientStalled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ends <- tc.end
			c := dial(t)
			read := tc.read
			if read == nil {
				read = func(_ *testing.T, c *websocket.Conn) error {
					_ = c.SetReadDeadline(time.Now().Add(time.Minute))
					_, _, err := c.ReadMessage()
					return err
				}
			}
			if got := connEndKind(c, read(t, c), ""); got != tc.want {
				t.Errorf("ended as %q, want %q", got, tc.want)
			}
		})
	}
	t.Run("write deadline with nothing unsent", func(t *testing.T) {
		ends <- func(*websocket.Conn) { <-held }
		c := dial(t)
		// A deadline already past when the write runs: what a client
		// stalled between setting it and writing sees. The server took
		// everything before (the handshake): nothing held the write.
		_ = c.SetWriteDeadline(time.Now().Add(-time.Second))
		werr := c.WriteMessage(websocket.TextMessage, []byte("x"))
		if werr == nil {
			t.Fatal("a write past its deadline succeeded")
		}
		wrote := writeEndKind(c, werr)
		c.Close()
		_, _, rerr := c.ReadMessage()
		if got := connEndKind(c, rerr, wrote); got != endClientStalled {
			t.Errorf("ended as %q, want %q", got, endClientStalled)
		}
		if got := netErrorKind(errors.New("something else")); got != "error" {
			t.Errorf("an unknown error named %q, want %q", got, "error")
		}
	})
	t.Run("write deadline of a server that reads nothing", func(t *testing.T) {
		ends <- func(*websocket.Conn) { <-held }
		c := dial(t)
		// Written to until the server has shut its window with bytes
		// waiting unacknowledged: they stay so, whatever this process
		// does, and the write blocked behind them is the server's doing
		// when a deadline ends it. (Each write given a short deadline
		// instead, a client that stalled before the buffers were full
		// found its write timed out with nothing held: "client stalled".)
		_ = c.SetWriteDeadline(time.Now().Add(healthtest.Patience))
		wrote := make(chan error, 1)
		go func() {
			chunk := make([]byte, 1<<20)
			for {
				if err := c.WriteMessage(websocket.BinaryMessage, chunk); err != nil {
					wrote <- err
					return
				}
			}
		}()
		healthtest.WaitUntil(t, "the server's window shut with bytes unacknowledged", func() bool { return windowShut(c.NetConn()) })
		// The blocked write ends now, or at its own deadline if the next
		// frame's write set that again first.
		_ = c.NetConn().SetWriteDeadline(time.Now())
		werr := <-wrote
		if got := writeEndKind(c, werr); got != "write timeout" {
			t.Errorf("ended as %q (%v), want %q", got, werr, "write timeout")
		}
	})
}
