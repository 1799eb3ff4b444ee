package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/miekg/dns"

	"github.com/ringlb/ringlb/bench"
)

// upgradeTunnels is how many live tunnels TestHitlessUpgrade carries
// (RINGLB_UPGRADE_TUNNELS overrides: the full run is 5000, within the
// machine's 20,000 descriptors per process — the test holds each tunnel's
// client and backend ends, the balancer both of its sockets).
func upgradeTunnels(t *testing.T) int {
	if s := os.Getenv("RINGLB_UPGRADE_TUNNELS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("RINGLB_UPGRADE_TUNNELS=%q", s)
		}
		return n
	}
	return scenarioSize(t, 5000)
}

// echoBackend is a third-party WebSocket backend (a static edge): it
// echoes every message on the connection it came from.
type echoBackend struct {
	ln    net.Listener
	srv   *http.Server
	conns atomic.Int64
}

func startEchoBackend(t *testing.T) *echoBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &echoBackend{ln: ln}
	up := websocket.Upgrader{ReadBufferSize: 4096, WriteBufferSize: 4096, CheckOrigin: func(*http.Request) bool { return true }}
	e.srv = &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		e.conns.Add(1)
		defer e.conns.Add(-1)
		defer c.Close()
		c.SetReadLimit(1 << 20)
		for {
			typ, msg, err := c.ReadMessage()
			if err != nil {
				return
			}
			if err := c.WriteMessage(typ, msg); err != nil {
				return
			}
		}
	})}
	go e.srv.Serve(ln)
	t.Cleanup(func() { e.srv.Close() })
	return e
}

// liveClient is one IDE user: a message a second, each echoed in order.
type liveClient struct {
	c    *websocket.Conn
	sent atomic.Int64 // messages written
	got  atomic.Int64 // echoes read, in order
	// closed: the tunnel ended before the test closed it; reordered: an
	// echo out of sequence.
	closed, reordered atomic.Bool
	mu                sync.Mutex
	sentAt            map[int64]time.Time
}

// rtts collects echo round trips with the time each message was sent.
type rtts struct {
	mu  sync.Mutex
	all []rtt
}

type rtt struct {
	at time.Time
	d  time.Duration
}

func (r *rtts) add(at time.Time, d time.Duration) {
	r.mu.Lock()
	r.all = append(r.all, rtt{at, d})
	r.mu.Unlock()
}

// p99 of the round trips of messages sent in [from, to).
func (r *rtts) p99(from, to time.Time) (time.Duration, int) {
	r.mu.Lock()
	var ds []time.Duration
	for _, x := range r.all {
		if !x.at.Before(from) && x.at.Before(to) {
			ds = append(ds, x.d)
		}
	}
	r.mu.Unlock()
	if len(ds) == 0 {
		return 0, 0
	}
	slices.Sort(ds)
	return ds[len(ds)*99/100], len(ds)
}

func dialLive(t *testing.T, url string, src net.IP, id int) (*websocket.Conn, error) {
	d := websocket.Dialer{
		HandshakeTimeout: 20 * time.Second,
		NetDial: func(network, addr string) (net.Conn, error) {
			nd := net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: src}}
			return nd.Dial(network, addr)
		},
	}
	h := http.Header{}
	h.Set("ctstickiness", fmt.Sprintf("user-%d", id))
	c, resp, err := d.Dial(url, h)
	if err != nil {
		return nil, fmt.Errorf("%w%s", err, describeResponse(resp))
	}
	return c, nil
}

// run sends a message a second until stop, and reads the echoes.
func (lc *liveClient) run(id int, stop <-chan struct{}, lat *rtts, wg *sync.WaitGroup) {
	wg.Add(2)
	go func() {
		defer wg.Done()
		for want := int64(0); ; want++ {
			_, msg, err := lc.c.ReadMessage()
			if err != nil {
				select {
				case <-stop:
				default:
					lc.closed.Store(true)
				}
				return
			}
			seq, err := strconv.ParseInt(strings.TrimPrefix(string(msg), fmt.Sprintf("%d:", id)), 10, 64)
			if err != nil || seq != want {
				lc.reordered.Store(true)
				return
			}
			lc.mu.Lock()
			at := lc.sentAt[seq]
			delete(lc.sentAt, seq)
			lc.mu.Unlock()
			lat.add(at, time.Since(at))
			lc.got.Add(1)
		}
	}()
	go func() {
		defer wg.Done()
		// Spread the clients over the second.
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		select {
		case <-time.After(time.Duration(id%1000) * time.Millisecond):
		case <-stop:
			return
		}
		for seq := int64(0); ; seq++ {
			now := time.Now()
			lc.mu.Lock()
			lc.sentAt[seq] = now
			lc.mu.Unlock()
			lc.c.SetWriteDeadline(now.Add(10 * time.Second))
			if err := lc.c.WriteMessage(websocket.TextMessage, []byte(fmt.Sprintf("%d:%d", id, seq))); err != nil {
				return
			}
			lc.sent.Add(1)
			select {
			case <-tick.C:
			case <-stop:
				return
			}
		}
	}()
}

