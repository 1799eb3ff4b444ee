package sessions

import (
	"net/http"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health/healthtest"
)

// TestTokenHolderTakesAViewersSeat is the attack of a viewer link passed
// around: with anonymous: viewer, anyone who has the session's key joins
// it, and max_participants such joins refused every editor after them
// ("session is full") for as long as they stayed. Now a token holder who
// finds the session full takes its newest anonymous viewer's seat (closed
// 1008); token holders are never unseated, nor are anonymous editors.
func TestTokenHolderTakesAViewersSeat(t *testing.T) {
	path, secret := writeSecret(t)
	e := startEdge(t, configs.Edge{MaxParticipants: 4, Auth: configs.EdgeAuth{HMACSecretFile: path, Anonymous: configs.AnonymousViewer}}, nil)
	viewers := make([]*v1Client, 4)
	for i := range viewers {
		viewers[i] = e.joinV1(t, "doc", "", nil)
	}
	c, resp, err := e.dialV1(t, "doc", "token="+mint(t, secret, "doc", "ann", RoleEditor, time.Hour), nil)
	if err != nil {
		t.Fatalf("editor's upgrade: %v %v", resp, err)
	}
	ann := &v1Client{Conn: c}
	if ann.welcome = ann.read(t); ann.welcome.Type != "welcome" {
		code, reason, _ := closeWith(c)
		t.Fatalf("editor joining a session four anonymous viewers filled: %+v, close %d %q; want welcome", ann.welcome, code, reason)
	}
	newest := viewers[3]
	code, reason, _ := closeWith(newest.Conn)
	t.Logf("the newest anonymous viewer: close %d %q", code, reason)
	if code != websocket.ClosePolicyViolation || reason != unseatedFull {
		t.Fatalf("the newest anonymous viewer: close %d %q, want 1008 %q", code, reason, unseatedFull)
	}
	if len(ann.welcome.Participants) != 4 {
		t.Fatalf("welcome lists %d participants, want the three viewers left and ann", len(ann.welcome.Participants))
	}
	ann.msg(t, "the editor is in")
	ann.readType(t, "ack")
	// Each viewer left ends seeing the three and ann (the unseated
	// viewer's join and leave may have been paced away: presence.go), and
	// gets ann's msg.
	want := []string{ann.welcome.Participant}
	for _, v := range viewers[:3] {
		want = append(want, v.welcome.Participant)
	}
	for _, v := range viewers[:3] {
		view := v.presence()
		var msg *env
		for msg == nil || !view.is(want) {
			m := v.read(t)
			if m.Type == "msg" {
				msg = &m
			}
			view.apply(m)
		}
		if string(msg.Data) != `"the editor is in"` {
			t.Fatalf("a viewer got %+v", msg)
		}
	}
	// Three more token holders take the three seats left to viewers; the
	// fourth finds only token holders and is refused.
	for _, user := range []string{"bob", "carol", "dave"} {
		e.joinV1(t, "doc", "token="+mint(t, secret, "doc", user, RoleViewer, time.Hour), nil)
	}
	c, _, err = e.dialV1(t, "doc", "token="+mint(t, secret, "doc", "erin", RoleEditor, time.Hour), nil)
	if err != nil {
		t.Fatal(err)
	}
	if code, reason, _ := closeWith(c); code != websocket.ClosePolicyViolation || reason != "session is full" {
		t.Fatalf("a token holder joining a session of token holders at max_participants: close %d %q, want 1008 \"session is full\"", code, reason)
	}
	if v := metricValue(t, e.s, "ringlb_edge_unseated_viewers_total"); v != 4 {
		t.Errorf("ringlb_edge_unseated_viewers_total = %v, want 4", v)
	}

	// Anonymous editors are never unseated.
	ed := startEdge(t, configs.Edge{MaxParticipants: 2, Auth: configs.EdgeAuth{HMACSecretFile: path, Anonymous: configs.AnonymousEditor}}, nil)
	ed.joinV1(t, "doc", "", nil)
	ed.joinV1(t, "doc", "", nil)
	c, _, err = ed.dialV1(t, "doc", "token="+mint(t, secret, "doc", "ann", RoleEditor, time.Hour), nil)
	if err != nil {
		t.Fatal(err)
	}
	if code, reason, _ := closeWith(c); code != websocket.ClosePolicyViolation || reason != "session is full" {
		t.Fatalf("a token holder joining a session anonymous editors filled: close %d %q, want 1008 \"session is full\"", code, reason)
	}
}

