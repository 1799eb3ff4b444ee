package health

import (
	"encoding/json"
	"log/slog"
	"net"
	"net/netip"
	"reflect"
	"testing"

	"github.com/hashicorp/memberlist"

	"github.com/ringlb/ringlb/configs"
)

// newRecorder is a Membership with only what record (membership.go, the
// events memberlist reports) uses: no gossip runs.
func newRecorder() *Membership {
	m := &Membership{logger: slog.New(slog.DiscardHandler), name: "self",
		allowed: configs.Cluster{AllowedNetworks: configs.DefaultAllowedNetworks}.AllowedPrefixes(),
		nodes:   map[string]Node{}, ignored: map[string]string{}, ignoredAddr: map[string]string{}, noted: map[string]string{}, gone: map[string]Event{}, subs: map[int]chan struct{}{}}
	m.pins = newPinTable("self", m.toldOf, func() int { return 2 }, 4)
	// The stream guard's member book alone: record tells it who is a
	// member; nothing is forwarded.
	m.streams = &streamGuard{members: map[string]netip.Addr{}, memberAt: map[netip.Addr]int{}}
	return m
}

// FuzzMeta: any metadata a member gossips (at most memberlist's 512 bytes),
// as record takes it in on a join. It never panics; a member whose
// metadata does not decode whole is ignored; a member it keeps keeps what
// its metadata said, once checked (trustMeta), and that metadata, encoded
// again (Meta.Encode) and taken in again, is the same member.
func FuzzMeta(f *testing.F) {
	for _, meta := range []Meta{
		{Role: RoleEdge, Region: "east", URL: "http://10.0.0.11:7101", Admin: "http://10.0.0.11:7102", Weight: 3, State: StateAlive,
			Load: &Load{Sessions: 10, Connections: 20, CPU: 30}, PeerSigning: PeerSigningSkip},
		{Role: RoleBalancer, Region: "west", State: StateDraining},
		{Role: RoleGSLB, State: StateAlive, Load: &Load{CPU: 101}},
		{Role: RoleEdge, URL: "http://8.8.8.8:80", Weight: 1, State: StateAlive},
	} {
		enc, err := meta.Encode()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(enc)
	}
	// Kept before, on the fields decoded before the bad one: an edge in
	// no region, an edge with a load of zeros.
	f.Add([]byte(`{"role":"edge","url":"http://10.0.0.1:1","weight":1,"state":"alive","region":7}`))
	f.Add([]byte(`{"role":"edge","url":"http://10.0.0.1:1","weight":1,"state":"alive","load":{"cpu":"x"}}`))
	f.Add([]byte(`{"role":"edge","ROLE":"gslb","url":"http://10.0.0.1:1","weight":1,"state":"alive","region":"\xff"}`))
	f.Add([]byte(nil))
	f.Fuzz(func(t *testing.T, meta []byte) {
		if len(meta) > memberlist.MetaMaxSize {
			return // memberlist refuses it
		}
		m := newRecorder()
		node := &memberlist.Node{Name: "edge-1", Addr: net.IPv4(10, 0, 0, 1), Port: 7946, Meta: meta}
		m.record("join", node)
		kept, ok := m.nodes["edge-1"]
		if !ok {
			return
		}
		var whole Meta
		if err := json.Unmarshal(meta, &whole); len(meta) > 0 && err != nil {
			t.Fatalf("a member whose metadata does not decode (%v) is kept as %+v", err, kept.Meta)
		}
		enc, err := kept.Meta.Encode()
		if err != nil {
			return // longer once encoded again (escapes), and only ever decoded here
		}
		again := newRecorder()
		node.Meta = enc
		again.record("join", node)
		if got, ok := again.nodes["edge-1"]; !ok || !reflect.DeepEqual(got.Meta, kept.Meta) {
			t.Fatalf("metadata %s kept as %+v, encoded %s, taken in again as %+v (kept %v)", meta, kept.Meta, enc, got.Meta, ok)
		}
	})
}