// saturating is one session sending binary messages as fast as the path
// takes them, each numbered, checked in order on the echo.
type saturating struct {
	sent, got          atomic.Int64
	closed, reordered  atomic.Bool
	bytes              atomic.Int64
	stopSend, finished chan struct{}
}

const saturatingMessage = 16 << 10

func startSaturating(t *testing.T, url string) *saturating {
	t.Helper()
	c, err := dialLive(t, url, net.IPv4(127, 0, 0, 1), -1)
	if err != nil {
		t.Fatal(err)
	}
	s := &saturating{stopSend: make(chan struct{}), finished: make(chan struct{})}
	go func() {
		defer close(s.finished)
		for want := int64(0); ; want++ {
			c.SetReadDeadline(time.Now().Add(60 * time.Second))
			_, msg, err := c.ReadMessage()
			if err != nil {
				s.closed.Store(true)
				return
			}
			if len(msg) != saturatingMessage || int64(binary.BigEndian.Uint64(msg)) != want {
				s.reordered.Store(true)
				return
			}
			s.got.Add(1)
			s.bytes.Add(int64(len(msg)))
			select {
			case <-s.stopSend:
				if s.got.Load() == s.sent.Load() {
					c.Close()
					return
				}
			default:
			}
		}
	}()
	go func() {
		msg := make([]byte, saturatingMessage)
		for seq := int64(0); ; seq++ {
			select {
			case <-s.stopSend:
				return
			default:
			}
			// At most 64 messages (1 MiB) in flight: the path stays full
			// without the test's own memory growing.
			for seq-s.got.Load() > 64 {
				select {
				case <-s.stopSend:
					return
				case <-time.After(time.Millisecond):
				}
			}
			binary.BigEndian.PutUint64(msg, uint64(seq))
			c.SetWriteDeadline(time.Now().Add(30 * time.Second))
			if err := c.WriteMessage(websocket.BinaryMessage, msg); err != nil {
				return
			}
			s.sent.Add(1)
		}
	}()
	return s
}

// alive reports whether pid is a running process (not gone, not a zombie).
func alive(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) state ...: the state follows the last ')'.
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] != 'Z'
}

// rssKiB is a process's resident memory.
func rssKiB(pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	return 0
}

// echoed waits (bounded) until every live client has the echo of every
// message it had sent when called.
func echoed(clients []*liveClient) {
	sent := make([]int64, len(clients))
	for i, lc := range clients {
		sent[i] = lc.sent.Load()
	}
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		pending := 0
		for i, lc := range clients {
			if lc.got.Load() < sent[i] && !lc.closed.Load() && !lc.reordered.Load() {
				pending++
			}
		}
		if pending == 0 {
			return
		}
	}
}

// waitGone waits (bounded) until pid has exited and returns when it did.
func waitGone(t *testing.T, pid int) time.Time {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("old process %d still running 60s after the upgrade began", pid)
		}
		time.Sleep(time.Millisecond)
	}
	return time.Now()
}

