package healthtest

import (
	"testing"

	"github.com/ringlb/ringlb/health"
)

func TestClusterJoins(t *testing.T) {
	c := New(t)
	a := c.Join("a", health.Meta{Role: health.RoleBalancer, State: health.StateAlive})
	b := c.Join("b", health.Meta{Role: health.RoleEdge, URL: "http://127.0.0.1:1", Weight: 1, State: health.StateAlive})
	WaitMembers(t, a, "both members", func(ns []health.Node) bool { return len(ns) == 2 })
	WaitMembers(t, b, "both members", func(ns []health.Node) bool { return len(ns) == 2 })
	if !a.Keyring().Enabled() || c.KeyFile() == "" {
		t.Error("a test cluster is keyed")
	}
	k := NewKeyless(t)
	if k.Join("x", health.Meta{Role: health.RoleGSLB, State: health.StateAlive}).Keyring().Enabled() {
		t.Error("a keyless cluster has a key")
	}
}
