//go:build !linux

package health

import (
	"context"
	"net"
	"time"
)

// checkDial connects to target for a check: each read and write of
// the connection ends timeout after the check's last write to the target
// began (the connect's deadline until the first). (On Linux its waits are
// the kernel's verdict: kernelcheck_linux.go.)
func checkDial(ctx context.Context, target string, timeout time.Duration) (net.Conn, error) {
	c, err := (&net.Dialer{Timeout: timeout}).DialContext(ctx, "tcp", target)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(timeout))
	return writeTimed{c, timeout}, nil
}

// writeTimed moves its connection's deadline to timeout after each write
// begins: the target's time to answer.
type writeTimed struct {
	net.Conn
	timeout time.Duration
}

func (w writeTimed) Write(b []byte) (int, error) {
	w.Conn.SetDeadline(time.Now().Add(w.timeout))
	return w.Conn.Write(b)
}
