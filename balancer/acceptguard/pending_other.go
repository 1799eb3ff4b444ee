//go:build !linux

package acceptguard

import "net"

// Pending reports whether bytes have arrived on c that nobody has read yet;
// elsewhere than Linux it does not know, and says no.
func Pending(net.Conn) bool { return false }

// Unread asks one connection's socket whether bytes wait on it unread;
// elsewhere than Linux it does not know, and says no.
type Unread struct{}

// NewUnread returns nil, which answers no.
func NewUnread(net.Conn) *Unread { return nil }

// Pending reports no.
func (*Unread) Pending() bool { return false }
