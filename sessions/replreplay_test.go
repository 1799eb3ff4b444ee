package sessions

import (
	"crypto/ecdh"
	"crypto/rand"
	"encoding/base64"
	"net/http"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/ringlb/ringlb/configs"
)

// replayUpgrade opens a replication stream to to's data port as edge from,
// with a signature from's keyring made for it (what an eavesdropper on
// the edges' network sees and sends again within health.PeerWindow: the
// signature covers the request line, so the stream's public key is the
// one recorded, whose private half the replayer lacks). It returns the
// stream (nil when refused) and the status.
func replayUpgrade(t *testing.T, from, to *clusterEdge, fromName, toName, uri string, h http.Header) (*websocket.Conn, int) {
	t.Helper()
	if h == nil {
		h = http.Header{}
		from.m.Keyring().SignRequest(h, fromName, toName, http.MethodGet, uri, nil)
	}
	return dialStream(t, to.data, uri, h)
}

// dialStream sends a replication upgrade with head h to the edge whose
// data port is addr. It returns the stream (nil when refused) and the
// status.
func dialStream(t *testing.T, addr, uri string, h http.Header) (*websocket.Conn, int) {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: testDeadline}
	c, resp, err := d.Dial("ws://"+addr+uri, h)
	if err != nil {
		if resp == nil {
			t.Fatal(err)
		}
		return nil, resp.StatusCode
	}
	t.Cleanup(func() { c.Close() })
	return c, http.StatusSwitchingProtocols
}

// recordedUpgradeURI is the request line of an upgrade of edge from
// carrying a fresh X25519 public key.
func recordedUpgradeURI(t *testing.T, from string) string {
	t.Helper()
	priv, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return pathReplicate + "?from=" + from + "&key=" + base64.RawURLEncoding.EncodeToString(priv.PublicKey().Bytes())
}

// A replica drops the copies an owner did not send again within a minute
// of the owner's stream beginning anew (sweepCopies): the owner sends
// every session whole on each new stream, so a copy it did not send is
// one it ended meanwhile. The replica took a stream as begun at its hello
// — before the owner had shown it holds the stream's key. So one upgrade
// the owner signed, sent again by anyone who saw it on the wire, made the
// replica take the owner's live, healthy stream for ended: a minute later
// every copy of that owner was dropped (the owner, whose real stream never
// broke, sent nothing again), and a crash of the owner then cost its
// sessions everything acknowledged: their clients got a reset. Now a
// stream begins only with the owner's first batch that verifies under the
// stream's key.
func TestReplayedUpgradeDropsNoCopies(t *testing.T) {
	a, b, key := replPair(t, configs.ReplicationSync, "replay-sweep")
	p1, _ := a.twoTalking(t, key, 5)
	epoch := p1.welcome.Epoch
	if seq, _, _, ok := copyOf(b, key); !ok || seq != 5 {
		t.Fatalf("replica copy seq %d (%v), want 5", seq, ok)
	}

	// The replayed upgrade: edge-b answers it with its hello, and no batch
	// ever comes (the replayer cannot MAC one).
	c, code := replayUpgrade(t, a, b, "edge-a", "edge-b", recordedUpgradeURI(t, "edge-a"), nil)
	if code == http.StatusSwitchingProtocols {
		_ = c.SetReadDeadline(time.Now().Add(testDeadline))
		if _, _, err := c.ReadMessage(); err != nil {
			t.Fatalf("hello: %v", err)
		}
	}
	// A minute on, the sweep (every settleWindow) finds the copy.
	b.s.hub.repl.Load().sweepCopies(time.Now().Add(staleCopyAge + settleWindow))
	_, _, _, kept := copyOf(b, key)
	t.Logf("replayed upgrade answered %d; copy kept a minute later: %v", code, kept)
	if !kept {
		t.Error("the replica dropped the copy of a live owner's session after a replayed upgrade")
	}

	a.crash(t)
	waitRing(t, []*clusterEdge{b}, "edge-b")
	r := b.joinV1(t, key, "resume=5&epoch="+epoch, nil)
	if r.welcome.Epoch != epoch || r.welcome.Seq != 5 {
		t.Fatalf("after the owner's crash: welcome epoch %q seq %d, want %q 5 (acknowledged msgs lost)", r.welcome.Epoch, r.welcome.Seq, epoch)
	}
}

// A signed upgrade opens one stream. It took any number: each copy of one
// upgrade seen on the wire, sent within health.PeerWindow, was answered
// with a hello, a goroutine and a connection of max_connections held until
// streamIdle (90 s) without a batch. Now the replica remembers the
// signatures that opened a stream until they expire, and a copy is
// refused (403) before its upgrade.
func TestReplayedUpgradeOpensOneStream(t *testing.T) {
	a, b, _ := replPair(t, configs.ReplicationSync, "replay-streams")
	uri := recordedUpgradeURI(t, "edge-a")
	h := http.Header{}
	a.m.Keyring().SignRequest(h, "edge-a", "edge-b", http.MethodGet, uri, nil)
	refusedBefore := metricValue(t, b.s, "ringlb_edge_peer_requests_refused_total")
	const copies = 20
	opened := 0
	for range copies {
		if c, code := replayUpgrade(t, a, b, "edge-a", "edge-b", uri, h.Clone()); code == http.StatusSwitchingProtocols {
			_ = c.SetReadDeadline(time.Now().Add(testDeadline))
			if _, _, err := c.ReadMessage(); err == nil {
				opened++
			}
		}
	}
	r := b.s.hub.repl.Load()
	r.mu.Lock()
	held := len(r.inbound)
	r.mu.Unlock()
	t.Logf("%d copies of one signed upgrade: %d streams opened (hello read), %d inbound streams held", copies, opened, held)
	if opened != 1 {
		t.Errorf("one signed upgrade opened %d streams, want 1", opened)
	}
	if v := metricValue(t, b.s, "ringlb_edge_peer_requests_refused_total") - refusedBefore; v != copies-1 {
		t.Errorf("refused %v, want %d", v, copies-1)
	}
	// edge-a's own streams are untouched: its sessions still replicate.
	key := keyOwnedBy("replay-streams-after", "edge-a", "edge-a", "edge-b")
	a.twoTalking(t, key, 1)
	waitCopy(t, b, key, 1)
}
