package sessions

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health"
	"github.com/ringlb/ringlb/health/healthtest"
)

// Edge-to-edge requests are believed only when signed with the cluster's
// key by the edge they name. The attack: a process on the same host as
// edge-b (so, to the old source-address check, edge-b itself) claims a
// session, and installs a forged history by hand-off that a client then
// resumes into.
func TestPeerRequestsFromStrangersRefused(t *testing.T) {
	cl := healthtest.New(t)
	a := startClusterEdge(t, cl, "edge-a")
	b := startClusterEdge(t, cl, "edge-b")
	waitRing(t, []*clusterEdge{a, b}, "edge-a", "edge-b")
	// Another cluster's member: a key of its own.
	stranger := healthtest.New(t).Join("mallory", health.Meta{Role: health.RoleEdge, URL: "http://127.0.0.1:1", Weight: 1, State: health.StateAlive})
	// post sends a request signed by as for the edge to ("": edge-a, where
	// it goes).
	post := func(path, body string, h map[string]string, signer *health.Keyring, as, to string) int {
		req, _ := http.NewRequest(http.MethodPost, "http://"+a.data+path, strings.NewReader(body))
		for k, v := range h {
			req.Header.Set(k, v)
		}
		if to == "" {
			to = "edge-a"
		}
		signer.SignRequest(req.Header, as, to, http.MethodPost, path, []byte(body))
		if path == pathHandoff {
			// Its head signed by edge-b for edge-a, so that what is
			// refused is the body's signature, checked once the body has
			// come (a head's: TestHandoffHeadOfAStrangerGetsNoSlot).
			req.Header.Set(configs.HeaderPeerHead, b.m.Keyring().SignHead("edge-b", "edge-a", http.MethodPost, path, len(body)))
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	forged := `{"from":"edge-b","sessions":[{"key":"k","epoch":"e","seq":1,"history":[{"type":"msg","seq":1,"data":"forged"}]}]}`
	for _, tt := range []struct {
		name, path, body string
		h                map[string]string
		signer           *health.Keyring
		as, to           string
	}{
		{"unsigned claim as edge-b", pathClaim, "k", map[string]string{headerClaimBy: "edge-b"}, nil, "", ""},
		{"unsigned hand-off as edge-b", pathHandoff, forged, nil, nil, "", ""},
		{"hand-off signed with another cluster's key", pathHandoff, forged, nil, stranger.Keyring(), "edge-b", ""},
		{"claim by a stranger", pathClaim, "k", map[string]string{headerClaimBy: "mallory"}, stranger.Keyring(), "mallory", ""},
		{"claim signed by edge-b for another edge", pathClaim, "k", map[string]string{headerClaimBy: "edge-a"}, b.m.Keyring(), "edge-b", ""},
		{"edge-b's hand-off to edge-c, replayed to edge-a", pathHandoff, forged, nil, b.m.Keyring(), "edge-b", "edge-c"},
	} {
		if code := post(tt.path, tt.body, tt.h, tt.signer, tt.as, tt.to); code != http.StatusForbidden {
			t.Errorf("%s: %d, want 403", tt.name, code)
		}
	}
	if live, _ := a.s.hub.lookup([]byte("k"), "edge-a", goneEdges{}); live {
		t.Fatal("a forged hand-off installed a session")
	}
	if got := metricValue(t, a.s, "ringlb_edge_peer_requests_refused_total"); got != 6 {
		t.Errorf("ringlb_edge_peer_requests_refused_total = %v, want 6", got)
	}
	// Signed by edge-b with the cluster's key: what a real claim is.
	if code := post(pathClaim, "k", map[string]string{headerClaimBy: "edge-b"}, b.m.Keyring(), "edge-b", ""); code != http.StatusOK {
		t.Errorf("claim signed by edge-b: %d, want 200", code)
	}
}

// A claim's list of edges its claimer took for dead (argClaimGone) is
// part of what the claimer signs: with it the asked edge disregards a
// claim those edges made; added on the path to a claim signed without
// it, the claim is refused.
func TestClaimGoneListSigned(t *testing.T) {
	parallel(t)
	cl := healthtest.New(t)
	a := startClusterEdge(t, cl, "edge-a")
	b := startClusterEdge(t, cl, "edge-b")
	c := startClusterEdge(t, cl, "edge-c")
	waitRing(t, []*clusterEdge{a, b, c}, "edge-a", "edge-b", "edge-c")
	claim := func(by *clusterEdge, signedPath, sentPath string) (int, string) {
		req, _ := http.NewRequest(http.MethodPost, "http://"+a.data+sentPath, strings.NewReader("k"))
		req.Header.Set(headerClaimBy, by.s.name)
		by.m.Keyring().SignRequest(req.Header, by.s.name, "edge-a", http.MethodPost, signedPath, []byte("k"))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		return resp.StatusCode, resp.Header.Get(headerOwner)
	}
	if code, _ := claim(b, pathClaim, pathClaim); code != http.StatusOK {
		t.Fatalf("edge-b's claim: %d, want 200", code)
	}
	if code, owner := claim(c, pathClaim, pathClaim); code != http.StatusConflict || owner != "edge-b" {
		t.Fatalf("edge-c's claim: %d naming %q, want 409 naming edge-b", code, owner)
	}
	gone := pathClaim + "?" + argClaimGone + "=edge-b"
	if code, _ := claim(c, pathClaim, gone); code != http.StatusForbidden {
		t.Fatalf("edge-c's claim with a gone list added on the path: %d, want 403", code)
	}
	if code, _ := claim(c, gone, gone); code != http.StatusOK {
		t.Fatalf("edge-c's claim naming edge-b gone: %d, want 200", code)
	}
	if _, owner := a.s.hub.lookup([]byte("k"), "edge-a", goneEdges{}); owner != "edge-c" {
		t.Fatalf("edge-a sends k to %q, want edge-c", owner)
	}
}

// A draining edge's claim naming the edge it handed the key to
// (argHanded) records that edge's claim, heard of there or not, as a
// claim's gone list is part of what its claimer signs: added on the path,
// it is refused. It may name neither its claimer nor the asked edge, nor
// anything that is no node name, nor an address outside the cluster's
// networks; and it yields to a session live there.
func TestHandedClaimSigned(t *testing.T) {
	cl := healthtest.New(t)
	a := startClusterEdge(t, cl, "edge-a")
	b := startClusterEdge(t, cl, "edge-b")
	waitRing(t, []*clusterEdge{a, b}, "edge-a", "edge-b")
	var ownerAt string // the last answer's X-Ringlb-Owner-URL
	claim := func(key, signedPath, sentPath string) (int, string) {
		req, _ := http.NewRequest(http.MethodPost, "http://"+a.data+sentPath, strings.NewReader(key))
		req.Header.Set(headerClaimBy, "edge-b")
		b.m.Keyring().SignRequest(req.Header, "edge-b", "edge-a", http.MethodPost, signedPath, []byte(key))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		ownerAt = resp.Header.Get(headerOwnerAt)
		return resp.StatusCode, resp.Header.Get(headerOwner)
	}
	const zAt = "http://127.0.0.1:1"
	handedAt := func(to, at string) string {
		return pathClaim + "?" + url.Values{argHanded: {to}, argHandedAt: {at}}.Encode()
	}
	handed := func(to string) string { return handedAt(to, zAt) }
	if code, _ := claim("k", pathClaim, handed("edge-z")); code != http.StatusForbidden {
		t.Fatalf("a hand-over named on the path to a claim signed without it: %d, want 403", code)
	}
	for _, to := range []string{"edge-b", "edge-a", "edge z", strings.Repeat("e", 65)} {
		if code, _ := claim("k", handed(to), handed(to)); code != http.StatusBadRequest {
			t.Errorf("a claim handing k to %q: %d, want 400", to, code)
		}
	}
	// Only an address an edge of this cluster could announce: http(s), an
	// IP address within its allowed networks, a port.
	for _, at := range []string{"file:///etc/passwd", "127.0.0.1:1", "http://", "http://edge-z.example:80", "http://127.0.0.1", "http://198.51.100.7:80"} {
		if code, _ := claim("k", handedAt("edge-z", at), handedAt("edge-z", at)); code != http.StatusBadRequest {
			t.Errorf("a claim handing k to edge-z at %.40q: %d, want 400", at, code)
		}
	}
	// edge-z has not joined as far as edge-a knows: it did a moment ago.
	if code, _ := claim("k", handed("edge-z"), handed("edge-z")); code != http.StatusOK {
		t.Fatalf("edge-b's claim handing k to edge-z: %d, want 200", code)
	}
	if _, owner := a.s.hub.lookup([]byte("k"), "edge-a", a.s.hub.owner.Load().goneEdges(nil)); owner != "edge-z" {
		t.Fatalf("edge-a sends k to %q, want edge-z, which edge-b handed it to", owner)
	}
	if _, owner := a.s.hub.lookup([]byte("k"), "edge-a", goneEdges{skip: []string{"edge-z"}}); owner != "" {
		t.Fatalf("edge-a sends k to %q past a balancer's skip of edge-z, want nowhere", owner)
	}
	// Another claim of k is told edge-z holds it, and where edge-z is,
	// which edge-a has from the drain alone.
	if code, owner := claim("k", pathClaim, pathClaim); code != http.StatusConflict || owner != "edge-z" || ownerAt != zAt {
		t.Fatalf("a claim of k: %d naming %q at %q, want 409 naming edge-z at %s", code, owner, ownerAt, zAt)
	}
	a.s.hub.install(handoffSession{Key: "live", Epoch: "e", Seq: 0}, "", goneEdges{})
	if code, owner := claim("live", handed("edge-z"), handed("edge-z")); code != http.StatusConflict || owner != "edge-a" {
		t.Fatalf("a hand-over of a key live on edge-a: %d naming %q, want 409 naming edge-a", code, owner)
	}
}
