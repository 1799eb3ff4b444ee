package balancer

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/netip"
	"strconv"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/ringlb/ringlb/balancer/handoff"
	"github.com/ringlb/ringlb/balancer/ring"
)

// Hitless upgrade, the balancer's part (the process part is balancer/handoff):
// the old process sends its ring (SendState) so the new one routes like it
// from its first request; once the new one serves, the old one stops
// serving, sends its live-session table, then takes every plain tunnel out
// of its relay and sends each with its two sockets and its state (HandOff);
// the new one merges the table, routing requests only once it has it, and
// puts the tunnels in its own relay, counted in the table (TakeOver). Bytes in the kernel's socket buffers move with the
// sockets; bytes the old relay had read but not yet written travel in the
// record and are written first. TLS tunnels cannot move (crypto/tls keeps
// the session keys inside the process): they stay with the old process
// until they end or its shutdown timeout.

// movedTunnel is one tunnel's state on the wire.
type movedTunnel struct {
	edge, key  string
	clientAddr netip.Addr // the address the client is counted under (limits), if any
	start      time.Time
	lastActive int64     // unix nanoseconds
	bytes      [2]uint64 // clientToEdge, edgeToClient
	clientEOF  bool      // the client sent FIN (passed on to the edge)
	edgeEOF    bool      // the edge sent FIN
	counted    bool      // the sender's table counted it in its key's entry (attach)
	toClient   []byte    // read from the edge, not yet written to the client
	toEdge     []byte    // read from the client, not yet written to the edge
}

// Flags of a tunnel record. A release reads the bits it knows and ignores
// the others: one before movedCounted sends it on no tunnel, and the new
// process takes each as one its table did not count (attach); given it,
// such a release counts every tunnel as before.
const (
	movedClientEOF = 1 << iota
	movedEdgeEOF
	movedCounted // the sender's table counted the tunnel in its key's entry
)

// Limits of a tunnel record. A relay end's pending bytes are at most one
// read of its loop's buffer; the key is bounded by balancer.key.max_length
// (at most 4096) and the edge's name by membership (64).
const (
	movedRecordVersion = 1
	maxMovedPending    = 64 << 10 // relay_linux.go's relayBufferSize
	maxMovedKey        = 4096
	maxMovedEdge       = 255
	movedHeaderLen     = 1 + 1 + 1 + 2 + 8*5 + 4 + 4 + 1
)

// encode appends the record: version, flags, edge length, key length,
// start, last active, bytes up, bytes down, reserved, the two pending
// lengths, the client address's length (0, 4 or 16), then edge, key,
// client address and the pending bytes.
func (m *movedTunnel) encode() []byte {
	addr, _ := m.clientAddr.MarshalBinary() // never fails; no zone here
	b := make([]byte, 0, movedHeaderLen+len(m.edge)+len(m.key)+len(addr)+len(m.toClient)+len(m.toEdge))
	var flags byte
	if m.clientEOF {
		flags |= movedClientEOF
	}
	if m.edgeEOF {
		flags |= movedEdgeEOF
	}
	if m.counted {
		flags |= movedCounted
	}
	b = append(b, movedRecordVersion, flags, byte(len(m.edge)))
	b = binary.BigEndian.AppendUint16(b, uint16(len(m.key)))
	b = binary.BigEndian.AppendUint64(b, uint64(m.start.UnixNano()))
	b = binary.BigEndian.AppendUint64(b, uint64(m.lastActive))
	b = binary.BigEndian.AppendUint64(b, m.bytes[clientToEdge])
	b = binary.BigEndian.AppendUint64(b, m.bytes[edgeToClient])
	b = binary.BigEndian.AppendUint64(b, 0)
	b = binary.BigEndian.AppendUint32(b, uint32(len(m.toClient)))
	b = binary.BigEndian.AppendUint32(b, uint32(len(m.toEdge)))
	b = append(b, byte(len(addr)))
	b = append(b, m.edge...)
	b = append(b, m.key...)
	b = append(b, addr...)
	b = append(b, m.toClient...)
	return append(b, m.toEdge...)
}

var errBadRecord = errors.New("bad tunnel record")

