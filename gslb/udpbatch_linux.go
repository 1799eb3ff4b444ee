//go:build linux

package gslb

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Batched UDP I/O: one recvmmsg takes every query waiting on the socket (up
// to udpBatchSize) and one sendmmsg sends all their answers, so a loaded
// server makes two system calls per batch instead of two per query. Both go
// through the socket's RawConn: the loop waits for readiness in Go's
// netpoller (no thread parked in a system call), and closing the socket ends
// the loop. Everything is allocated once per socket, the RawConn callbacks
// included (a closure made per call escapes: an allocation per batch).
//
// Both calls pass MSG_DONTWAIT, so neither ever blocks, and both are made
// with RawSyscall: without the runtime's entering and leaving of a system
// call. With Syscall, a sendmmsg of a batch outlasts sysmon's 20 µs tick, so
// sysmon took the loop's P away mid-call and woke another thread to run it,
// which found nothing to do and slept again: under dnsperf that was 15-20 %
// of the loop's CPU (6.9 µs of CPU per answer, 5.6 with RawSyscall). The
// price is that a stop-the-world waits for the call in progress to return,
// tens of µs for a full batch on loopback.

const (
	udpBatchSize = 32
	// udpQueryBytes bounds a query (maxQueryBytes, tcp.go); longer ones
	// (MSG_TRUNC) are dropped unanswered: nothing of them is reflected.
	udpQueryBytes = maxQueryBytes
)

type udpBatch struct {
	rc  syscall.RawConn
	v6  bool // the socket is AF_INET6 (IPv4 clients appear mapped)
	in  [udpBatchSize]unix.Mmsghdr
	inV [udpBatchSize]unix.Iovec
	inA [udpBatchSize]unix.RawSockaddrInet6
	inB [udpBatchSize][]byte

	out  [udpBatchSize]unix.Mmsghdr
	outV [udpBatchSize]unix.Iovec
	outA [udpBatchSize]unix.RawSockaddrInet6
	outB [udpBatchSize][]byte
	outN int

	// The RawConn callbacks, bound once, and what they report back.
	recvFn, sendFn func(fd uintptr) bool
	got            int           // messages recvmmsg took
	recvErr        syscall.Errno // recvmmsg's error, other than EAGAIN
	sent           int           // messages of out sent so far
}

func newUDPBatch(conn *net.UDPConn) (*udpBatch, error) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return nil, err
	}
	b := &udpBatch{rc: rc}
	b.v6 = conn.LocalAddr().(*net.UDPAddr).IP.To4() == nil
	for i := range udpBatchSize {
		b.inB[i] = make([]byte, udpQueryBytes)
		b.inV[i].Base = &b.inB[i][0]
		b.inV[i].SetLen(udpQueryBytes)
		b.in[i].Hdr.Iov = &b.inV[i]
		b.in[i].Hdr.SetIovlen(1)
		b.in[i].Hdr.Name = (*byte)(unsafe.Pointer(&b.inA[i]))
		b.out[i].Hdr.Iov = &b.outV[i]
		b.out[i].Hdr.SetIovlen(1)
		b.out[i].Hdr.Name = (*byte)(unsafe.Pointer(&b.outA[i]))
		b.outB[i] = make([]byte, 0, 512)
	}
	b.recvFn, b.sendFn = b.recvmmsg, b.sendmmsg
	return b, nil
}

// recvmmsg takes what is waiting on fd; false (EAGAIN) asks the netpoller to
// wait for the socket to be readable and call again.
func (b *udpBatch) recvmmsg(fd uintptr) bool {
	r, _, e := unix.RawSyscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&b.in[0])), udpBatchSize, unix.MSG_DONTWAIT, 0, 0)
	if e == unix.EAGAIN || e == unix.EINTR {
		return false
	}
	b.got, b.recvErr = int(r), e
	return true
}

