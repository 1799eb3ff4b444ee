package balancer

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/axiomhq/hyperloglog"

	"github.com/ringlb/ringlb/configs"
)

// clusterUsers is the cluster's "users online" on GET /api/cluster: every
// edge's sketch of its token users (GET /api/users/sketch, read as a peer)
// merged, so a user online on two edges counts once, plus the token-less
// participants, each a user of its own. Edges that did not answer are
// left out and counted in missing.
type clusterUsers struct {
	Online  uint64 `json:"online"`
	Edges   int    `json:"edges"`
	Missing int    `json:"missing,omitempty"`
}

// edgeUsers is one edge's answer (sessions.UsersSketch).
type edgeUsers struct {
	Sketch    []byte `json:"sketch"`
	Anonymous int64  `json:"anonymous"`
}

// fetchUsersSketch reads the edge node's users sketch; nil when it did not answer.
func (b *Balancer) fetchUsersSketch(ctx context.Context, node, admin string) (*hyperloglog.Sketch, int64, error) {
	code, body, err := b.callPeer(ctx, http.MethodGet, node, admin+"/api/users/sketch", nil)
	if err == nil && code != http.StatusOK {
		err = peerError(code, body)
	}
	if err != nil {
		return nil, 0, err
	}
	var u edgeUsers
	if err := json.Unmarshal(body, &u); err != nil {
		return nil, 0, fmt.Errorf("users sketch of %s: %w", admin, err)
	}
	sk, err := decodeSketch(u.Sketch)
	if err != nil {
		return nil, 0, fmt.Errorf("users sketch of %s: %w", admin, err)
	}
	return sk, max(u.Anonymous, 0), nil
}

// decodeSketch reads a sketch a peer sent. The library checks lengths; a
// sketch it still cannot read must cost this answer, not the process.
func decodeSketch(raw []byte) (sk *hyperloglog.Sketch, err error) {
	defer func() {
		if r := recover(); r != nil {
			sk, err = nil, fmt.Errorf("malformed sketch: %v", r)
		}
	}()
	sk = hyperloglog.New14()
	if err := sk.UnmarshalBinary(raw); err != nil {
		return nil, err
	}
	return sk, nil
}

// edgeUsersAnswer is what one edge of the cluster said (asked: it is an
// edge with an admin address; sketch nil: it did not answer).
type edgeUsersAnswer struct {
	asked     bool
	sketch    *hyperloglog.Sketch
	anonymous int64
}

// mergeUsers adds up the edges' answers; nil when no edge was asked.
func mergeUsers(answers []edgeUsersAnswer) *clusterUsers {
	all := hyperloglog.New14()
	var out *clusterUsers
	for _, a := range answers {
		if !a.asked {
			continue
		}
		if out == nil {
			out = &clusterUsers{}
		}
		if a.sketch == nil || all.Merge(a.sketch) != nil { // no answer, or another precision
			out.Missing++
			continue
		}
		out.Edges++
		// Token-less participants hold a connection each: an edge saying
		// more lies, and the cluster's sum must not wrap around.
		out.Online += uint64(min(max(a.anonymous, 0), configs.MaxConnections))
	}
	if out != nil {
		out.Online += all.Estimate()
	}
	return out
}
