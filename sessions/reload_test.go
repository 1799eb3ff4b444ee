package sessions

import (
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health/healthtest"
)

// resumeFrom joins key resuming after seq and reports the reset reason
// ("" when the history still reaches it).
func resumeFrom(t *testing.T, e *testEdge, key, epoch string, after int) string {
	t.Helper()
	c := e.joinV1(t, key, "resume="+strconv.Itoa(after)+"&epoch="+epoch, nil)
	defer c.Close()
	c.msg(t, "marker")
	for {
		m := c.read(t)
		switch m.Type {
		case "reset":
			return m.Reason
		case "ack":
			return ""
		}
	}
}

// A reload changes the history bounds of new sessions and of live ones
// (trimmed at their next message), without touching a connection.
func TestReloadHistoryBoundsLive(t *testing.T) {
	cfg := provisioned(configs.Edge{History: configs.History{Messages: 100, Bytes: 1 << 20}})
	e := startEdge(t, cfg, nil)
	a := e.joinV1(t, "h", "", nil)
	for i := range 10 {
		a.msg(t, i)
		a.readType(t, "ack")
	}
	epoch := a.welcome.Epoch
	if r := resumeFrom(t, e, "h", epoch, 2); r != "" {
		t.Fatalf("resume from 2 under 100 messages: reset %q", r)
	}
	next := cfg
	next.History.Messages = 3
	if err := e.s.Reload(next); err != nil {
		t.Fatal(err)
	}
	// The live session keeps its connection and trims at its next message.
	a.msg(t, "after the reload")
	for a.read(t).Type != "ack" { // the markers of the resumes came first
	}
	if r := resumeFrom(t, e, "h", epoch, 5); r != "history" {
		t.Fatalf("resume from 5 under 3 messages: reset %q, want history", r)
	}
	if r := resumeFrom(t, e, "h", epoch, 11); r != "" {
		t.Fatalf("resume from 11: reset %q", r)
	}
	// A new session starts with the new bound.
	b := e.joinV1(t, "new", "", nil)
	for i := range 6 {
		b.msg(t, i)
		b.readType(t, "ack")
	}
	if r := resumeFrom(t, e, "new", b.welcome.Epoch, 1); r != "history" {
		t.Fatalf("a new session kept more than 3: reset %q", r)
	}
}

// A new join-token secret: tokens of the old one keep working for
// edge.auth.rotation_overlap, then (or at once with 0s, for a leaked
// secret) they are refused; the new secret's tokens work throughout.
func TestReloadRotatesTokenSecret(t *testing.T) {
	path, oldSecret := writeSecret(t)
	cfg := provisioned(configs.Edge{Auth: configs.EdgeAuth{HMACSecretFile: path, Anonymous: configs.AnonymousDeny}})
	e := startEdge(t, cfg, nil)
	status := func(secret []byte) int {
		t.Helper()
		c, resp, err := e.dialV1(t, "doc", "token="+mint(t, secret, "doc", "u", RoleEditor, time.Hour), nil)
		if err == nil {
			c.Close()
			e.waitJoined(t)
			return resp.StatusCode
		}
		if resp == nil {
			t.Fatal(err)
		}
		return resp.StatusCode
	}
	if got := status(oldSecret); got != http.StatusSwitchingProtocols {
		t.Fatalf("old secret before the rotation: %d", got)
	}
	newSecret := []byte("fedcba9876543210fedcba9876543210")
	newPath := filepath.Join(t.TempDir(), "hmac-2.key")
	if err := os.WriteFile(newPath, newSecret, 0o600); err != nil {
		t.Fatal(err)
	}
	next := cfg
	next.Auth.HMACSecretFile = newPath
	if err := e.s.Reload(next); err != nil {
		t.Fatal(err)
	}
	if old, fresh := status(oldSecret), status(newSecret); old != 101 || fresh != 101 {
		t.Fatalf("during the overlap: old secret %d, new %d; want both 101", old, fresh)
	}
	// A second reload with the same secret keeps the overlap...
	if err := e.s.Reload(next); err != nil {
		t.Fatal(err)
	}
	if got := status(oldSecret); got != 101 {
		t.Fatalf("old secret after a second reload: %d", got)
	}
	// ...and 0s ends it at once.
	zero := configs.Duration(0)
	next.Auth.RotationOverlap = &zero
	if err := e.s.Reload(next); err != nil {
		t.Fatal(err)
	}
	if old, fresh := status(oldSecret), status(newSecret); old != http.StatusUnauthorized || fresh != 101 {
		t.Fatalf("after the overlap: old secret %d, new %d; want 401 and 101", old, fresh)
	}
}

