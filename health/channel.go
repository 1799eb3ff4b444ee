package health

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync/atomic"

	"github.com/hashicorp/memberlist"
)

// A Channel carries another package's messages between members over this
// node's gossip transport, so they are encrypted and authenticated with the
// cluster's key like all gossip: a node without the key can neither read nor
// write them. health does not know what they mean; the consumer opens a
// channel by a one-byte id and gets each message with the name of the member
// that sent it.
//
// Messages go to one member at a time: a packet (UDP, best effort, small) or
// a stream (TCP, reliable, up to MaxChannelMessage). Not memberlist's
// broadcast queue: that sends each message to random members a fixed number
// of times in every gossip round, which reaches a consumer's few peers (the
// balancers among many edges) only by chance and carries a few dozen
// messages a second at LAN timings. Not push/pull state either: push/pull
// goes to one random member at a time, capped at 20 MB shared with pins.
// A consumer that needs every peer to converge sends to each itself and
// repairs what a lost packet missed by a periodic full exchange (the
// balancers' session table does both).

// Wire form (big-endian): 'C' | id u8 | nameLen u8 | sender name | payload.
const msgChannel = 'C'

// Channel message limits.
const (
	// MaxChannelPacket bounds a packet's payload: with the framing,
	// encryption and memberlist's header it stays in one UDP datagram
	// under a 1500-byte MTU.
	MaxChannelPacket = 1200
	// MaxChannelMessage bounds a stream message's payload, well under
	// memberlist's 20 MB limit on what it reads off a stream.
	MaxChannelMessage = 4 << 20
)

var (
	errChannelOpen   = errors.New("gossip channel already open")
	errChannelClosed = errors.New("gossip channel closed")
	errNoMember      = errors.New("no live member of that name")
)

// Channel is one consumer's traffic; see OpenChannel.
type Channel struct {
	m       *Membership
	id      byte
	receive func(from string, payload []byte)
	closed  atomic.Bool
	sent    atomic.Uint64 // payload bytes handed to the transport
}

// OpenChannel registers receive for the messages of channel id and returns
// the channel to send on. receive runs on memberlist's goroutines (a
// packet's on the one that reads every packet): it must not block, and must
// copy what it keeps of payload. Messages of a channel nobody opened are
// dropped, so a node that does not use one pays only for reading them.
func (m *Membership) OpenChannel(id byte, receive func(from string, payload []byte)) (*Channel, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, ErrShutdown
	}
	if m.channels[id] != nil {
		return nil, fmt.Errorf("%w: %q", errChannelOpen, id)
	}
	c := &Channel{m: m, id: id, receive: receive}
	m.channels[id] = c
	return c, nil
}

// Close stops delivering the channel's messages; sends fail from then on.
func (c *Channel) Close() {
	if c.closed.Swap(true) {
		return
	}
	c.m.mu.Lock()
	if c.m.channels[c.id] == c {
		delete(c.m.channels, c.id)
	}
	c.m.mu.Unlock()
}

// SentBytes is the payload bytes sent on the channel so far.
func (c *Channel) SentBytes() uint64 { return c.sent.Load() }

// SendPacket sends payload to the member named to in one datagram: best
// effort, it may be lost. At most MaxChannelPacket bytes.
func (c *Channel) SendPacket(to string, payload []byte) error {
	if len(payload) > MaxChannelPacket {
		return fmt.Errorf("gossip channel packet of %d bytes: the limit is %d", len(payload), MaxChannelPacket)
	}
	n, msg, err := c.prepare(to, payload)
	if err != nil {
		return err
	}
	if err := c.m.ml.SendBestEffort(n, msg); err != nil {
		return fmt.Errorf("send to %s: %w", to, err)
	}
	c.sent.Add(uint64(len(payload)))
	return nil
}

// Send sends payload to the member named to over a stream: never in part,
// and an error when it could not be written. Written is not delivered: a
// receiver too busy to read it within its stream timeout (or past its
// streams' byte budget) drops it, unseen by the sender (memberlist's
// streams have no acknowledgement), so what matters is sent again by its
// user (the table's refresh each linger/2, an ask again when an answer
// stalls). At most MaxChannelMessage bytes. It blocks until written: the
// dial is bounded by memberlist's TCP timeout, the write by the receiver,
// which reads within its own stream timeout or closes (every member runs
// memberlist; nothing else is ever sent to).
func (c *Channel) Send(to string, payload []byte) error {
	if len(payload) > MaxChannelMessage {
		return fmt.Errorf("gossip channel message of %d bytes: the limit is %d", len(payload), MaxChannelMessage)
	}
	n, msg, err := c.prepare(to, payload)
	if err != nil {
		return err
	}
	if err := c.m.ml.SendReliable(n, msg); err != nil {
		return fmt.Errorf("send to %s: %w", to, err)
	}
	c.sent.Add(uint64(len(payload)))
	return nil
}

// prepare frames payload and finds the member to send it to, from this
// node's own copy of the member list (memberlist's nodes are written by its
// goroutines while they are read).
func (c *Channel) prepare(to string, payload []byte) (*memberlist.Node, []byte, error) {
	if c.closed.Load() {
		return nil, nil, errChannelClosed
	}
	node, ok := c.m.Node(to)
	if !ok {
		return nil, nil, fmt.Errorf("%w: %q", errNoMember, to)
	}
	host, port, err := net.SplitHostPort(node.Addr)
	if err != nil {
		return nil, nil, fmt.Errorf("member %s: address %q: %w", to, node.Addr, err)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	ip := net.ParseIP(host)
	if err != nil || ip == nil {
		return nil, nil, fmt.Errorf("member %s: address %q is not IP:port", to, node.Addr)
	}
	msg := make([]byte, 0, 3+len(c.m.name)+len(payload))
	msg = append(msg, msgChannel, c.id)
	msg = appendName(msg, c.m.name)
	msg = append(msg, payload...)
	return &memberlist.Node{Name: to, Addr: ip, Port: uint16(p)}, msg, nil
}

// deliverChannel hands a channel message to its consumer.
func (m *Membership) deliverChannel(msg []byte) error {
	if len(msg) < 2 || msg[0] != msgChannel {
		return errChannelMsg
	}
	from, payload, err := readName(msg[2:])
	if err != nil || from == "" {
		return errChannelMsg
	}
	m.mu.Lock()
	c := m.channels[msg[1]]
	m.mu.Unlock()
	if c == nil || from == m.name {
		return nil
	}
	c.receive(from, payload)
	return nil
}

var errChannelMsg = errors.New("malformed gossip channel message")
