//go:build linux

package sessions

import (
	"errors"
	"fmt"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"
)

// poller wakes parked readers (participant.park): one epoll instance per
// Server, watched by one goroutine. A parked participant's socket is in it
// level-triggered and one-shot: the first readable byte (or a hang-up)
// fires once and starts a reader goroutine for that participant; the
// reader arms the socket again when it parks again. Bytes that arrived
// before the arming fire at once (level-triggered), so none is missed.
//
// Go's own netpoller cannot do this: it wakes only a goroutine blocked in a
// read, and a goroutine blocked in a read is what an idle participant must
// not cost (its stack, 2–4 KiB, was half of an idle participant).
type poller struct {
	epfd   int
	wakefd int // eventfd: wakes the loop to stop it

	mu sync.Mutex
	// byFD is the participant armed on each socket descriptor. An event
	// for a descriptor closed and reused meanwhile may wake the newer
	// participant once for nothing: its reader finds no frame and parks
	// again.
	byFD []*participant

	done chan struct{}
}

// parkSupported: readers park on this platform.
const parkSupported = true

func newPoller() (*poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	wakefd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		_ = unix.Close(epfd)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wakefd)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wakefd, &ev); err != nil {
		_ = unix.Close(epfd)
		_ = unix.Close(wakefd)
		return nil, fmt.Errorf("epoll_ctl: %w", err)
	}
	pl := &poller{epfd: epfd, wakefd: wakefd, done: make(chan struct{})}
	go pl.loop()
	return pl, nil
}

// errSocketClosed: the socket closed before it could be armed.
var errSocketClosed = errors.New("socket closed")

// arm watches p's socket until it is readable, then wakes p once. The
// socket cannot close meanwhile: closeSocket takes p.out.mu, held here
// across epoll_ctl, so the descriptor is never one reused by another
// connection.
func (pl *poller) arm(p *participant) error {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	p.out.mu.Lock()
	defer p.out.mu.Unlock()
	if p.out.sockClosed {
		return errSocketClosed
	}
	fd := int(p.fd)
	if fd >= len(pl.byFD) {
		pl.byFD = append(pl.byFD, make([]*participant, fd+1-len(pl.byFD))...)
		pl.byFD = pl.byFD[:cap(pl.byFD)]
	}
	pl.byFD[fd] = p
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: p.fd}
	op := unix.EPOLL_CTL_MOD
	if !p.armed {
		op = unix.EPOLL_CTL_ADD
	}
	err := unix.EpollCtl(pl.epfd, op, fd, &ev)
	if errors.Is(err, unix.EEXIST) {
		err = unix.EpollCtl(pl.epfd, unix.EPOLL_CTL_MOD, fd, &ev)
	}
	if err != nil {
		return fmt.Errorf("epoll_ctl: %w", err)
	}
	p.armed = true
	return nil
}

// disarm takes p's socket out of the epoll set, before closeSocket closes
// it (with p.out.mu held, sockClosed set: arm runs no more). The kernel
// drops an entry only once its socket's file goes, and epoll_wait holds the
// file of each entry it looks at, under the instance's lock: a socket
// closed just then (its peer's bytes woke the poller and a reader running
// since a stop, which read them and ended) is released by that epoll_wait,
// and only when it returns — with nothing else to wake the poller, never:
// no FIN, the socket open for good, its peer left waiting. EPOLL_CTL_DEL
// takes the instance's lock too, so once it returns, the close is the
// socket's last reference. (Go's own poller does the same before its
// closes; the balancer's relay loop too.)
func (pl *poller) disarm(p *participant) {
	// Nothing to do on an error: the socket is not in the set.
	_ = unix.EpollCtl(pl.epfd, unix.EPOLL_CTL_DEL, int(p.fd), nil)
}

// forget drops p from the table once its connection has ended (disarm
// took its socket out of the epoll set before the close).
func (pl *poller) forget(p *participant) {
	pl.mu.Lock()
	if int(p.fd) < len(pl.byFD) && pl.byFD[p.fd] == p {
		pl.byFD[p.fd] = nil
	}
	pl.mu.Unlock()
}

func (pl *poller) loop() {
	defer close(pl.done)
	events := make([]unix.EpollEvent, 256)
	for {
		n, err := unix.EpollWait(pl.epfd, events, -1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			// Only a broken epoll descriptor gets here; the readers it
			// held are still woken by their stops and pings.
			return
		}
		for _, ev := range events[:n] {
			if int(ev.Fd) == pl.wakefd {
				return
			}
			pl.mu.Lock()
			var p *participant
			if int(ev.Fd) < len(pl.byFD) {
				p = pl.byFD[ev.Fd]
			}
			pl.mu.Unlock()
			if p != nil {
				p.unpark()
			}
		}
		// Let the readers just started run on this P now: queued on it,
		// they would otherwise wait while this goroutine sits in
		// epoll_wait until another P steals them.
		runtime.Gosched()
	}
}

// close stops the loop and releases the descriptors. Called once, after
// every participant has ended.
func (pl *poller) close() {
	var one [8]byte
	one[0] = 1 // a counter in host byte order: any non-zero value wakes
	_, _ = unix.Write(pl.wakefd, one[:])
	<-pl.done
	_ = unix.Close(pl.epfd)
	_ = unix.Close(pl.wakefd)
}

// errWouldBlock: the socket has nothing to read now.
var errWouldBlock error = unix.EAGAIN

// tryRead is one non-blocking read(2) into rd.tryDst, run by RawConn.Read
// (which holds the descriptor); returning true always, it never waits.
func (rd *wsReader) tryRead(fd uintptr) bool {
	for {
		n, err := unix.Read(int(fd), rd.tryDst)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			n = 0
		}
		rd.tryN, rd.tryErr = n, err
		return true
	}
}
