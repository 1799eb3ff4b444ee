//go:build linux

package gslb

import (
	"fmt"
	"net"
	"runtime"
	"syscall"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

func setReusePort(fd uintptr) error {
	return unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
}

// udpSockets is how many UDP sockets share the port: one per CPU.
func udpSockets() int { return runtime.GOMAXPROCS(0) }

// spreadQueries has the kernel give each query to one of the n sockets of
// pc's SO_REUSEPORT group at random, instead of by a hash of the client's
// address and port. By the hash, a few busy clients (a resolver's handful of
// source ports, a load generator's sockets) fall unevenly and stay so: over
// two sockets, dnsperf's eight clients fell 5:3, 1:7 and 5:3 in three runs,
// one loop answering most queries while the other idled. Queries are
// independent, so any loop may answer any of them; one client's answers may
// come back out of order, which DNS allows (each has its ID).
//
// The program is classic BPF (no privilege needed), attached to the group:
// sockets handed to a new process keep it.
func spreadQueries(pc net.PacketConn, n int) error {
	prog, err := bpf.Assemble([]bpf.Instruction{
		bpf.LoadExtension{Num: bpf.ExtRand},                 // A = a random uint32
		bpf.ALUOpConstant{Op: bpf.ALUOpMod, Val: uint32(n)}, // A %= n
		bpf.RetA{}, // the A-th socket of the group
	})
	if err != nil {
		return err
	}
	filter := make([]unix.SockFilter, len(prog))
	for i, ins := range prog {
		filter[i] = unix.SockFilter{Code: ins.Op, Jt: ins.Jt, Jf: ins.Jf, K: ins.K}
	}
	sc, ok := pc.(interface {
		SyscallConn() (syscall.RawConn, error)
	})
	if !ok {
		return fmt.Errorf("%T has no descriptor", pc)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptSockFprog(int(fd), unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_CBPF, &unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]})
	}); err != nil {
		return err
	}
	return serr
}
