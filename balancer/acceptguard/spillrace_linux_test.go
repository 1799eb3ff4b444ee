package acceptguard

import (
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"
)

// Ends for room race with the ended connection's own ReleaseClient, Read,
// Write and Close, and with other connections' closes: whatever the order,
// each connection's slot under the cap is given back once — by its Close,
// or passed on by its end — and the spill is empty once all are closed.
// (Checked with the race detector too; 50–380 ends a run.)
func TestSpillAccountingUnderChurn(t *testing.T) {
	var ended counter
	g := Wrap(listen(t), Config{Name: "test", MaxConns: 8, MaxConnsPerIP: 1, Spill: true,
		Refusal: HTTPAnswer(http.StatusServiceUnavailable, "full"), RefusedPerIP: &ended})
	defer g.Close()
	g.lingering.timeout = 20 * time.Millisecond
	go func() {
		for {
			c, err := g.Accept()
			if err != nil {
				return
			}
			go func() { // a server: reads a byte or waits a moment, may serve, answers or not, closes
				gc := c.(*Conn)
				_ = gc.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
				if n, _ := gc.Read(make([]byte, 1)); n > 0 && rand.IntN(2) == 0 {
					gc.ReleaseClient()
				}
				if rand.IntN(3) == 0 {
					_, _ = gc.Write([]byte("x"))
				}
				gc.Close()
			}()
		}
	}()
	var clients sync.WaitGroup
	for i := range 400 {
		clients.Add(1)
		go func() { // from three addresses, silent or sending, until closed
			defer clients.Done()
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+i%3))}, Timeout: testWait}
			c, err := d.Dial("tcp", g.Addr().String())
			if err != nil {
				return
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(testWait))
			if rand.IntN(2) == 0 {
				_, _ = c.Write([]byte("G"))
			}
			_, _ = io.Copy(io.Discard, c)
		}()
	}
	clients.Wait()
	t.Logf("%d connections ended to make room", ended.value())
	waitFor(t, "every connection closed", func() bool { return g.Open() == 0 && g.spill.Len() == 0 })
}