// TestHitlessUpgrade runs a real balancer in front of a third-party
// WebSocket backend with 5000 live tunnels (a message a second each) and
// one saturating session, and upgrades it three times — SIGUSR2, `ringlb
// upgrade -pid`, and SIGUSR2 to a binary built separately and installed
// over the path — then tries two upgrades that must fail (a binary that
// exits 1, a config that does not check). No tunnel closes, no message is
// lost or reordered, no old process is left, the failed upgrades say why
// and leave every tunnel up.
func TestHitlessUpgrade(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test of the real binary; skipped with -short")
	}
	n := upgradeTunnels(t)
	// The test holds each tunnel's client and backend ends: raise the soft
	// descriptor limit, and carry fewer tunnels where the hard one is low.
	if _, hard, err := raiseOpenFileLimit(); err == nil && hard < uint64(2*n+1000) {
		fit := max(int(hard)/2-500, 10)
		t.Logf("open-file limit %d: %d tunnels instead of %d", hard, fit, n)
		n = fit
	}
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o700); err != nil { // an upgrade refuses a directory others can write
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "ringlb") // the installed path the balancer runs from
	if data, err := os.ReadFile(buildBinary(t)); err != nil {
		t.Fatal(err)
	} else if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	backend := startEchoBackend(t)
	cfgPath := filepath.Join(dir, "balancer.yaml")
	cfg := fmt.Sprintf("cluster: { name: bal-1, bind: 127.0.0.1:0, profile: local }\n"+
		"balancer: { listen: 127.0.0.1:0, admin: { listen: 127.0.0.1:0 }, edges: [ { name: echo, url: \"http://%s\" } ] }\n", backend.ln.Addr())
	writeFile(t, cfgPath, cfg)
	upgradeDir := filepath.Join(dir, "run")
	bal := startProc(t, bin, "balancer", "-config", cfgPath, "-upgrade-dir", upgradeDir, "-upgrade-timeout", "20s")
	rec := bal.waitLog(t, "balancer started")
	listen, admin := rec["listen"].(string), rec["admin"].(string)
	waitRingMembers(t, "http://"+admin+"/api/ring", 1)
	// Not Waited for here: Wait would close the log pipe, which the next
	// processes write to (alive treats the exited first one, a zombie, as
	// gone).
	pid := bal.cmd.Process.Pid
	// The last process must be stopped at the end, whoever it is.
	current := &atomic.Int64{}
	current.Store(int64(pid))
	t.Cleanup(func() {
		p := int(current.Load())
		syscall.Kill(p, syscall.SIGTERM)
		for deadline := time.Now().Add(20 * time.Second); alive(p) && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
		}
		if alive(p) {
			syscall.Kill(p, syscall.SIGKILL)
		}
	})

	// 5000 live tunnels from 127.0.0.1-16, then the saturating session.
	sources, err := bench.ParseSources("127.0.0.1-127.0.0.16")
	if err != nil {
		t.Fatal(err)
	}
	url := "ws://" + listen + "/ws"
	clients := make([]*liveClient, n)
	var dialWG sync.WaitGroup
	var dialErrs atomic.Int64
	var firstErr atomic.Value
	sem := make(chan struct{}, 64)
	setup := time.Now()
	for i := range n {
		dialWG.Add(1)
		sem <- struct{}{}
		go func() {
			defer dialWG.Done()
			defer func() { <-sem }()
			c, err := dialLive(t, url, sources[i%len(sources)], i)
			if err != nil {
				dialErrs.Add(1)
				firstErr.CompareAndSwap(nil, err)
				return
			}
			clients[i] = &liveClient{c: c, sentAt: map[int64]time.Time{}}
		}()
	}
	dialWG.Wait()
	if dialErrs.Load() > 0 {
		t.Fatalf("%d of %d tunnels failed to open: %v", dialErrs.Load(), n, firstErr.Load())
	}
	t.Logf("%d tunnels open in %s", n, time.Since(setup).Round(time.Millisecond))
	stop := make(chan struct{})
	var clientWG sync.WaitGroup
	lat := &rtts{}
	for i, lc := range clients {
		lc.run(i, stop, lat, &clientWG)
	}
	sat := startSaturating(t, url)
	// New WebSockets keep arriving through the upgrades: each must get
	// its 101 and its echo (the new process routes from its first one).
	var newOK, newFailed atomic.Int64
	var firstNewErr atomic.Value
	newDone := make(chan struct{})
	go func() {
		defer close(newDone)
		for i := 0; i < 100000; i++ {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			err := func() error {
				c, err := dialLive(t, url, net.IPv4(127, 0, 0, 100), n+1+i)
				if err != nil {
					return err
				}
				defer c.Close()
				c.SetReadDeadline(time.Now().Add(10 * time.Second))
				c.SetWriteDeadline(time.Now().Add(10 * time.Second))
				if err := c.WriteMessage(websocket.TextMessage, []byte("hello")); err != nil {
					return err
				}
				_, msg, err := c.ReadMessage()
				if err == nil && string(msg) != "hello" {
					err = fmt.Errorf("echo %q", msg)
				}
				return err
			}()
			if err != nil {
				newFailed.Add(1)
				firstNewErr.CompareAndSwap(nil, err)
			} else {
				newOK.Add(1)
			}
		}
	}()
	defer func() {
		for _, lc := range clients {
			lc.c.Close()
		}
	}()
	// A binary built separately, to be installed over the path (as a
	// package upgrade does: a rename, the running inode untouched) for the
	// third upgrade. Other link flags make it another binary while every
	// package comes from the build cache: a flag that changes compilation
	// (-trimpath) rebuilds the standard library and every dependency,
	// minutes of a busy CI machine. The link (seconds, 15 s and more on a
	// busy machine) runs while the test waits anyway: through the "before"
	// window and the first two upgrades.
	next := filepath.Join(t.TempDir(), "ringlb-next")
	var nextErr error
	nextBuilt := make(chan struct{})
	go func() {
		defer close(nextBuilt)
		if out, err := exec.CommandContext(t.Context(), "go", "build", "-ldflags=-X=main.upgradeTestBuild=next", "-o", next, ".").CombinedOutput(); err != nil {
			nextErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	}()
	t.Cleanup(func() { <-nextBuilt }) // before its directory is removed
	rssBefore := rssKiB(pid)
	time.Sleep(5 * time.Second) // the "before" window of the latency figures

	type figure struct {
		how             string
		signalToExit    time.Duration
		p99, p99before  time.Duration
		rssNew, rssOld  int64
		during, samples int
	}
	var figures []figure
	upgrade := func(how string, trigger func(oldPID int)) {
		t.Helper()
		oldPID := int(current.Load())
		rssOld := rssKiB(oldPID)
		beforeFrom := time.Now().Add(-4 * time.Second)
		began := time.Now()
		trigger(oldPID)
		done := bal.waitLog(t, "upgrade done; the old process exits")
		newPID := int(done["new_pid"].(float64))
		gone := waitGone(t, oldPID)
		current.Store(int64(newPID))
		// Latency of messages sent from the signal until a second after
		// the old process exited, once their echoes are in (it slept a
		// second more for them, where they take milliseconds).
		time.Sleep(time.Until(gone.Add(time.Second)))
		echoed(clients)
		p99, during := lat.p99(began, gone.Add(time.Second))
		p99before, samples := lat.p99(beforeFrom, began)
		f := figure{how: how, signalToExit: gone.Sub(began), p99: p99, p99before: p99before, rssNew: rssKiB(newPID), rssOld: rssOld, during: during, samples: samples}
		figures = append(figures, f)
		t.Logf("upgrade by %s: pid %d → %d; signal to old exit %s; p99 %s during (%d msgs) vs %s before (%d msgs); RSS new %d KiB (old had %d); tunnels taken %v; hand-off took %vms",
			how, oldPID, newPID, f.signalToExit.Round(time.Millisecond), p99.Round(time.Microsecond), during, p99before.Round(time.Microsecond), samples,
			f.rssNew, rssOld, done["tunnels_taken"], done["took"].(float64)/1e6)
		if got := done["tunnels_taken"].(float64); int(got) < n {
			t.Errorf("upgrade by %s: the new process took %v tunnels, want all %d (+ the saturating one)", how, got, n)
		}
		if v := scrape(t, "http://"+admin+"/metrics", `ringlb_balancer_requests_total{code="101",edge="echo"}`); int(v) < n+1 {
			t.Errorf("after the upgrade by %s: requests_total{code=101} = %v, want at least the %d tunnels opened before (counters carried over)", how, v, n+1)
		}
	}
	upgrade("SIGUSR2", func(pid int) { syscall.Kill(pid, syscall.SIGUSR2) })
	upgrade("ringlb upgrade -pid", func(pid int) {
		out, err := exec.Command(bin, "upgrade", "-pid", strconv.Itoa(pid), "-upgrade-dir", upgradeDir).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "upgraded: pid") {
			t.Errorf("ringlb upgrade -pid %d: %v\n%s", pid, err, out)
		}
	})
	// The binary built separately (started above) installed over the path.
	<-nextBuilt
	if nextErr != nil {
		t.Fatal(nextErr)
	}
	install := func(from string) {
		t.Helper()
		tmp := bin + ".new"
		data, err := os.ReadFile(from)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(tmp, data, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, bin); err != nil {
			t.Fatal(err)
		}
	}
	good := filepath.Join(t.TempDir(), "ringlb-good")
	if data, err := os.ReadFile(bin); err == nil {
		os.WriteFile(good, data, 0o755)
	}
	install(next)
	upgrade("SIGUSR2 to a binary built separately", func(pid int) { syscall.Kill(pid, syscall.SIGUSR2) })

	// Failed upgrades: the old process keeps serving and says why.
	broken := filepath.Join(t.TempDir(), "broken")
	writeFile(t, broken, "#!/bin/sh\necho 'boom: this is not a ringlb binary' >&2\nexit 1\n")
	install(broken)
	survivor := int(current.Load())
	syscall.Kill(survivor, syscall.SIGUSR2)
	failed := bal.waitLog(t, "upgrade failed; this process keeps serving")
	if tail, _ := failed["child_stderr"].(string); !strings.Contains(tail, "boom: this is not a ringlb binary") {
		t.Errorf("failed upgrade logged child_stderr %q, want the new binary's last words", tail)
	}
	t.Logf("failed upgrade (binary exits 1): %v", failed["err"])
	install(good)
	writeFile(t, cfgPath, "balancer: { listen: [oops }\n")
	out, err := exec.Command(bin, "upgrade", "-pid", strconv.Itoa(survivor), "-upgrade-dir", upgradeDir).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "refused to take over") {
		t.Errorf("upgrade with a config that does not check: %v\n%s", err, out)
	}
	t.Logf("failed upgrade (bad config): %s", strings.TrimSpace(string(out)))
	writeFile(t, cfgPath, cfg)
	if !alive(survivor) {
		t.Fatal("the balancer exited after a failed upgrade")
	}
	time.Sleep(3 * time.Second) // traffic goes on after the failures

	// Stop sending; every echo must come back.
	close(stop)
	close(sat.stopSend)
	<-newDone
	t.Logf("new WebSockets during the upgrades: %d echoed, %d failed", newOK.Load(), newFailed.Load())
	if newFailed.Load() > 0 || newOK.Load() == 0 {
		t.Errorf("new WebSockets during the upgrades: %d failed (first: %v), %d ok", newFailed.Load(), firstNewErr.Load(), newOK.Load())
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		pending := 0
		for _, lc := range clients {
			if lc.got.Load() < lc.sent.Load() && !lc.closed.Load() && !lc.reordered.Load() {
				pending++
			}
		}
		if pending == 0 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	select {
	case <-sat.finished:
	case <-time.After(30 * time.Second):
	}
	var closed, lost, reordered, sent, got int64
	for _, lc := range clients {
		if lc.closed.Load() {
			closed++
		}
		if lc.reordered.Load() {
			reordered++
		}
		s, g := lc.sent.Load(), lc.got.Load()
		sent += s
		got += g
		lost += s - g
	}
	t.Logf("live tunnels: %d messages sent, %d echoed; saturating session: %d messages (%d MiB) echoed of %d",
		sent, got, sat.got.Load(), sat.bytes.Load()>>20, sat.sent.Load())
	if closed != 0 || lost != 0 || reordered != 0 {
		t.Errorf("live tunnels: %d closed, %d messages lost, %d reordered; want 0", closed, lost, reordered)
	}
	if sat.closed.Load() || sat.reordered.Load() || sat.got.Load() != sat.sent.Load() {
		t.Errorf("saturating session: closed %v, reordered %v, %d of %d echoed", sat.closed.Load(), sat.reordered.Load(), sat.got.Load(), sat.sent.Load())
	}
	if backend.conns.Load() < int64(n) { // the saturating session has ended
		t.Errorf("backend holds %d connections, want %d: the balancer's side of some closed", backend.conns.Load(), n)
	}
	if alive(pid) {
		t.Errorf("the first balancer process %d is still running", pid)
	}
	t.Logf("RSS of the first process with %d tunnels: %d KiB", n, rssBefore)
	for _, f := range figures {
		t.Logf("figure | %s | %s | p99 %s → %s | new RSS %d KiB", f.how, f.signalToExit.Round(time.Millisecond),
			f.p99before.Round(time.Microsecond), f.p99.Round(time.Microsecond), f.rssNew)
	}
}

