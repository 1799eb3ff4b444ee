package health

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ringlb/ringlb/configs"
)

// keyringFile writes a keyring file of the given base64 keys, first primary.
func keyringFile(t *testing.T, keys ...string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "gossip.key")
	if err := os.WriteFile(f, []byte(strings.Join(keys, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// waitIgnored waits until m has looked at a member and decided not to trust
// it: the event the negative assertions below follow.
func waitIgnored(t *testing.T, m *Membership, name string) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		m.mu.Lock()
		why, ok := m.ignored[name]
		m.mu.Unlock()
		if ok {
			return why
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s never considered %s", m.LocalName(), name)
	return ""
}

// A member that holds the cluster's key is still believed only for what a
// node can check: an absurd weight (the attack: weight 100 took 98 % of the
// ring), an unknown role, a data URL outside the allowed networks or named
// by host name. An admin address outside them is dropped, not called.
func TestUntrustedMetadataIsIgnored(t *testing.T) {
	// Nine members in one race-built process: at testCluster's 100 ms
	// probes they took each other for dead, over and over, on a busy
	// machine, and some member was always out of the view.
	keyed := keyedClusters(t)
	cfg := func(name string, join ...string) configs.Cluster {
		c := keyed(name, join...)
		c.AllowedNetworks = []string{"127.0.0.0/8"}
		return c
	}
	seed := startNode(t, cfg("bal-1"), Meta{Role: RoleBalancer, Region: "east", State: StateAlive})
	bad := map[string]Meta{
		"heavy":    {Role: RoleEdge, URL: "http://127.0.0.1:7101", Weight: 100, State: StateAlive},
		"root":     {Role: "root", URL: "http://127.0.0.1:7102", Weight: 1, State: StateAlive},
		"outside":  {Role: RoleEdge, URL: "http://203.0.113.9:7101", Weight: 1, State: StateAlive},
		"by-name":  {Role: RoleEdge, URL: "http://evil.example:7101", Weight: 1, State: StateAlive},
		"no-state": {Role: RoleEdge, URL: "http://127.0.0.1:7103", Weight: 1, State: "owner"},
	}
	for name, meta := range bad {
		startNode(t, cfg(name, seed.Addr()), meta)
	}
	admin := startNode(t, cfg("gslb-x", seed.Addr()), Meta{Role: RoleGSLB, Admin: "http://198.51.100.1:9053", State: StateAlive})
	// Load steers DNS answers: an edge announcing an impossible one keeps
	// its place on the ring, not its load.
	loaded := edgeMeta(5)
	loaded.Load = &Load{Sessions: 10, Connections: -1, CPU: 4000}
	liar := startNode(t, cfg("edge-5", seed.Addr()), loaded)
	good := startNode(t, cfg("edge-1", seed.Addr()), edgeMeta(1))

	for name := range bad {
		why := waitIgnored(t, seed, name)
		t.Logf("%s ignored: %s", name, why)
	}
	waitAll(t, []*Membership{seed}, func(ns []Node) bool { return len(ns) == 4 })
	for _, n := range seed.Members() {
		if _, isBad := bad[n.Name]; isBad {
			t.Errorf("untrusted member %s is in the view: %+v", n.Name, n.Meta)
		}
		if n.Name == admin.LocalName() && n.Meta.Admin != "" {
			t.Errorf("admin address outside the allowed networks kept: %q", n.Meta.Admin)
		}
	}
	if edges := seed.Edges(""); len(edges) != 2 || edges[0].Name != good.LocalName() || edges[1].Name != liar.LocalName() {
		t.Errorf("edges on the ring = %v, want %s and %s", edges, good.LocalName(), liar.LocalName())
	}
	if n, _ := seed.Node(liar.LocalName()); n.Meta.Load != nil {
		t.Errorf("impossible load believed: %+v", *n.Meta.Load)
	}
}

// The keyring rotates in three reloads — new key accepted, made primary,
// old removed — and the cluster stays whole at every step; a node left with
// only the retired key is out.
func TestKeyRotationWithoutPartition(t *testing.T) {
	oldKey, newKey := configs.GenerateKey(), configs.GenerateKey()
	const n = 3
	files := make([]string, n)
	nodes := make([]*Membership, n)
	for i := range n {
		files[i] = keyringFile(t, oldKey)
		c := testCluster(fmt.Sprintf("rot-%d", i))
		if i > 0 {
			c.Join = []string{nodes[0].Addr()}
		}
		c.SecretKeyFile = files[i]
		nodes[i] = startNode(t, c, edgeMeta(i))
	}
	whole := func(step string) {
		t.Helper()
		waitAll(t, nodes, func(ns []Node) bool { return len(ns) == n })
		// Gossip goes on under the keys of this step: an update made now
		// reaches every node.
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel()
		if err := nodes[0].UpdateMeta(ctx, func(m *Meta) { m.Region = step }); err != nil {
			t.Fatal(err)
		}
		waitAll(t, nodes, func(ns []Node) bool { return ns[0].Meta.Region == step })
	}
	reload := func(i int, keys ...string) {
		t.Helper()
		if err := os.WriteFile(files[i], []byte(strings.Join(keys, "\n")+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		c := testCluster(nodes[i].LocalName())
		c.SecretKeyFile = files[i]
		if err := nodes[i].ReloadKeys(c); err != nil {
			t.Fatal(err)
		}
	}
	whole("start")
	for i := range n { // 1. every node accepts the new key
		reload(i, oldKey, newKey)
	}
	whole("accepted")
	for i := range n { // 2. one by one, the new key becomes primary
		reload(i, newKey, oldKey)
		whole(fmt.Sprintf("primary-on-%d", i))
	}
	for i := range n - 1 { // 3. the old key goes, but not on the last node yet
		reload(i, newKey)
	}
	whole("removed")
	// A node that still speaks only the retired key is out.
	reload(n-1, oldKey)
	waitAll(t, nodes[:n-1], func(ns []Node) bool { return len(ns) == n-1 })
}

func TestPeerSignatures(t *testing.T) {
	k1, k2 := configs.GenerateKey(), configs.GenerateKey()
	load := func(keys ...string) *Keyring {
		t.Helper()
		kr, err := loadKeyring(configs.Cluster{SecretKeyFile: keyringFile(t, keys...)})
		if err != nil {
			t.Fatal(err)
		}
		return kr
	}
	signer, verifier := load(k1), load(k1)
	h := http.Header{}
	body := []byte("session-key")
	signer.SignRequest(h, "edge-2", "edge-1", http.MethodPost, "/_ringlb/claim", body)
	now := time.Now()
	if node, err := verifier.VerifyRequest(h.Get(configs.HeaderPeer), "edge-1", http.MethodPost, "/_ringlb/claim", body, now); err != nil || node != "edge-2" {
		t.Fatalf("valid signature: %q %v", node, err)
	}
	// Mid-rotation a node with both keys accepts either primary.
	if _, err := load(k2, k1).VerifyRequest(h.Get(configs.HeaderPeer), "edge-1", http.MethodPost, "/_ringlb/claim", body, now); err != nil {
		t.Errorf("rotating keyring refused the old primary's signature: %v", err)
	}
	header := h.Get(configs.HeaderPeer)
	// An earlier release's signature names no receiver: accepted only from a
	// member announcing that release's form (a rolling upgrade), never from
	// one that signs bound signatures, nor from a stranger.
	ts := strconv.FormatInt(now.Unix(), 10)
	legacy := "edge-2 " + ts + " " + base64.RawURLEncoding.EncodeToString(peerMAC((*signer.sign.Load())[0], "edge-2", "", ts, http.MethodPost, "/_ringlb/claim", body))
	members := map[string]Node{"edge-old": {Name: "edge-old"}, "edge-2": {Name: "edge-2", Meta: Meta{PeerSigning: PeerSigningBound}}}
	lookup := func(name string) (Node, bool) { n, ok := members[name]; return n, ok }
	verifier.members = lookup
	if _, err := verifier.VerifyRequest(legacy, "edge-1", http.MethodPost, "/_ringlb/claim", body, now); err != ErrPeerUnbound {
		t.Errorf("an unbound signature from a node that signs bound ones: %v, want %v", err, ErrPeerUnbound)
	}
	members["edge-2"] = Node{Name: "edge-2"} // an earlier release's node
	if node, err := verifier.VerifyRequest(legacy, "edge-1", http.MethodPost, "/_ringlb/claim", body, now); err != nil || node != "edge-2" {
		t.Errorf("an earlier release's signature: %q %v", node, err)
	}
	delete(members, "edge-2")
	if _, err := verifier.VerifyRequest(legacy, "edge-1", http.MethodPost, "/_ringlb/claim", body, now); err != ErrPeerUnbound {
		t.Errorf("an unbound signature from no member: %v, want %v", err, ErrPeerUnbound)
	}
	verifier.members = nil
	// For an earlier release's node, a node signs in that node's form: no
	// fourth field, the MAC over no receiver.
	signer.members = lookup
	old := http.Header{}
	signer.SignRequest(old, "edge-2", "edge-old", http.MethodPost, "/_ringlb/claim", body)
	f := strings.Fields(old.Get(configs.HeaderPeer))
	if len(f) != 3 || f[2] != base64.RawURLEncoding.EncodeToString(peerMAC((*signer.sign.Load())[0], "edge-2", "", f[1], http.MethodPost, "/_ringlb/claim", body)) {
		t.Errorf("signed for an earlier release's node: %q, want its unbound form", old.Get(configs.HeaderPeer))
	}
	signer.members = nil
	unbound, _, _ := strings.Cut(header, " edge-1")
	for _, tt := range []struct {
		name, header, self, method, uri string
		body                            []byte
		at                              time.Time
		want                            error
	}{
		{"for another node", header, "edge-3", http.MethodPost, "/_ringlb/claim", body, now, ErrPeerNotOurs},
		{"receiver rewritten", strings.Replace(header, " edge-1", " edge-3", 1), "edge-3", http.MethodPost, "/_ringlb/claim", body, now, ErrPeerBadMAC},
		{"receiver stripped", unbound, "edge-3", http.MethodPost, "/_ringlb/claim", body, now, ErrPeerUnbound},
		{"empty receiver", header[:len(header)-len("edge-1")], "", http.MethodPost, "/_ringlb/claim", body, now, ErrPeerMalform},
		{"other body", header, "edge-1", http.MethodPost, "/_ringlb/claim", []byte("other-key"), now, ErrPeerBadMAC},
		{"other path", header, "edge-1", http.MethodPost, "/_ringlb/handoff", body, now, ErrPeerBadMAC},
		{"other method", header, "edge-1", http.MethodGet, "/_ringlb/claim", body, now, ErrPeerBadMAC},
		{"other node", strings.Replace(header, "edge-2", "edge-3", 1), "edge-1", http.MethodPost, "/_ringlb/claim", body, now, ErrPeerBadMAC},
		{"late", header, "edge-1", http.MethodPost, "/_ringlb/claim", body, now.Add(PeerWindow + 2*time.Second), ErrPeerExpired},
		{"early", header, "edge-1", http.MethodPost, "/_ringlb/claim", body, now.Add(-PeerWindow - 2*time.Second), ErrPeerExpired},
		{"missing", "", "edge-1", http.MethodPost, "/_ringlb/claim", body, now, ErrPeerMissing},
		{"garbage", "edge-2 x y", "edge-1", http.MethodPost, "/_ringlb/claim", body, now, ErrPeerMalform},
		{"MAC spelled with other padding bits", respell(header), "edge-1", http.MethodPost, "/_ringlb/claim", body, now, ErrPeerMalform},
		{"huge", strings.Repeat("a", 10000), "edge-1", http.MethodPost, "/_ringlb/claim", body, now, ErrPeerMalform},
	} {
		if _, err := verifier.VerifyRequest(tt.header, tt.self, tt.method, tt.uri, tt.body, tt.at); err != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, err, tt.want)
		}
	}
	if _, err := load(k2).VerifyRequest(header, "edge-1", http.MethodPost, "/_ringlb/claim", body, now); err != ErrPeerBadMAC {
		t.Errorf("another cluster's key: %v, want %v", err, ErrPeerBadMAC)
	}
	var none *Keyring
	if _, err := none.VerifyRequest(header, "edge-1", http.MethodPost, "/_ringlb/claim", body, now); err != ErrNoKeyring {
		t.Errorf("keyless: %v", err)
	}
	h2 := http.Header{}
	none.SignRequest(h2, "edge-2", "edge-1", http.MethodGet, "/metrics", nil)
	if len(h2) != 0 {
		t.Errorf("keyless signing set %v", h2)
	}
}

// respell returns a signature whose MAC is spelled with other padding
// bits: the same 32 bytes to a lenient base64 decoder.
func respell(header string) string {
	f := strings.Fields(header)
	mac := []byte(f[2])
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	i := strings.IndexByte(alphabet, mac[len(mac)-1])
	mac[len(mac)-1] = alphabet[i^1] // the lowest of the two bits past the 256th
	f[2] = string(mac)
	return strings.Join(f, " ")
}

// A head's signature (configs.HeaderPeerHead) is checked as a request's,
// over the request line and the announced length; it never passes for a
// request's signature, nor a request's for a head's, whatever the body.
func TestHeadSignatures(t *testing.T) {
	kr, err := loadKeyring(configs.Cluster{SecretKeyFile: keyringFile(t, configs.GenerateKey())})
	if err != nil {
		t.Fatal(err)
	}
	const uri = "/_ringlb/handoff"
	now := time.Now()
	head := kr.SignHead("edge-2", "edge-1", http.MethodPost, uri, 4096)
	if node, err := kr.VerifyHead(head, "edge-1", http.MethodPost, uri, 4096, now); err != nil || node != "edge-2" {
		t.Fatalf("valid head signature: %q %v", node, err)
	}
	// The body that spells a head's message, signed as a request: the
	// same bytes a head's MAC covers but for the method field.
	spelled := headMessage(4096)
	request := kr.Sign("edge-2", "edge-1", http.MethodPost, uri, spelled)
	for _, tt := range []struct {
		name   string
		verify func() error
		want   error
	}{
		{"another length", func() error { _, err := kr.VerifyHead(head, "edge-1", http.MethodPost, uri, 4097, now); return err }, ErrPeerBadMAC},
		{"another path", func() error {
			_, err := kr.VerifyHead(head, "edge-1", http.MethodPost, "/_ringlb/claim", 4096, now)
			return err
		}, ErrPeerBadMAC},
		{"another method", func() error { _, err := kr.VerifyHead(head, "edge-1", http.MethodPut, uri, 4096, now); return err }, ErrPeerBadMAC},
		{"another receiver", func() error { _, err := kr.VerifyHead(head, "edge-3", http.MethodPost, uri, 4096, now); return err }, ErrPeerNotOurs},
		{"late", func() error {
			_, err := kr.VerifyHead(head, "edge-1", http.MethodPost, uri, 4096, now.Add(PeerWindow+2*time.Second))
			return err
		}, ErrPeerExpired},
		{"a head's as a request's", func() error {
			_, err := kr.VerifyRequest(head, "edge-1", http.MethodPost, uri, spelled, now)
			return err
		}, ErrPeerBadMAC},
		{"a request's as a head's", func() error {
			_, err := kr.VerifyHead(request, "edge-1", http.MethodPost, uri, 4096, now)
			return err
		}, ErrPeerBadMAC},
		{"missing", func() error { _, err := kr.VerifyHead("", "edge-1", http.MethodPost, uri, 4096, now); return err }, ErrPeerMissing},
	} {
		if err := tt.verify(); err != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, err, tt.want)
		}
	}
	var none *Keyring
	if v := none.SignHead("edge-2", "edge-1", http.MethodPost, uri, 4096); v != "" {
		t.Errorf("keyless SignHead = %q", v)
	}
	if _, err := none.VerifyHead(head, "edge-1", http.MethodPost, uri, 4096, now); err != ErrNoKeyring {
		t.Errorf("keyless VerifyHead: %v", err)
	}
}

// An upgrade's signature (SignUpgrade) covers the edge, URI and key, and
// is no skip's, request's or head's signature, nor any of theirs an
// upgrade's.
func TestUpgradeSignatures(t *testing.T) {
	kr, err := loadKeyring(configs.Cluster{SecretKeyFile: keyringFile(t, configs.GenerateKey())})
	if err != nil {
		t.Fatal(err)
	}
	const uri = "/ws"
	key := []byte("k1")
	now := time.Now()
	up := kr.SignUpgrade("bal-1", "edge-1", uri, key)
	if node, err := kr.VerifyUpgrade(up, "edge-1", uri, key, now); err != nil || node != "bal-1" {
		t.Fatalf("valid upgrade signature: %q %v", node, err)
	}
	skip := kr.Sign("bal-1", "edge-1", http.MethodGet, uri, SkipMessage("edge-2", key))
	request := kr.Sign("bal-1", "edge-1", http.MethodGet, uri, key)
	for _, tt := range []struct {
		name   string
		verify func() error
		want   error
	}{
		{"another key", func() error { _, err := kr.VerifyUpgrade(up, "edge-1", uri, []byte("k2"), now); return err }, ErrPeerBadMAC},
		{"another uri", func() error { _, err := kr.VerifyUpgrade(up, "edge-1", "/ws?resume=1", key, now); return err }, ErrPeerBadMAC},
		{"another edge", func() error { _, err := kr.VerifyUpgrade(up, "edge-2", uri, key, now); return err }, ErrPeerNotOurs},
		{"a skip's as an upgrade's", func() error { _, err := kr.VerifyUpgrade(skip, "edge-1", uri, key, now); return err }, ErrPeerBadMAC},
		{"a request's over the key as an upgrade's", func() error { _, err := kr.VerifyUpgrade(request, "edge-1", uri, key, now); return err }, ErrPeerBadMAC},
		{"an upgrade's as a request's", func() error {
			_, err := kr.VerifyRequest(up, "edge-1", http.MethodGet, uri, key, now)
			return err
		}, ErrPeerBadMAC},
	} {
		if err := tt.verify(); err != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, err, tt.want)
		}
	}
	var none *Keyring
	if v := none.SignUpgrade("bal-1", "edge-1", uri, key); v != "" {
		t.Errorf("keyless SignUpgrade = %q", v)
	}
}