// Fields read only at start are named, every one, and nothing changes:
// not even the fields that could.
func TestReloadRestartOnlyFields(t *testing.T) {
	tokenA := filepath.Join(t.TempDir(), "a.token")
	tokenB := filepath.Join(t.TempDir(), "b.token")
	os.WriteFile(tokenA, []byte("token-a-0123456789abcdef"), 0o600)
	os.WriteFile(tokenB, []byte("token-b-0123456789abcdef"), 0o600)
	cfg := provisioned(configs.Edge{Admin: configs.Admin{Listen: "127.0.0.1:9101", TokenFile: tokenA}})
	e := startEdge(t, cfg, nil)
	next := cfg
	next.MaxParticipants = 8
	next.Listen = ":7999"
	next.Admin.TokenFile = tokenB
	err := e.s.Reload(provisioned(next))
	if !errors.Is(err, configs.ErrNeedsRestart) {
		t.Fatalf("reload: %v, want a restart-needed error", err)
	}
	if got := configs.RestartFields(err); strings.Join(got, ",") != "edge.listen,edge.max_participants" {
		t.Errorf("restart fields %v", got)
	}
	if got := string(*e.s.adminToken.Load()); got != "token-a-0123456789abcdef" {
		t.Errorf("the admin token changed on a refused reload")
	}
	// The same change without the restart-only fields: the token is swapped.
	next = cfg
	next.Admin.TokenFile = tokenB
	if err := e.s.Reload(next); err != nil {
		t.Fatal(err)
	}
	if got := string(*e.s.adminToken.Load()); got != "token-b-0123456789abcdef" {
		t.Errorf("admin token after reload: %q", got)
	}
	// An unreadable secret file refuses the reload, naming the field.
	next.Auth.HMACSecretFile = "/does/not/exist"
	next.Auth.Anonymous = configs.AnonymousViewer
	if err := e.s.Reload(next); err == nil || !strings.Contains(err.Error(), "edge.auth.hmac_secret_file") {
		t.Errorf("reload with an unreadable secret: %v", err)
	}
	if e.s.auth.Load().configured {
		t.Error("auth changed on a refused reload")
	}
}

// A reload's history bounds reach the copies an edge keeps as a replica:
// the copies made after it (a snapshot reads the edge's bounds as they are
// then) and those held already, so a promoted copy keeps what its owner
// kept. Before, a replica's copies kept the bounds its edge started with:
// history.messages raised from 5 to 100 on both edges, 20 acknowledged
// msgs were 20 on the owner and 5 on the replica, and a client resuming
// from seq 2 after the owner's crash got reset "history".
func TestReloadedHistoryBoundsReachReplicaCopies(t *testing.T) {
	parallel(t)
	cfg := provisioned(configs.Edge{IdleGrace: configs.Duration(time.Minute), Replication: configs.ReplicationSync, History: configs.History{Messages: 5, Bytes: 1 << 20}})
	cl := healthtest.New(t)
	a := startReplEdgeWith(t, cl, "edge-a", cfg, nil)
	b := startReplEdgeWith(t, cl, "edge-b", cfg, nil)
	waitRing(t, []*clusterEdge{a, b}, "edge-a", "edge-b")
	before := keyOwnedBy("reload-held", "edge-a", "edge-a", "edge-b") // its copy made before the reload
	after := keyOwnedBy("reload-new", "edge-a", "edge-a", "edge-b")   // and after it
	p := a.joinV1(t, before, "", nil)
	for i := range 3 {
		p.msg(t, i)
		p.readType(t, "ack")
	}
	waitCopy(t, b, before, 3)

	next := cfg
	next.History.Messages = 100
	for _, e := range []*clusterEdge{a, b} {
		if err := e.s.Reload(next); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 17 {
		p.msg(t, i)
		p.readType(t, "ack")
	}
	q := a.joinV1(t, after, "", nil)
	for i := range 20 {
		q.msg(t, i)
		q.readType(t, "ack")
	}
	epochs := map[string]string{before: p.welcome.Epoch, after: q.welcome.Epoch}
	for key := range epochs {
		t.Logf("%s: the replica's copy holds %d of 20 acknowledged msgs", key, copyHistoryLen(b, key))
	}
	p.Close()
	q.Close()
	a.crash(t)
	waitRing(t, []*clusterEdge{b}, "edge-b")
	for key, epoch := range epochs {
		healthtest.WaitUntil(t, "edge-b promoted "+key, func() bool {
			live, _ := b.s.hub.lookup([]byte(key), "edge-b", goneEdges{})
			return live
		})
		if r := resumeFrom(t, b.testEdge, key, epoch, 2); r != "" {
			t.Errorf("%s: resume from seq 2 on the replica after the owner's crash: reset %q", key, r)
		}
	}
}

// A lower bound reaches the copies too, trimmed as a live session's
// history is: at its next msg.
func TestReloadLowersReplicaCopiesBounds(t *testing.T) {
	a, b, key := replPair(t, configs.ReplicationSync, "reload-lower")
	p := a.joinV1(t, key, "", nil)
	for i := range 20 {
		p.msg(t, i)
		p.readType(t, "ack")
	}
	waitCopy(t, b, key, 20)
	next := provisioned(configs.Edge{IdleGrace: configs.Duration(time.Minute), Replication: configs.ReplicationSync}) // replPair's
	next.History.Messages = 5
	for _, e := range []*clusterEdge{a, b} {
		if err := e.s.Reload(next); err != nil {
			t.Fatal(err)
		}
	}
	p.msg(t, "after the reload")
	p.readType(t, "ack")
	waitCopy(t, b, key, 21)
	if n := copyHistoryLen(b, key); n != 5 {
		t.Errorf("the replica's copy holds %d msgs after a msg under history.messages 5", n)
	}
}

// copyHistoryLen returns how many seqs e's copy of key holds (-1: no copy).
func copyHistoryLen(e *clusterEdge, key string) int {
	st := e.s.hub.repl.Load().store
	st.mu.Lock()
	defer st.mu.Unlock()
	if c := st.copies[key]; c != nil {
		return c.v.n
	}
	return -1
}
