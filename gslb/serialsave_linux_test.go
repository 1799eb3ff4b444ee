package gslb

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/ringlb/ringlb/balancer/acceptguard/fdtest"
	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health/operator"
	"github.com/ringlb/ringlb/health/operator/operatortest"
)

// A save of the operator state or the serial's offset that fails — the
// process out of descriptors, here; a full disk alike — is tried again
// until it works. Logged and left, before, an operator's serve mode set
// meanwhile (answered 200) was gone after a restart, and the offset on
// disk stayed behind the serial the secondaries had transferred: after a
// restart the serial went back below theirs, and they kept their copy of
// before until as many changes had passed again (what
// TestRestartKeepsTheSerialGoing keeps from a restart).
func TestFailedSavesAreTriedAgain(t *testing.T) {
	if !fdtest.Alone(t) {
		return
	}
	cfg := withTransfer(t, fuzzConfig(t), configs.Transfer{Allow: []string{"127.0.0.0/8"}})
	// A token: the loopback rule asks the kernel who the caller is,
	// which needs a descriptor.
	cfg.Admin = operatortest.Setups()[1].Admin(t)
	cfg.Admin.StateDir = t.TempDir()
	soa := func(s *Server) uint32 {
		m := query(t, s, "tcp", "ringlb.test.", dns.TypeSOA, nil)
		return m.Answer[0].(*dns.SOA).Serial
	}
	first, err := New(cfg, "gslb-test", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	// The operator's connection is open before the descriptors run out
	// (a keep-alive one, as a dashboard's).
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go first.ServeAdmin(ln)
	post := func(path string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, "http://"+ln.Addr().String()+path, nil)
		req.Header.Set("Authorization", "Bearer "+operatortest.Token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	const mode = "/api/pools/ide.ringlb.test/east/bal-1/mode?mode="
	if code, body := post(mode + configs.ServeAlways); code != http.StatusOK {
		t.Fatalf("serve mode always: %d %s", code, body)
	}
	saved := func() uint32 {
		var st serialState
		if err := first.op.Store.Load(serialConcern, &st); err != nil && !errors.Is(err, operator.ErrNoState) {
			t.Fatal(err)
		}
		return st.Offset
	}
	before := saved()
	release := fdtest.ExhaustDescriptors(t)
	// Taken out while no file can be opened: its region fails over (a
	// change of the zone), and neither save can be made.
	code, body := post(mode + configs.ServeRemove)
	release()
	if code != http.StatusOK {
		t.Fatalf("serve mode remove with the descriptors exhausted: %d %s", code, body)
	}
	held := soa(first) // what a secondary transferred
	deadline := time.Now().Add(30 * time.Second)
	for saved() != first.state.Load().serial.Load() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("serial offset saved before the descriptors ran out %d, saved once they were back %d, the server's %d", before, saved(), first.state.Load().serial.Load())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := first.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	second := startGSLB(t, cfg)
	if o, _ := second.state.Load().pools.saved(); len(o) != 1 || o[0].Mode != configs.ServeRemove {
		t.Errorf("after a restart the serve modes set are %+v, want bal-1 removed", o)
	}
	now := soa(second)
	t.Logf("a secondary holds serial %d; after a restart the primary says %d", held, now)
	if int32(now-held) <= 0 { // RFC 1982: not newer
		t.Errorf("after a restart the serial is %d, not newer than the %d a secondary holds: it transfers nothing", now, held)
	}
}