// A forwarded plain request's signature (SignForwarded) covers the edge,
// method and key, and is no upgrade's or request's signature, nor theirs a
// forwarded request's.
func TestForwardedSignatures(t *testing.T) {
	kr, err := loadKeyring(configs.Cluster{SecretKeyFile: keyringFile(t, configs.GenerateKey())})
	if err != nil {
		t.Fatal(err)
	}
	key := []byte("k1")
	now := time.Now()
	fw := kr.SignForwarded("bal-1", "edge-1", http.MethodGet, key)
	if node, err := kr.VerifyForwarded(fw, "edge-1", http.MethodGet, key, now); err != nil || node != "bal-1" {
		t.Fatalf("valid forwarded signature: %q %v", node, err)
	}
	up := kr.SignUpgrade("bal-1", "edge-1", "", key)
	request := kr.Sign("bal-1", "edge-1", http.MethodGet, "", key)
	for _, tt := range []struct {
		name   string
		verify func() error
		want   error
	}{
		{"another key", func() error {
			_, err := kr.VerifyForwarded(fw, "edge-1", http.MethodGet, []byte("k2"), now)
			return err
		}, ErrPeerBadMAC},
		{"another method", func() error { _, err := kr.VerifyForwarded(fw, "edge-1", http.MethodHead, key, now); return err }, ErrPeerBadMAC},
		{"another edge", func() error { _, err := kr.VerifyForwarded(fw, "edge-2", http.MethodGet, key, now); return err }, ErrPeerNotOurs},
		{"an upgrade's as a forwarded request's", func() error { _, err := kr.VerifyForwarded(up, "edge-1", http.MethodGet, key, now); return err }, ErrPeerBadMAC},
		{"a request's as a forwarded request's", func() error { _, err := kr.VerifyForwarded(request, "edge-1", http.MethodGet, key, now); return err }, ErrPeerBadMAC},
		{"a forwarded request's as an upgrade's", func() error { _, err := kr.VerifyUpgrade(fw, "edge-1", "", key, now); return err }, ErrPeerBadMAC},
		{"a forwarded request's as a request's", func() error { _, err := kr.VerifyRequest(fw, "edge-1", http.MethodGet, "", key, now); return err }, ErrPeerBadMAC},
	} {
		if err := tt.verify(); err != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, err, tt.want)
		}
	}
	var none *Keyring
	if v := none.SignForwarded("bal-1", "edge-1", http.MethodGet, key); v != "" {
		t.Errorf("keyless SignForwarded = %q", v)
	}
}

