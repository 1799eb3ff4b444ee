//go:build !linux

package sessions

import "errors"

// poller is Linux's epoll (park_linux.go); elsewhere readers never park:
// each participant keeps its reader goroutine, blocked in its read.
type poller struct{}

// parkSupported: readers park on this platform.
const parkSupported = false

func newPoller() (*poller, error) { return nil, errors.New("parking readers needs Linux") }

func (*poller) arm(*participant) error { return errors.New("parking readers needs Linux") }
func (*poller) disarm(*participant)    {}
func (*poller) forget(*participant)    {}
func (*poller) close()                 {}

// errWouldBlock is never returned here: readers never park.
var errWouldBlock = errors.New("would block")

func (rd *wsReader) tryRead(uintptr) bool {
	rd.tryErr = errWouldBlock
	return true
}