// decodeMoved parses a record, refusing any length beyond the limits
// before using it.
func decodeMoved(p []byte) (*movedTunnel, error) {
	if len(p) < movedHeaderLen {
		return nil, fmt.Errorf("%w: %d bytes, shorter than its header", errBadRecord, len(p))
	}
	if p[0] != movedRecordVersion {
		return nil, fmt.Errorf("%w: version %d, want %d", errBadRecord, p[0], movedRecordVersion)
	}
	flags, edgeLen := p[1], int(p[2])
	keyLen := int(binary.BigEndian.Uint16(p[3:5]))
	m := &movedTunnel{
		start:      time.Unix(0, int64(binary.BigEndian.Uint64(p[5:13]))),
		lastActive: int64(binary.BigEndian.Uint64(p[13:21])),
		clientEOF:  flags&movedClientEOF != 0,
		edgeEOF:    flags&movedEdgeEOF != 0,
		counted:    flags&movedCounted != 0,
	}
	m.bytes[clientToEdge] = binary.BigEndian.Uint64(p[21:29])
	m.bytes[edgeToClient] = binary.BigEndian.Uint64(p[29:37])
	toClientLen := binary.BigEndian.Uint32(p[45:49])
	toEdgeLen := binary.BigEndian.Uint32(p[49:53])
	addrLen := int(p[53])
	if edgeLen == 0 || keyLen > maxMovedKey || toClientLen > maxMovedPending || toEdgeLen > maxMovedPending || (addrLen != 0 && addrLen != 4 && addrLen != 16) {
		return nil, fmt.Errorf("%w: edge %d, key %d, address %d, pending %d and %d bytes", errBadRecord, edgeLen, keyLen, addrLen, toClientLen, toEdgeLen)
	}
	rest := p[movedHeaderLen:]
	if want := edgeLen + keyLen + addrLen + int(toClientLen) + int(toEdgeLen); len(rest) != want {
		return nil, fmt.Errorf("%w: %d bytes after the header, lengths say %d", errBadRecord, len(rest), want)
	}
	m.edge, rest = string(rest[:edgeLen]), rest[edgeLen:]
	m.key, rest = string(rest[:keyLen]), rest[keyLen:]
	if addrLen > 0 {
		m.clientAddr, _ = netip.AddrFromSlice(rest[:addrLen])
	}
	rest = rest[addrLen:]
	if toClientLen > 0 {
		m.toClient = append([]byte(nil), rest[:toClientLen]...)
	}
	rest = rest[toClientLen:]
	if toEdgeLen > 0 {
		m.toEdge = append([]byte(nil), rest[:toEdgeLen]...)
	}
	return m, nil
}

// handoffState is what the new process starts with.
type handoffState struct {
	Ring []handoffMember `json:"ring"`
	// Static is each static edge's monitor state (name → up): the new
	// process's monitors start from it, so an edge seen down stays off the
	// ring (a fresh monitor starts up, until Fall checks fail).
	Static map[string]bool `json:"static,omitempty"`
	// ZeroSince is when each static edge of weight 0 got it (its drain's
	// clock), by name: the new process's drains go on from them. Absent
	// from an earlier release: they start afresh (or from state_dir).
	ZeroSince map[string]time.Time `json:"zero_since,omitempty"`
	// TableWaiting: the old process's table did not route yet (it waited
	// for the other balancers' table, after a restart), so the one it
	// hands over is partial and the new process waits as it did. An
	// earlier release sends none: its table is taken as the table.
	TableWaiting bool `json:"table_waiting,omitempty"`
	// Maintenance is the operator's maintenance mode (POST
	// /api/maintenance): the new process's health path answers as this
	// one's did from its first request. Without cluster.state_dir nothing
	// else carries it, and an upgrade put a balancer an operator had taken
	// out back into every health check (keepalived, a gslb monitor). Absent
	// from an earlier release: the new process keeps what state_dir says.
	// The static edges' admin drains, the balancer's other operator state,
	// come with the table (sendTable).
	Maintenance *bool `json:"maintenance,omitempty"`
	// TableEnd: the table's parts are followed by one empty part, and the
	// empty parts that keep the hand-off alive come only after it, so the
	// first empty part ends the table and the new process routes at once,
	// not at the first tunnel, which comes only once this process's
	// requests in flight have ended. An earlier release reads the empty
	// part as no entry; from one that sends none the table ends at the
	// first tunnel.
	TableEnd bool `json:"table_end,omitempty"`
}

