//go:build !linux

package health

import (
	"context"
	"net"
	"net/http"
	"time"
)

// tcpConnect opens a TCP connection to target (host:port) and closes it,
// within timeout. (On Linux the kernel's verdict is waited for in poll(2),
// apart from Go's network poller: kernelcheck_linux.go.)
func tcpConnect(ctx context.Context, target string, timeout time.Duration) error {
	c, err := (&net.Dialer{Timeout: timeout}).DialContext(ctx, "tcp", target)
	if err != nil {
		return err
	}
	return c.Close()
}

// checkTransport leaves tr as it is and returns the HTTP client's timeout:
// the check's. (On Linux the connections are the kernel's verdict and the
// client has none: kernelcheck_linux.go.)
func checkTransport(tr *http.Transport, timeout time.Duration) time.Duration {
	return timeout
}