// TestGSLBUpgradeLosesNoQuery queries a real gslb over UDP and TCP without
// pause while it is upgraded twice: every query is answered, and the old
// processes are gone.
func TestGSLBUpgradeLosesNoQuery(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("end-to-end test of the real binary; skipped with -short")
	}
	bin := buildBinary(t)
	dir := t.TempDir()
	gcfg := filepath.Join(dir, "gslb.yaml")
	// RRL off: the test asks from one address as fast as answers come.
	writeFile(t, gcfg, `cluster: { name: gslb-1, bind: 127.0.0.1:0, profile: local }
gslb:
  listen: 127.0.0.1:0
  admin: { listen: 127.0.0.1:0 }
  rate_limit: { responses_per_second: 0 }
  zones: [ { origin: ringlb.test, records: [ "@ 3600 IN SOA ns1 hostmaster 1 7200 3600 1209600 60", "ns1 3600 IN A 127.0.0.1", "www 60 IN A 127.0.0.9" ] } ]
`)
	g := startProc(t, bin, "gslb", "-config", gcfg, "-upgrade-dir", filepath.Join(dir, "run"))
	server := g.waitLog(t, "gslb started")["dns"].(string)
	pid := g.cmd.Process.Pid
	current := &atomic.Int64{}
	current.Store(int64(pid))
	t.Cleanup(func() { syscall.Kill(int(current.Load()), syscall.SIGTERM) })

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var asked, answered atomic.Int64
	var failures sync.Map
	var wg sync.WaitGroup
	for _, proto := range []string{"udp", "udp", "tcp"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &dns.Client{Net: proto, Timeout: 3 * time.Second}
			m := new(dns.Msg)
			m.SetQuestion("www.ringlb.test.", dns.TypeA)
			for i := 0; i < 200000 && ctx.Err() == nil; i++ {
				asked.Add(1)
				r, _, err := c.Exchange(m, server)
				if err != nil || r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
					failures.Store(fmt.Sprintf("%s %d", proto, i), fmt.Sprint(err))
					continue
				}
				answered.Add(1)
			}
		}()
	}
	var pids []int
	for range 2 {
		time.Sleep(time.Second)
		old := int(current.Load())
		syscall.Kill(old, syscall.SIGUSR2)
		done := g.waitLog(t, "upgrade done; the old process exits")
		current.Store(int64(done["new_pid"].(float64)))
		waitGone(t, old)
		pids = append(pids, old)
	}
	time.Sleep(time.Second)
	cancel()
	wg.Wait()
	n := 0
	failures.Range(func(k, v any) bool {
		if n < 5 {
			t.Errorf("query %v: %v", k, v)
		}
		n++
		return true
	})
	t.Logf("%d queries asked across two upgrades, %d answered, %d failed", asked.Load(), answered.Load(), n)
	if n > 0 || answered.Load() == 0 {
		t.Fatalf("%d queries unanswered", n)
	}
	for _, p := range pids {
		if alive(p) {
			t.Errorf("old gslb process %d still running", p)
		}
	}
}

