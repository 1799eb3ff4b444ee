//go:build !linux

package health

import (
	"context"
	"net"
)

// tcpConnect opens a TCP connection to target (host:port) and closes it,
// by ctx's deadline. (On Linux the kernel's verdict is waited for in
// poll(2), apart from Go's network poller: tcpcheck_linux.go.)
func tcpConnect(ctx context.Context, target string) error {
	c, err := (&net.Dialer{}).DialContext(ctx, "tcp", target)
	if err != nil {
		return err
	}
	return c.Close()
}
