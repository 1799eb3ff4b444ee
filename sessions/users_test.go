package sessions

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/axiomhq/hyperloglog"

	"github.com/ringlb/ringlb/configs"
)

// GET /api/users/sketch: the token users online (a user with two tabs
// once) in a sketch, the token-less participants counted.
func TestUsersSketch(t *testing.T) {
	path, secret := writeSecret(t)
	e := startEdge(t, configs.Edge{Auth: configs.EdgeAuth{HMACSecretFile: path}}, nil)
	e.joinV1(t, "a", "token="+mint(t, secret, "a", "alice", RoleEditor, time.Hour), nil)
	e.joinV1(t, "b", "token="+mint(t, secret, "b", "alice", RoleEditor, time.Hour), nil)
	e.joinV1(t, "b", "token="+mint(t, secret, "b", "bob", RoleEditor, time.Hour), nil)
	e.joinV1(t, "b", "", nil) // anonymous: a viewer
	resp, body := e.get(t, e.admin, "/api/users/sketch")
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	var got UsersSketch
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatal(err)
	}
	sk := hyperloglog.New14()
	if err := sk.UnmarshalBinary(got.Sketch); err != nil {
		t.Fatal(err)
	}
	if got.Node != "edge-t" || sk.Estimate() != 2 || got.Anonymous != 1 {
		t.Errorf("sketch of %s: %d token users, %d anonymous; want 2 and 1", got.Node, sk.Estimate(), got.Anonymous)
	}
	if users := metricValue(t, e.s, "ringlb_edge_users_online"); users != 3 {
		t.Errorf("ringlb_edge_users_online %g, want 3", users)
	}
}