type handoffMember struct {
	Name   string `json:"name"`
	URL    string `json:"url"`
	Weight int    `json:"weight"`
}

// maxStateMembers bounds the ring a state frame may carry.
const maxStateMembers = 10000

// SendState sends the new process what it needs before it serves: the ring
// this balancer routes by (the new one joins gossip only once this one has
// left it, so until then it routes by this copy), and its maintenance mode.
func (b *Balancer) SendState(c *handoff.Conn) error {
	var st handoffState
	for _, m := range b.ring.Snapshot().Members() {
		st.Ring = append(st.Ring, handoffMember{Name: m.Name, URL: m.URL, Weight: m.Weight})
	}
	if static := b.static.Load(); static != nil {
		st.Static = static.states()
		st.ZeroSince = static.zeroSince()
	}
	st.TableWaiting = !b.table.routable()
	maintenance := b.maintenance.Load()
	st.Maintenance = &maintenance
	b.sentMaintenance.Store(maintenance)
	st.TableEnd = true
	p, err := json.Marshal(st)
	if err != nil {
		return err
	}
	return c.Send(handoff.TypeState, p)
}

// ReceiveState reads the old process's state and routes by its ring.
func (b *Balancer) ReceiveState(c *handoff.Conn) error {
	typ, p, _, err := c.Recv()
	if err != nil {
		return err
	}
	if typ != handoff.TypeState {
		return fmt.Errorf("hand-off: frame type %d where the state was expected", typ)
	}
	var st handoffState
	if err := json.Unmarshal(p, &st); err != nil {
		return fmt.Errorf("hand-off state: %w", err)
	}
	if len(st.Ring) > maxStateMembers || len(st.Static) > maxStateMembers || len(st.ZeroSince) > maxStateMembers {
		return fmt.Errorf("hand-off state: %d ring members, %d static edges and %d weight-0 clocks, at most %d", len(st.Ring), len(st.Static), len(st.ZeroSince), maxStateMembers)
	}
	b.mu.Lock()
	b.staticStates = st.Static
	if len(st.ZeroSince) > 0 {
		// The old process's clocks over state_dir's: it ran until now.
		zero := maps.Clone(b.zeroSince)
		if zero == nil {
			zero = map[string]time.Time{}
		}
		maps.Copy(zero, st.ZeroSince)
		b.zeroSince = zero
	}
	b.mu.Unlock()
	if st.Maintenance != nil && b.maintenance.Swap(*st.Maintenance) != *st.Maintenance {
		// Saved, so a restart after this one keeps it too (with
		// cluster.state_dir).
		b.saveState()
		b.log.Warn("maintenance mode as the process this one replaced had it", "maintenance", *st.Maintenance, "health", HealthPath)
	}
	members := make([]ring.Member, 0, len(st.Ring))
	for _, m := range st.Ring {
		members = append(members, ring.Member{Name: m.Name, URL: m.URL, Weight: m.Weight})
	}
	b.ring.Update(members)
	// The old process's table comes with its tunnels (TakeOver): until
	// then requests wait, rather than route live keys by the ring alone.
	// It is checked against the static edges as against the ring.
	b.startStatic(b.current.Load())
	b.table.beginInherit(!st.TableWaiting)
	b.inheritEnds.Store(st.TableEnd)
	return nil
}

// handOffEnd is the balancer's part of the hand-off's end (Conn.End), once
// it has stopped serving: from its state frame until then both processes
// served the admin port, and what an operator changed here meanwhile went
// nowhere — maintenance switched on, answered 200, and the new process's
// health path answered as in service. (The static edges' drains come with
// the table, sent once this one has stopped serving.) An earlier release
// sends none and ignores it.
type handOffEnd struct {
	// Maintenance is set only when it changed here after SendState: a
	// change made on the new process meanwhile stands otherwise.
	Maintenance *bool `json:"maintenance,omitempty"`
}

// HandOffEnd is what the hand-off's end carries for the new process
// (TakeHandOffEnd); nil when nothing changed after SendState.
func (b *Balancer) HandOffEnd() []byte {
	maintenance := b.maintenance.Load()
	if maintenance == b.sentMaintenance.Load() {
		return nil
	}
	p, err := json.Marshal(handOffEnd{Maintenance: &maintenance})
	if err != nil {
		return nil
	}
	return p
}