// TestTokenHolderBeginsASessionViewersHeldInTheOtherMode is the attack of
// a viewer link in the other mode: a session's first participant sets its
// mode, so one anonymous viewer joining raw first had every ringlb.v1
// editor refused 1008 (and one joining ringlb.v1 and leaving held the
// session idle in that mode for idle_grace against raw editors). Now a
// token holder who finds such a session — only anonymous viewers ever in
// it — ends it and begins it anew in its own mode; a session an editor
// has joined keeps its mode.
func TestTokenHolderBeginsASessionViewersHeldInTheOtherMode(t *testing.T) {
	path, secret := writeSecret(t)
	e := startEdge(t, configs.Edge{Auth: configs.EdgeAuth{HMACSecretFile: path, Anonymous: configs.AnonymousViewer}}, nil)
	rawJoin := func(key, token string) *websocket.Conn {
		t.Helper()
		h := http.Header{}
		h.Set("ctstickiness", key)
		if token != "" {
			h.Set("Authorization", "Bearer "+token)
		}
		c, _ := e.dialHeader(t, h, nil)
		return c
	}

	// A raw squatter against a ringlb.v1 editor.
	squatter := rawJoin("doc", "")
	e.waitJoined(t)
	c, _, err := e.dialV1(t, "doc", "token="+mint(t, secret, "doc", "ann", RoleEditor, time.Hour), nil)
	if err != nil {
		t.Fatal(err)
	}
	ann := &v1Client{Conn: c}
	if ann.welcome = ann.read(t); ann.welcome.Type != "welcome" {
		code, reason, _ := closeWith(c)
		t.Fatalf("v1 editor after a raw anonymous viewer: %+v, close %d %q; want welcome", ann.welcome, code, reason)
	}
	if code, reason, _ := closeWith(squatter); code != websocket.ClosePolicyViolation || reason != unseatedMode {
		t.Fatalf("the raw squatter: close %d %q, want 1008 %q", code, reason, unseatedMode)
	}
	ann.msg(t, "v1 now")
	ann.readType(t, "ack")
	// The session is the editor's now: another raw viewer is refused.
	if code, reason, _ := closeWith(rawJoin("doc", "")); code != websocket.ClosePolicyViolation || reason != errSessionV1.Error() {
		t.Fatalf("a raw viewer after the editor: close %d %q, want 1008 %q", code, reason, errSessionV1)
	}

	// A ringlb.v1 session only a viewer was in, against a raw editor: it
	// sequenced nothing, so it is gone with the viewer.
	idle := e.joinV1(t, "pad", "", nil)
	idle.Close()
	healthtest.WaitUntil(t, "the viewer's session gone", func() bool { return !e.s.hub.has([]byte("pad")) })
	editor := rawJoin("pad", mint(t, secret, "pad", "bob", RoleEditor, time.Hour))
	e.waitJoined(t)
	viewer := rawJoin("pad", mint(t, secret, "pad", "carol", RoleViewer, time.Hour))
	e.waitJoined(t)
	if err := editor.WriteMessage(websocket.TextMessage, []byte("raw now")); err != nil {
		t.Fatal(err)
	}
	if _, b, err := viewer.ReadMessage(); err != nil || string(b) != "raw now" {
		t.Fatalf("raw session begun by the editor: %q %v", b, err)
	}

	// A ringlb.v1 session an editor was in keeps its mode, idle or not.
	ed := e.joinV1(t, "kept", "token="+mint(t, secret, "kept", "dave", RoleEditor, time.Hour), nil)
	ed.msg(t, "history")
	ed.readType(t, "ack")
	ed.Close()
	healthtest.WaitUntil(t, "the editor's session idle", func() bool { return idleHeld(e) == 1 })
	if code, reason, _ := closeWith(rawJoin("kept", mint(t, secret, "kept", "erin", RoleEditor, time.Hour))); code != websocket.ClosePolicyViolation || reason != errSessionV1.Error() {
		t.Fatalf("a raw editor joining a v1 session an editor was in: close %d %q, want 1008 %q", code, reason, errSessionV1)
	}
	if back := e.joinV1(t, "kept", "token="+mint(t, secret, "kept", "dave", RoleEditor, time.Hour), nil); back.welcome.Epoch != ed.welcome.Epoch || back.welcome.Seq != 1 {
		t.Fatalf("the kept session: welcome %+v, want epoch %s at seq 1", back.welcome, ed.welcome.Epoch)
	}
}
