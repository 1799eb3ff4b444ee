package health

import (
	"bytes"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// inbox collects what a channel delivers.
type inbox struct {
	mu   sync.Mutex
	msgs []string // "from:payload"
	size []int
}

func (in *inbox) receive(from string, payload []byte) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.msgs = append(in.msgs, from+":"+string(payload[:min(len(payload), 32)]))
	in.size = append(in.size, len(payload))
}

func (in *inbox) wait(t *testing.T, what string, n int) []string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		in.mu.Lock()
		got := append([]string(nil), in.msgs...)
		in.mu.Unlock()
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d messages after 30s, want %d: %v", what, len(got), n, got)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// keyedPair starts two members sharing a key.
func keyedPair(t *testing.T, key string) (a, b *Membership) {
	t.Helper()
	ca := testCluster("chan-a")
	ca.SecretKeyFile = key
	a = startNode(t, ca, Meta{Role: RoleBalancer, State: StateAlive})
	cb := testCluster("chan-b", a.Addr())
	cb.SecretKeyFile = key
	b = startNode(t, cb, Meta{Role: RoleBalancer, State: StateAlive})
	waitAll(t, []*Membership{a, b}, func(ns []Node) bool { return len(ns) == 2 })
	return a, b
}

func TestChannelPacketsAndStreams(t *testing.T) {
	a, b := keyedPair(t, writeKey(t, 32))
	var atB inbox
	chB, err := b.OpenChannel('T', atB.receive)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.OpenChannel('T', atB.receive); err == nil {
		t.Error("a channel id opened twice")
	}
	chA, err := a.OpenChannel('T', func(string, []byte) {})
	if err != nil {
		t.Fatal(err)
	}
	// A channel b never opened: dropped there, nothing else happens.
	other, err := a.OpenChannel('X', func(string, []byte) {})
	if err != nil {
		t.Fatal(err)
	}
	if err := other.SendPacket("chan-b", []byte("nobody listens")); err != nil {
		t.Fatal(err)
	}
	// Each is sent again until it is in: a packet may be lost, and a
	// stream written whole may still be dropped by a receiver too busy to
	// read it within its stream timeout (seen under load); what is
	// checked is that each arrives whole, from its sender.
	big := bytes.Repeat([]byte("s"), 1<<20)
	var sent uint64
	for _, m := range []struct {
		payload []byte
		send    func(string, []byte) error
	}{{[]byte("hello"), chA.SendPacket}, {big, chA.Send}} {
		arrived := func() bool {
			atB.mu.Lock()
			defer atB.mu.Unlock()
			return slices.Contains(atB.size, len(m.payload))
		}
		for attempt := 0; !arrived(); attempt++ {
			if attempt == 6 {
				t.Fatalf("%d bytes sent %d times over 30 s, never delivered", len(m.payload), attempt)
			}
			if err := m.send("chan-b", m.payload); err != nil {
				t.Fatal(err)
			}
			sent += uint64(len(m.payload))
			for wait := time.Now().Add(5 * time.Second); !arrived() && time.Now().Before(wait); {
				time.Sleep(5 * time.Millisecond)
			}
		}
	}
	atB.mu.Lock()
	got := slices.Clone(atB.msgs)
	atB.mu.Unlock()
	if !contains(got, "chan-a:hello") || !contains(got, "chan-a:"+string(big[:32])) || slices.ContainsFunc(got, func(m string) bool { return !strings.HasPrefix(m, "chan-a:") }) {
		t.Errorf("delivered %v, want hello and 1 MiB from chan-a", got)
	}
	if s := chA.SentBytes(); s != sent {
		t.Errorf("sent bytes %d, want %d", s, sent)
	}

	// Bounds and errors, before anything goes out.
	if err := chA.SendPacket("chan-b", make([]byte, MaxChannelPacket+1)); err == nil {
		t.Error("an oversize packet was accepted")
	}
	if err := chA.Send("chan-b", make([]byte, MaxChannelMessage+1)); err == nil {
		t.Error("an oversize message was accepted")
	}
	if err := chA.SendPacket("nobody", []byte("x")); err == nil {
		t.Error("a send to no member succeeded")
	}
	chB.Close()
	if err := chB.SendPacket("chan-a", []byte("x")); err == nil {
		t.Error("a closed channel sent")
	}
}

// A node without the cluster's key cannot write into a channel: its packets
// and streams do not decrypt. The same attack against a keyless cluster (the
// loopback-only mode) is delivered, which is what the key is for.
func TestChannelRefusesStrangers(t *testing.T) {
	for _, keyed := range []bool{false, true} {
		t.Run(map[bool]string{false: "keyless", true: "keyed"}[keyed], func(t *testing.T) {
			var key string
			if keyed {
				key = writeKey(t, 32)
			}
			a, b := keyedPair(t, key)
			var atB inbox
			if _, err := b.OpenChannel('T', atB.receive); err != nil {
				t.Fatal(err)
			}
			// The stranger: its own memberlist, another key (or none),
			// sending channel messages straight to b's gossip address
			// under a's name.
			sc := testCluster("stranger")
			if keyed {
				sc.SecretKeyFile = writeKey(t, 16)
			}
			stranger := startNode(t, sc, Meta{Role: RoleBalancer, State: StateAlive})
			host, port, _ := net.SplitHostPort(b.Addr())
			p, _ := strconv.Atoi(port)
			target := &memberlist.Node{Name: "chan-b", Addr: net.ParseIP(host), Port: uint16(p)}
			msg := append([]byte{msgChannel, 'T'}, appendName(nil, a.LocalName())...)
			msg = append(msg, "forged entry"...)
			if err := stranger.ml.SendBestEffort(target, msg); err != nil {
				t.Fatal(err)
			}
			streamErr := stranger.ml.SendReliable(target, msg)
			if !keyed {
				got := atB.wait(t, "a keyless cluster's stranger", 2)
				t.Logf("without a key, the stranger's packet and stream were delivered as %v", got)
				return
			}
			// Keyed: a's own message is the marker that anything sent
			// before it has been processed.
			chA, err := a.OpenChannel('T', func(string, []byte) {})
			if err != nil {
				t.Fatal(err)
			}
			if err := chA.Send("chan-b", []byte("marker")); err != nil {
				t.Fatal(err)
			}
			got := atB.wait(t, "the member's marker", 1)
			time.Sleep(200 * time.Millisecond) // the stranger's packet had its chance too
			got = atB.wait(t, "the member's marker", 1)
			if len(got) != 1 || got[0] != "chan-a:marker" {
				t.Errorf("delivered %v; the stranger's messages got through (stream send: %v)", got, streamErr)
			}
		})
	}
}

func contains[T comparable](s []T, v T) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
