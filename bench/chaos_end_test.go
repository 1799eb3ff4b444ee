package bench

import (
	"errors"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
)

// A participant's connection end is named by how it ended, so a table's
// "disconnected" column says whose doing it was: the server's close code,
// a reset, this client's own read or write deadline.
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
	for _, tc := range []struct {
		name string
		end  func(*websocket.Conn)
		// read makes the client's read fail as the case needs.
		read func(*websocket.Conn) error
		want string
	}{
		{"close frame", func(c *websocket.Conn) {
			_ = c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseServiceRestart, "moved"), time.Now().Add(5*time.Second))
		}, nil, "1012"},
		{"reset", func(c *websocket.Conn) {
			_ = c.NetConn().(*net.TCPConn).SetLinger(0)
			c.NetConn().Close()
		}, nil, "read reset"},
		{"read deadline", func(*websocket.Conn) { <-held }, func(c *websocket.Conn) error {
			_ = c.SetReadDeadline(time.Now().Add(-time.Second))
			_, _, err := c.ReadMessage()
			return err
		}, "read timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ends <- tc.end
			c := dial(t)
			read := tc.read
			if read == nil {
				read = func(c *websocket.Conn) error {
					_ = c.SetReadDeadline(time.Now().Add(time.Minute))
					_, _, err := c.ReadMessage()
					return err
				}
			}
			if got := connEndKind(read(c), ""); got != tc.want {
				t.Errorf("ended as %q, want %q", got, tc.want)
			}
		})
	}
	t.Run("write deadline", func(t *testing.T) {
		ends <- func(*websocket.Conn) { <-held }
		c := dial(t)
		// A deadline already past when the write runs: what a client
		// stalled between setting it and writing sees.
		_ = c.SetWriteDeadline(time.Now().Add(-time.Second))
		werr := c.WriteMessage(websocket.TextMessage, []byte("x"))
		if werr == nil {
			t.Fatal("a write past its deadline succeeded")
		}
		c.Close()
		_, _, rerr := c.ReadMessage()
		if got := connEndKind(rerr, "write "+netErrorKind(werr)); got != "write timeout" {
			t.Errorf("ended as %q, want %q", got, "write timeout")
		}
		if got := netErrorKind(errors.New("something else")); got != "error" {
			t.Errorf("an unknown error named %q, want %q", got, "error")
		}
	})
}
