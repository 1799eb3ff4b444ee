package sessions

import (
	"net/http"
	"testing"
	"time"

	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health/operator"
	"github.com/ringlb/ringlb/health/operator/operatortest"
)

// edgeChanges are the edge admin port's state-changing endpoints
// (ServeAdmin, handleRevocations, operator.Node.Mount).
var edgeChanges = [][2]string{
	{http.MethodPost, "/api/drain"},
	{http.MethodPost, "/api/tokens/revoke?user=alice"},
	{http.MethodPost, operator.PathLogout},
	{http.MethodPost, "/api/config/check"},
	{http.MethodPut, "/api/config"},
}

// edgeReads are its endpoints that answer data.
var edgeReads = []string{
	"/metrics", "/api/sessions", "/api/users/sketch", "/api/tokens/revoked", "/api/history", "/api/audit", "/api/whoami", "/api/config",
}

// Every state-changing endpoint of an edge's admin port, sent every request
// a web page can make an operator's browser send (cross-site simple
// requests, a DNS-rebinding page's same-origin ones), on a port without a
// token, with one, and with a logged-in user whose cookie goes along: none
// gets through, the edge does not drain, revokes nothing, audits nothing.
// The operator's own drain then does.
func TestEdgeAdminRefusesBrowserAttacks(t *testing.T) {
	for _, setup := range operatortest.Setups() {
		t.Run(setup.Name, func(t *testing.T) {
			e := startEdge(t, configs.Edge{Admin: setup.Admin(t)}, nil)
			browser := setup.Browser(t, e.admin)
			before := len(e.s.op.Audit.List(1000))
			through, sent := operatortest.AttackAll(t, e.admin, edgeChanges, edgeReads, browser)
			t.Logf("%d of %d browser attacks got through", through, sent)
			if e.s.draining.Load() {
				t.Error("the edge is draining")
			}
			if l := e.s.revocations.list(time.Now()); len(l.Users)+len(l.Nonces) != 0 {
				t.Errorf("revoked: %+v", l)
			}
			if after := e.s.op.Audit.List(1000); len(after) != before {
				t.Errorf("audit records %d → %d: a change went through: %+v", before, len(after), after[0])
			}
			legit := setup.Operator(e.admin, http.MethodPost, "/api/drain")
			if resp, body := operatortest.Send(t, e.admin, legit, browser); resp.StatusCode != http.StatusAccepted || !e.s.draining.Load() {
				t.Errorf("the operator's drain: %d %s, draining %v", resp.StatusCode, body, e.s.draining.Load())
			}
		})
	}
}