// TakeHandOffEnd applies what the old process's HandOffEnd carries.
func (b *Balancer) TakeHandOffEnd(p []byte) error {
	var end handOffEnd
	if err := json.Unmarshal(p, &end); err != nil {
		return fmt.Errorf("hand-off end: %w", err)
	}
	if end.Maintenance != nil && b.maintenance.Swap(*end.Maintenance) != *end.Maintenance {
		b.saveState()
		b.log.Warn("maintenance mode as it was set on the process this one replaced during the upgrade", "maintenance", *end.Maintenance, "health", HealthPath)
	}
	return nil
}

// sendTable sends the table to the new process, in parts of at most a
// frame, and the empty part that ends it (handoffState.TableEnd).
func (b *Balancer) sendTable(c *handoff.Conn) error {
	for _, body := range b.table.bodies(handoff.MaxFrame) {
		if err := c.Send(handoff.TypeTable, body.bytes()); err != nil {
			return err
		}
	}
	return c.Send(handoff.TypeTable, emptyTablePart())
}

// emptyTablePart is a table part with no entry: the table's end, and the
// hand-off's keep-alive after it.
func emptyTablePart() []byte { return newMsgWriter(handoff.MaxFrame, nil).bytes() }

// HandOffResult says what HandOff did.
type HandOffResult struct {
	Moved int // tunnels now carried by the new process
	Kept  int // tunnels left here (TLS, or still in their handshake at ctx's end): they run until Shutdown
	// Closed tunnels could not be sent (the new process stopped reading).
	Closed int
	// PendingBytes were read by this relay and not yet written when the
	// tunnels were detached; they travelled in the records.
	PendingBytes int
	// Stopping is how long the servers took to stop (requests in flight);
	// Moving how long the tunnels took to move, during which none of them
	// was read.
	Stopping, Moving time.Duration
}

// limiterWait bounds TakeOver's wait for Serve to have set up the limits.
const limiterWait = 5 * time.Second

// settleWait is how often HandOff looks whether the tunnels still in their
// handshake have reached the relay.
const settleWait = 5 * time.Millisecond

// tableWait bounds how long HandOff waits for its requests in flight before
// it sends the table: a handshake takes milliseconds and its placement is
// then in the table; a long download or a request trickled in a byte at a
// time is not waited for, or the new process's requests, which wait for
// the table, waited with it (up to -shutdown-timeout). A request that
// places a key after the table went routes by the ring the new process
// routes by too, and its tunnel brings its entry along (attach). Well
// under the frame's bound: no keep-alive goes before the table.
//
// The admin and redirect ports' requests in flight get the same bound, and
// the admin port's unfinished ones are then cut: nothing there becomes a
// tunnel or an entry, their clients retry on the new process, which serves
// the same ports, and one trickled there (the login form is open to
// anyone) held the tunnels' move, the old process's leaving gossip and the
// upgrade's answer for up to -shutdown-timeout.
const tableWait = 500 * time.Millisecond

