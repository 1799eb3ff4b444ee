package operator

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"
)

// sockDiagByFamily is SOCK_DIAG_BY_FAMILY, the sock_diag request for one
// address family's sockets.
const sockDiagByFamily = 20

// peerUID returns the user owning the socket at the other end of a TCP
// connection on this host — local is this server's end, remote the
// client's — as the kernel's socket table records it (NETLINK_SOCK_DIAG,
// one exact lookup, as ss -e shows it). A connection from another host (or
// another network namespace) has no such socket here: an error. Written
// here rather than taken from a netlink library: vishvananda/netlink's
// SocketGet asks with NLM_F_DUMP, which walks the host's whole TCP table per
// request (a balancer holds thousands of connections), where a request
// without it is the kernel's hashed lookup of the one socket.
func peerUID(local, remote netip.AddrPort) (uint32, error) {
	ps, err := peerSocket(local, remote)
	if err != nil {
		return 0, err
	}
	if ps.inode == 0 {
		// Closed by its process: a time-wait entry, which the table
		// reports as uid 0 (root), or an orphan. Taken for root's, a
		// request its sender closed the socket of before we asked — it
		// waited in the accept queue while the port's slots were full —
		// ran as the operator's (TestClosedClientSocketIsNobodys).
		return 0, errors.New("sock_diag: the client's socket is closed: no process holds it")
	}
	return ps.uid, nil
}

// peerSock is what the socket table says of the client's socket.
type peerSock struct {
	uid   uint32
	inode uint32 // 0: no process holds it (closed: a time-wait entry, an orphan)
	state uint8  // the TCP state, as in the kernel's tcp_states.h
}

// peerSocket is peerUID's lookup: the client's socket as the kernel's socket
// table records it.
func peerSocket(local, remote netip.AddrPort) (peerSock, error) {
	src, dst := remote.Addr().Unmap(), local.Addr().Unmap()
	family := byte(unix.AF_INET6)
	if src.Is4() && dst.Is4() {
		family = unix.AF_INET
	}
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return peerSock{}, fmt.Errorf("sock_diag: %w", err)
	}
	defer unix.Close(fd)
	tv := unix.NsecToTimeval(time.Second.Nanoseconds())
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)

	// nlmsghdr (16 bytes), then inet_diag_req_v2 (56): family, protocol,
	// ext, pad, states, and the socket's id from the client's side.
	req := make([]byte, 16+56)
	binary.NativeEndian.PutUint32(req[0:], uint32(len(req)))
	binary.NativeEndian.PutUint16(req[4:], sockDiagByFamily)
	binary.NativeEndian.PutUint16(req[6:], unix.NLM_F_REQUEST)
	binary.NativeEndian.PutUint32(req[8:], 1) // seq
	p := req[16:]
	p[0], p[1] = family, unix.IPPROTO_TCP
	binary.NativeEndian.PutUint32(p[4:], 0xffffffff) // every state
	id := p[8:]
	binary.BigEndian.PutUint16(id[0:], remote.Port())
	binary.BigEndian.PutUint16(id[2:], local.Port())
	if family == unix.AF_INET {
		s, d := src.As4(), dst.As4()
		copy(id[4:], s[:])
		copy(id[20:], d[:])
	} else {
		s, d := src.As16(), dst.As16()
		copy(id[4:], s[:])
		copy(id[20:], d[:])
	}
	binary.NativeEndian.PutUint32(id[40:], 0xffffffff) // INET_DIAG_NOCOOKIE
	binary.NativeEndian.PutUint32(id[44:], 0xffffffff)
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return peerSock{}, fmt.Errorf("sock_diag: %w", err)
	}
	buf := make([]byte, 4096)
	n, _, err := unix.Recvfrom(fd, buf, 0)
	if err != nil {
		return peerSock{}, fmt.Errorf("sock_diag: %w", err)
	}
	buf = buf[:n]
	if len(buf) < 16 {
		return peerSock{}, errors.New("sock_diag: short answer")
	}
	switch typ := binary.NativeEndian.Uint16(buf[4:]); typ {
	case unix.NLMSG_ERROR:
		if len(buf) >= 20 {
			if errno := -int32(binary.NativeEndian.Uint32(buf[16:])); errno != 0 {
				return peerSock{}, fmt.Errorf("sock_diag: %w", unix.Errno(errno))
			}
		}
		return peerSock{}, errors.New("sock_diag: no such socket")
	case sockDiagByFamily:
		// inet_diag_msg: family, state, timer, retrans (4), id (48),
		// expires, rqueue, wqueue (12), uid, inode.
		if len(buf) < 16+72 {
			return peerSock{}, errors.New("sock_diag: short answer")
		}
		return peerSock{uid: binary.NativeEndian.Uint32(buf[16+64:]), inode: binary.NativeEndian.Uint32(buf[16+68:]), state: buf[17]}, nil
	default:
		return peerSock{}, fmt.Errorf("sock_diag: answer of type %d", typ)
	}
}