// sendmmsg sends what is left of the queued answers, skipping one the
// kernel refuses; false (EAGAIN: the send buffer is full) waits for room.
func (b *udpBatch) sendmmsg(fd uintptr) bool {
	r, _, e := unix.RawSyscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&b.out[b.sent])), uintptr(b.outN-b.sent), unix.MSG_DONTWAIT, 0, 0)
	switch {
	case e == unix.EAGAIN || e == unix.EINTR:
		return false
	case e != 0:
		b.sent++ // skip the message that failed
	default:
		b.sent += int(r)
	}
	return true
}

// read waits for queries and returns how many it took; errno is a
// transient error of the socket (an ICMP error surfacing, say), err means
// the socket is closed.
func (b *udpBatch) read() (n int, errno syscall.Errno, err error) {
	for i := range udpBatchSize {
		b.in[i].Hdr.Namelen = unix.SizeofSockaddrInet6
		b.in[i].Hdr.Flags = 0
		b.in[i].Len = 0
	}
	b.got, b.recvErr = 0, 0
	if err = b.rc.Read(b.recvFn); err != nil || b.recvErr != 0 {
		return 0, b.recvErr, err
	}
	return b.got, 0, nil
}

// query returns the i-th query read and who sent it.
func (b *udpBatch) query(i int) ([]byte, netip.AddrPort, bool) {
	h := &b.in[i]
	if h.Hdr.Flags&unix.MSG_TRUNC != 0 {
		return b.inB[i][:udpQueryBytes], netip.AddrPort{}, false
	}
	a := &b.inA[i]
	port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&a.Port))[:])
	var addr netip.Addr
	switch a.Family {
	case unix.AF_INET:
		v4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(a))
		addr = netip.AddrFrom4(v4.Addr)
	case unix.AF_INET6:
		addr = netip.AddrFrom16(a.Addr).Unmap()
	default:
		return nil, netip.AddrPort{}, false
	}
	return b.inB[i][:h.Len], netip.AddrPortFrom(addr, port), true
}

// queue copies an answer into the send batch; it flushes when full.
func (b *udpBatch) queue(p []byte, to netip.AddrPort) {
	if b.outN == udpBatchSize {
		b.flush()
	}
	i := b.outN
	b.outB[i] = append(b.outB[i][:0], p...)
	b.outV[i].Base = &b.outB[i][0]
	b.outV[i].SetLen(len(p))
	a := &b.outA[i]
	*a = unix.RawSockaddrInet6{}
	binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&a.Port))[:], to.Port())
	if b.v6 {
		a.Family = unix.AF_INET6
		a.Addr = to.Addr().As16() // IPv4 clients as mapped addresses
		b.out[i].Hdr.Namelen = unix.SizeofSockaddrInet6
	} else {
		if !to.Addr().Unmap().Is4() {
			return // an IPv6 client on an IPv4 socket cannot happen
		}
		v4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(a))
		v4.Family = unix.AF_INET
		v4.Addr = to.Addr().Unmap().As4()
		b.out[i].Hdr.Namelen = unix.SizeofSockaddrInet4
	}
	b.outN++
}

// flush sends the queued answers. An answer the kernel refuses (a client
// address gone, a full buffer) is dropped, as a lost UDP packet would be.
func (b *udpBatch) flush() {
	for b.sent = 0; b.sent < b.outN; {
		if err := b.rc.Write(b.sendFn); err != nil {
			break // closed
		}
	}
	b.outN = 0
}

// serveUDPBatched is the reader loop of one socket with batched I/O.
func (s *Server) serveUDPBatched(conn *net.UDPConn) error {
	b, err := newUDPBatch(conn)
	if err != nil {
		return err
	}
	l := newUDPLoop(s, conn, b)
	for {
		n, _, err := b.read()
		if errors.Is(err, net.ErrClosed) {
			return nil
		}
		if err != nil {
			return err
		}
		for i := range n {
			pkt, from, ok := b.query(i)
			if !ok {
				continue
			}
			l.handle(pkt, from)
		}
		b.flush()
	}
}