// A member holding the key announces a data URL on the receiving node's
// own host: 127.0.0.1 (within the default allowed networks) made every
// balancer forward clients to its own loopback — its admin port, whose
// tokenless reads trust a loopback Host, its own data port (a loop), any
// local service — and 0.0.0.0 dials the local host too. Such a URL is
// believed only from a member whose gossip address is loopback (a single
// host: the demo); link-local ones (a cloud's metadata service at
// 169.254.169.254) and multicast never, whatever allowed_networks says.
func TestMemberCannotPointAtTheReceiversOwnHost(t *testing.T) {
	wide := configs.Cluster{AllowedNetworks: []string{"0.0.0.0/0", "::/0"}}.AllowedPrefixes()
	local := configs.Cluster{AllowedNetworks: configs.DefaultAllowedNetworks}.AllowedPrefixes()
	for _, tt := range []struct {
		name, addr, url string
		allowed         []netip.Prefix
		trusted         bool
	}{
		{"loopback from another host", "10.0.0.7:7946", "http://127.0.0.1:9000", local, false},
		{"loopback v6 from another host", "10.0.0.7:7946", "http://[::1]:9000", local, false},
		{"unspecified from another host", "10.0.0.7:7946", "http://0.0.0.0:7101", wide, false},
		{"metadata service", "10.0.0.7:7946", "http://169.254.169.254:80", wide, false},
		{"link-local v6", "10.0.0.7:7946", "http://[fe80::1]:7101", wide, false},
		{"multicast", "10.0.0.7:7946", "http://224.0.0.1:7101", wide, false},
		{"loopback on one host (demo)", "127.0.0.1:7946", "http://127.0.0.1:7101", local, true},
		{"its own network", "10.0.0.7:7946", "http://10.0.0.7:7101", local, true},
		{"another address of the cluster", "10.0.0.7:7946", "http://10.0.1.9:7101", local, true},
	} {
		n := Node{Name: "edge-x", Addr: tt.addr, Meta: Meta{Role: RoleEdge, URL: tt.url, Weight: 1, State: StateAlive}}
		distrust, _ := trustMeta(&n, tt.allowed)
		if (distrust == "") != tt.trusted {
			t.Errorf("%s: url %s from %s: distrust %q, want trusted %v", tt.name, tt.url, tt.addr, distrust, tt.trusted)
		}
		// An admin URL so is dropped, the member kept.
		g := Node{Name: "gslb-x", Addr: tt.addr, Meta: Meta{Role: RoleGSLB, Admin: tt.url, State: StateAlive}}
		if distrust, _ := trustMeta(&g, tt.allowed); distrust != "" || (g.Meta.Admin != "") != tt.trusted {
			t.Errorf("%s: admin url %s from %s: kept %q (distrust %q), want kept %v", tt.name, tt.url, tt.addr, g.Meta.Admin, distrust, tt.trusted)
		}
	}
}