// HandOff stops this balancer serving (the new process serves the same
// listeners already), waits (bounded by ctx) for the data port's requests
// in flight — a WebSocket handshake becomes a tunnel first; the admin
// port's get tableWait —, then moves every tunnel of
// the relay to the new process over c, and then the counters. Call Shutdown
// afterwards: it closes what was kept once its context ends.
func (b *Balancer) HandOff(ctx context.Context, c *handoff.Conn) (res HandOffResult, err error) {
	began := time.Now()
	stopped := make(chan []error, 1)
	others, cancel := context.WithTimeout(ctx, tableWait)
	defer cancel()
	go func() {
		_, errs := b.stopServing(ctx, others)
		stopped <- errs
	}()
	var errs []error
	waited := false
	select {
	case errs = <-stopped:
		waited = true
	case <-time.After(tableWait):
	case <-ctx.Done():
	}
	// The table first: the tunnels' entries are in it.
	sendErr := b.sendTable(c)
	// The new process waits for each frame a frame's bound (30 s), and
	// this wait may last up to ctx (-shutdown-timeout): a long download in
	// flight outlasted it, the new process gave up and took no tunnel,
	// and the tunnels sent after went unread.
	stopKeepAlive := func() {}
	if sendErr == nil {
		stopKeepAlive = b.keepHandOffAlive(c)
	}
	if !waited {
		errs = <-stopped
	}
	if err := errors.Join(errs...); err != nil {
		b.log.Warn("hand-off: stopping the servers", "err", err)
	}
	// Tunnels whose handshake is done but whose hijack goroutine has not
	// reached the relay yet are waited for.
	for !b.tunnelsSettled() && ctx.Err() == nil {
		time.Sleep(settleWait)
	}
	stopKeepAlive()
	b.mu.Lock()
	b.closing = true // nothing registers from now on
	b.mu.Unlock()
	res.Stopping = time.Since(began)
	began = time.Now()
	defer func() { res.Moving = time.Since(began) }()

	for _, p := range b.relay.pairs() {
		if !b.relay.detach(p) {
			continue // it ended meanwhile
		}
		if sendErr != nil {
			b.relay.finishDetached(p, false, "hand-off failed")
			res.Closed++
			continue
		}
		var m movedTunnel
		p.movedState(&m)
		cfd, efd := p.fds()
		if sendErr = c.Send(handoff.TypeTunnel, m.encode(), cfd, efd); sendErr != nil {
			b.relay.finishDetached(p, false, "hand-off failed")
			res.Closed++
			continue
		}
		b.relay.finishDetached(p, true, "")
		res.Moved++
		res.PendingBytes += len(m.toClient) + len(m.toEdge)
	}
	res.Kept = b.Tunnels()
	if sendErr != nil {
		return res, fmt.Errorf("hand-off: %w", sendErr)
	}
	counters, err := b.countersPayload()
	if err != nil {
		return res, err
	}
	if err := c.Send(handoff.TypeCounters, counters); err != nil {
		return res, fmt.Errorf("hand-off: %w", err)
	}
	return res, nil
}

// keepHandOffAlive sends the new process an empty table part every
// c.KeepAliveEvery until the returned func is called, which waits
// for it to stop (no other frame goes meanwhile): every release's
// TakeOver reads such a part as no entry, and waits for the next frame
// anew.
func (b *Balancer) keepHandOffAlive(c *handoff.Conn) (stop func()) {
	empty := emptyTablePart()
	done, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		tick := time.NewTicker(c.KeepAliveEvery())
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				if err := c.Send(handoff.TypeTable, empty); err != nil {
					b.log.Warn("hand-off: the new process does not read while this one stops serving", "err", err)
					return
				}
			}
		}
	}()
	return func() {
		close(done)
		<-stopped
	}
}

// tunnelsSettled reports whether every registered tunnel is past its
// handshake.
func (b *Balancer) tunnelsSettled() bool {
	b.mu.Lock()
	tunnels := make([]*tunnel, 0, len(b.tunnels))
	for t := range b.tunnels {
		tunnels = append(tunnels, t)
	}
	b.mu.Unlock()
	for _, t := range tunnels {
		if !t.settled() {
			return false
		}
	}
	return true
}

// TakeOver receives the old process's tunnels and puts them in this
// balancer's relay, then adds the old process's counters to this one's. It
// returns how many tunnels it took; a tunnel it cannot take (a bad record,
// the relay refusing it) is closed and counted out, the rest go on. Each
// frame comes within the hand-off's frame bound: the old process keeps
// the wait before its table alive (keepHandOffAlive), so one that sends
// nothing for that long hung; once this one stops reading, it shuts its
// end, and what the old one sends after fails there instead of being
// counted moved into a socket nobody reads.
func (b *Balancer) TakeOver(c *handoff.Conn) (int, error) {
	// Tunnels taken over count against the data port's limits, which
	// Serve sets up; without Serve (tests), they count nowhere.
	limits := b.limiterOrNil(limiterWait)
	// However the hand-off ends, the table routes with what arrived.
	defer b.table.endInherit()
	end := emptyTablePart()
	taken := 0
	for {
		typ, p, fds, err := c.Recv(handoff.TypeTunnel)
		if err != nil {
			_ = c.CloseRead()
			return taken, err
		}
		switch typ {
		case handoff.TypeTable:
			if b.inheritEnds.Load() && bytes.Equal(p, end) {
				b.table.endInherit() // the table's end (handoffState.TableEnd), or a keep-alive after it
				continue
			}
			// A part that does not read costs its entries, never the
			// tunnels that follow: each brings its key's entry (attach).
			if _, err := b.table.inherit(p); err != nil {
				b.log.Warn("hand-off: a part of the session table was refused; the tunnels go on", "bytes", len(p), "err", err)
			}
		case handoff.TypeTunnel:
			b.table.endInherit()
			if b.adopt(p, fds, limits) {
				taken++
			}
		case handoff.TypeCounters:
			return taken, b.addCounters(p)
		default:
			_ = c.CloseRead()
			return taken, fmt.Errorf("hand-off: unexpected frame type %d among tunnels", typ)
		}
	}
}

