package gslb

import (
	"net"
	"net/http"
	"testing"

	"github.com/ringlb/ringlb/health/operator"
	"github.com/ringlb/ringlb/health/operator/operatortest"
)

// gslbChanges are the gslb admin port's state-changing endpoints
// (ServeAdmin, operator.Node.Mount).
var gslbChanges = [][2]string{
	{http.MethodPost, "/api/pools/ide.ringlb.test/east/bal-1/mode?mode=remove"},
	{http.MethodPost, "/api/pools/ide.ringlb.test/east/recover"},
	{http.MethodPost, "/api/querylog?on=true"},
	{http.MethodPost, operator.PathLogout},
	{http.MethodPost, "/api/config/check"},
	{http.MethodPut, "/api/config"},
}

// gslbReads are its endpoints that answer data.
var gslbReads = []string{"/metrics", "/api/pools", "/api/monitors", "/api/history", "/api/audit", "/api/whoami", "/api/config"}

// Every state-changing endpoint of a gslb node's admin port, sent every
// request a web page can make an operator's browser send (cross-site simple
// requests, a DNS-rebinding page's same-origin ones), on a port without a
// token, with one, and with a logged-in user whose cookie goes along: none
// gets through, no serve mode is set, the query log stays off, nothing is
// audited. The operator's own change then does.
func TestGSLBAdminRefusesBrowserAttacks(t *testing.T) {
	east, west := newFakeBalancer(t), newFakeBalancer(t)
	for _, setup := range operatortest.Setups() {
		t.Run(setup.Name, func(t *testing.T) {
			cfg := gslbConfig(t, east, west, "")
			admin := setup.Admin(t)
			admin.Listen = cfg.Admin.Listen // loopback: the loopback rule, no generated password
			cfg.Admin = admin
			s := startGSLB(t, cfg)
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			go s.ServeAdmin(ln) // ended by the server's Shutdown
			addr := ln.Addr().String()
			browser := setup.Browser(t, addr)
			before := len(s.op.Audit.List(1000))
			through, sent := operatortest.AttackAll(t, addr, gslbChanges, gslbReads, browser)
			t.Logf("%d of %d browser attacks got through", through, sent)
			if s.queryLog.Load() {
				t.Error("the query log was switched on")
			}
			if after := s.op.Audit.List(1000); len(after) != before {
				t.Errorf("audit records %d → %d: a change went through: %+v", before, len(after), after[0])
			}
			legit := setup.Operator(addr, http.MethodPost, "/api/querylog?on=true")
			if resp, body := operatortest.Send(t, addr, legit, browser); resp.StatusCode != http.StatusOK || !s.queryLog.Load() {
				t.Errorf("the operator's change: %d %s, query log %v", resp.StatusCode, body, s.queryLog.Load())
			}
		})
	}
}
