package sessions

import (
	"net/http"

	"github.com/axiomhq/hyperloglog"

	"github.com/ringlb/ringlb/health/operator"
)

// UsersSketch is GET /api/users/sketch: who is online here, in a form a
// balancer merges across edges without counting a user twice (a user with
// a tab on each of two edges is one user of the cluster, and two of
// ringlb_edge_users_online added up).
//
// Token users go into a HyperLogLog sketch (axiomhq/hyperloglog, precision
// 14): mergeable, at most ~16 KiB whatever the number of users (exact sets
// of user ids would grow with them, and the ids, from tokens, are not to be
// handed around), sparse and so exact in practice for the few thousand
// users an edge holds, ±0.8% beyond. A participant without a token is a
// user of its own that no other edge can have: those are counted, not
// sketched.
type UsersSketch struct {
	Node string `json:"node"`
	// Sketch is the sketch's binary form (MarshalBinary), base64 in JSON.
	Sketch []byte `json:"sketch"`
	// Anonymous counts participants without a token.
	Anonymous int64 `json:"anonymous"`
}

// usersSketch sketches the token users online now.
func (s *Server) usersSketch() (UsersSketch, error) {
	sk := hyperloglog.New14()
	h := s.hub
	h.usersMu.Lock()
	for user := range h.users {
		sk.Insert([]byte(user))
	}
	h.usersMu.Unlock()
	raw, err := sk.MarshalBinary()
	if err != nil {
		return UsersSketch{}, err
	}
	return UsersSketch{Node: s.name, Sketch: raw, Anonymous: h.anonymous.Load()}, nil
}

func (s *Server) serveUsersSketch(w http.ResponseWriter, _ *http.Request) {
	sk, err := s.usersSketch()
	if err != nil {
		operator.WriteJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		return
	}
	operator.WriteJSON(w, http.StatusOK, sk)
}