// TestUpgradeNotifiesSystemd runs a balancer as systemd would (Type=notify,
// NOTIFY_SOCKET set) and upgrades it: it says READY=1 once serving; at the
// upgrade the old process names the new one the main process, and the new
// one names itself and says it is ready.
func TestUpgradeNotifiesSystemd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test of the real binary; skipped with -short")
	}
	bin := buildBinary(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "notify")
	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer notify.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	cfg := filepath.Join(dir, "balancer.yaml")
	writeFile(t, cfg, "cluster: { name: bal-1, bind: 127.0.0.1:0, profile: local }\nbalancer: { listen: 127.0.0.1:0, admin: { listen: 127.0.0.1:0 } }\n")
	bal := startProc(t, bin, "balancer", "-config", cfg, "-upgrade-dir", filepath.Join(dir, "run"))
	next := func() string {
		t.Helper()
		notify.SetReadDeadline(time.Now().Add(20 * time.Second))
		buf := make([]byte, 512)
		n, err := notify.Read(buf)
		if err != nil {
			t.Fatalf("no systemd notification: %v", err)
		}
		return string(buf[:n])
	}
	if got := next(); got != "READY=1" {
		t.Fatalf("first notification %q, want READY=1", got)
	}
	old := bal.cmd.Process.Pid
	syscall.Kill(old, syscall.SIGUSR2)
	done := bal.waitLog(t, "upgrade done; the old process exits")
	newPID := int(done["new_pid"].(float64))
	t.Cleanup(func() { syscall.Kill(newPID, syscall.SIGTERM) })
	got := []string{next(), next()}
	slices.Sort(got)
	want := []string{fmt.Sprintf("MAINPID=%d", newPID), fmt.Sprintf("MAINPID=%d\nREADY=1", newPID)}
	if !slices.Equal(got, want) {
		t.Errorf("notifications at the upgrade: %q, want %q", got, want)
	}
	waitGone(t, old)
}