// adopt registers one received tunnel; its descriptors are closed when it
// cannot be.
func (b *Balancer) adopt(p []byte, fds []int, limits *limitListener) bool {
	closeAll := func() {
		for _, fd := range fds {
			closeFD(fd)
		}
	}
	m, err := decodeMoved(p)
	if err == nil && len(fds) != 2 {
		err = fmt.Errorf("%w: %d descriptors, want 2", errBadRecord, len(fds))
	}
	if err == nil {
		err = checkTCPSocket(fds[0], fds[1])
	}
	if err != nil {
		b.log.Warn("hand-off: tunnel refused", "err", err)
		closeAll()
		return false
	}
	_, static := b.static.Load().edge(m.edge)
	t := &tunnel{b: b, edge: m.edge, static: static, key: m.key, start: m.start, idle: b.cfg.TunnelIdleTimeout.D(), started: true, clientAddr: netip.AddrPortFrom(m.clientAddr, 0)}
	if b.relay == nil || !b.registerTunnel(t) {
		closeAll()
		return false
	}
	// Before the relay runs it: its end (release) must find it counted.
	b.table.attach(xxhash.Sum64String(m.key), m.edge, t, m.counted)
	// Counted against this balancer's limits as if accepted here.
	var account io.Closer
	if limits != nil {
		account = limits.hold(m.clientAddr)
	}
	if err := b.relay.adopt(t, m, fds[0], fds[1], account); err != nil {
		b.log.Warn("hand-off: tunnel refused", "edge", m.edge, "err", err)
		closeAll()
		if account != nil {
			account.Close()
		}
		t.release()
		return false
	}
	return true
}

// carriedCounters are the counters whose values a new process continues
// from; gauges describe the process itself and are not carried.
func (m *metrics) carriedCounters() map[string]*prometheus.CounterVec {
	return map[string]*prometheus.CounterVec{
		"ringlb_balancer_requests_total":             m.requestsTotal,
		"ringlb_balancer_backend_errors_total":       m.backendErrorsTotal,
		"ringlb_balancer_rejected_connections_total": m.rejectedTotal,
		"ringlb_balancer_accept_errors_total":        m.acceptErrors,
	}
}

// carriedCounter is one counter series on the wire.
type carriedCounter struct {
	Name   string            `json:"name"`
	Labels map[string]string `json:"labels"`
	Value  float64           `json:"value"`
}

func (b *Balancer) countersPayload() ([]byte, error) {
	families, err := b.reg.Gather()
	if err != nil {
		return nil, fmt.Errorf("hand-off counters: %w", err)
	}
	carried := b.metrics.carriedCounters()
	var out []carriedCounter
	for _, f := range families {
		if _, ok := carried[f.GetName()]; !ok || f.GetType() != dto.MetricType_COUNTER {
			continue
		}
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			out = append(out, carriedCounter{Name: f.GetName(), Labels: labels, Value: m.GetCounter().GetValue()})
		}
	}
	return json.Marshal(out)
}

// addCounters adds the old process's counter values to this one's, so
// rates computed across the upgrade see no reset.
func (b *Balancer) addCounters(p []byte) error {
	var in []carriedCounter
	if err := json.Unmarshal(p, &in); err != nil {
		return fmt.Errorf("hand-off counters: %w", err)
	}
	carried := b.metrics.carriedCounters()
	var errs []error
	for _, c := range in {
		vec, ok := carried[c.Name]
		if !ok || c.Value < 0 {
			continue
		}
		if code, err := strconv.Atoi(c.Labels["code"]); err == nil && vec == b.metrics.requestsTotal {
			// A release before codeLabel kept a series per odd status.
			c.Labels["code"] = codeLabel(code)
		}
		counter, err := vec.GetMetricWith(c.Labels)
		if err != nil {
			errs = append(errs, fmt.Errorf("counter %s: %w", c.Name, err))
			continue
		}
		counter.Add(c.Value)
	}
	return errors.Join(errs...)
}
