package gslb

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health"
	"github.com/ringlb/ringlb/health/healthtest"
)

// keyedAgreeConfig is fastAgreeConfig with an admin token: the nodes read
// each other as peers, by the cluster key's signature, not as the loopback
// operator. Its monitors run every second, as fastAgreeConfig's do and for
// its reason: at 200 ms with fall 1 one slow check on a loaded machine
// failed a member over just before a test's last query.
func keyedAgreeConfig(t *testing.T, eastProbe, westProbe string) configs.GSLB {
	t.Helper()
	token := filepath.Join(t.TempDir(), "admin.token")
	if err := os.WriteFile(token, []byte("peer-answer-test-token-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	y := gslbYAML("  rate_limit: { responses_per_second: 0 }\n  admin: { token_file: "+token+" }\n", "", eastProbe, westProbe)
	y = strings.Replace(y, "interval: 1s, timeout: 1s, rise: 2, fall: 4, jitter: 0.01", "interval: 1s, timeout: 1s, rise: 1, fall: 1", 1)
	return parseGSLBYAML(t, y)
}

// startKeyedNameserver starts a gslb with its admin API in the keyed
// cluster kc, announcing announce(its admin URL) as its admin address (nil:
// the admin URL itself).
func startKeyedNameserver(t *testing.T, kc *healthtest.Cluster, name string, cfg configs.GSLB, announce func(string) string) (*Server, *health.Membership) {
	t.Helper()
	s, admin := serveWithAdmin(t, name, cfg)
	if announce != nil {
		admin = announce(admin)
	}
	m := kc.Join(name, health.Meta{Role: health.RoleGSLB, Region: "east", Admin: admin, State: health.StateAlive})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Shutdown(ctx)
	})
	s.UsePeers(m)
	return s, m
}

// What a man in the middle does to each answer it carries to gslb-a.
const (
	mitmPass   = iota // carries it as it is
	mitmForge         // says bal-1 is down
	mitmRecord        // carries it, and keeps the last one
	mitmReplay        // answers with the one it kept, the peer not asked
	mitmStrip         // drops the answer's signature (an earlier release's answer)
)

// mitm is a man in the middle on the network between gslb nodes: a TCP
// listener that a gslb node's gossip announces as its admin address (the
// attacker holds no key; it sits on the path, as a spoofed address on the
// LAN does), carrying each HTTP request to the node's real admin port and
// each answer back — altered, for the reads gslb-a makes, as mode says.
type mitm struct {
	t      *testing.T
	ln     net.Listener
	target atomic.Pointer[string] // the real admin address, host:port
	mode   atomic.Int32
	// altered counts the answers to gslb-a not carried as they were (for
	// mitmReplay: those answering another request than their own).
	altered atomic.Int32
	// genuineDown counts mitmForge's answers carried as they were because
	// the peer itself saw bal-1 down (its own probe timed out on a busy
	// machine): a true view, signed, which gslb-a rightly counts.
	genuineDown atomic.Int32

	mu      sync.Mutex
	kept    *http.Response // mitmRecord's last answer to gslb-a
	body    []byte
	keptFor string // the signature of the request it answered
	conns   map[net.Conn]bool
}

func newMITM(t *testing.T) *mitm {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &mitm{t: t, ln: ln, conns: map[net.Conn]bool{}}
	go p.serve()
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		defer p.mu.Unlock()
		for c := range p.conns {
			c.Close()
		}
	})
	return p
}

// front announces the proxy in place of the node's admin URL, whose
// address it carries requests to.
func (p *mitm) front(admin string) string {
	target := strings.TrimPrefix(admin, "http://")
	p.target.Store(&target)
	return "http://" + p.ln.Addr().String()
}

func (p *mitm) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		p.conns[c] = true
		p.mu.Unlock()
		go p.carry(c)
	}
}

// carry reads each request on c, and writes the answer back.
func (p *mitm) carry(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		io.Copy(io.Discard, req.Body)
		reader, _, _ := strings.Cut(req.Header.Get(configs.HeaderPeer), " ")
		toA := reader == "gslb-a"
		mode := p.mode.Load()
		var resp *http.Response
		var body []byte
		if toA && mode == mitmReplay {
			p.mu.Lock()
			resp, body = p.kept, p.body
			// The same request sent again (within its second) has the
			// same MAC: its answer is that request's. Only answers
			// replayed for other requests count.
			if resp != nil && req.Header.Get(configs.HeaderPeer) != p.keptFor {
				p.altered.Add(1)
			}
			p.mu.Unlock()
		}
		if resp == nil {
			if resp, body, err = p.ask(req); err != nil {
				return
			}
			if toA {
				switch mode {
				case mitmForge:
					forged := bytes.ReplaceAll(body, []byte(`"ide.ringlb.test./east/bal-1": true`), []byte(`"ide.ringlb.test./east/bal-1": false`))
					if !bytes.Equal(forged, body) {
						p.altered.Add(1)
					} else if bytes.Contains(body, []byte(`"ide.ringlb.test./east/bal-1": false`)) {
						p.genuineDown.Add(1)
					}
					body = forged
				case mitmRecord, mitmReplay:
					p.mu.Lock()
					p.kept, p.body, p.keptFor = resp, body, req.Header.Get(configs.HeaderPeer)
					p.mu.Unlock()
				case mitmStrip:
					if resp.Header.Get(configs.HeaderPeerAnswer) != "" {
						p.altered.Add(1)
					}
					resp.Header.Del(configs.HeaderPeerAnswer)
				}
			}
		}
		out := &http.Response{StatusCode: resp.StatusCode, ProtoMajor: 1, ProtoMinor: 1, Header: resp.Header.Clone(),
			Body: io.NopCloser(bytes.NewReader(body)), ContentLength: int64(len(body))}
		out.Header.Del("Content-Length")
		if err := out.Write(c); err != nil {
			return
		}
	}
}

// ask sends req on to the node's real admin port and reads its answer.
func (p *mitm) ask(req *http.Request) (*http.Response, []byte, error) {
	up, err := net.Dial("tcp", *p.target.Load())
	if err != nil {
		return nil, nil, err
	}
	defer up.Close()
	req.Header.Set("Connection", "close")
	if err := req.Write(up); err != nil {
		return nil, nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(up), req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, body, err
}

const bal1Key = "ide.ringlb.test./east/bal-1"

// Three nameservers, each probing east's member bal-1 and seeing it up.
// Someone on the network between them — no key, a spoofed address on the
// LAN is enough — rewrites the views gslb-b and gslb-c send gslb-a to say
// bal-1 is down. The reads are signed, their answers were not: gslb-a
// counted 2 of 3 down, took a healthy member out of its answers and sent
// east's clients to west. A peer's answer now carries its signature over
// the request's MAC, the status and the body; a forged one is no view,
// and gslb-a decides by what it can believe.
func TestForgedPeerViewsMoveNoAnswer(t *testing.T) {
	east, west := newFakeBalancer(t), newFakeBalancer(t)
	kc := healthtest.New(t)
	cfg := keyedAgreeConfig(t, east.addr(), west.addr())
	a, ma := startKeyedNameserver(t, kc, "gslb-a", cfg, nil)
	pb, pc := newMITM(t), newMITM(t)
	startKeyedNameserver(t, kc, "gslb-b", cfg, pb.front)
	startKeyedNameserver(t, kc, "gslb-c", cfg, pc.front)
	healthtest.WaitMembers(t, ma, "gslb-a sees gslb-b and gslb-c", func(n []health.Node) bool { return len(n) == 3 })
	healthtest.WaitUntil(t, "gslb-a hears gslb-b's and gslb-c's views of bal-1", func() bool {
		_, why := a.agreed(memberKey{"ide.ringlb.test.", "east", "bal-1"}, true, "", true)
		return why == "down for 0 of 3 gslb nodes"
	})
	waitAnswer(t, a, "127.0.0.1", "192.0.2.1")
	before, refused := failovers(t, a, "east"), healthtest.AnswersRefused(t, ma)

	pb.mode.Store(mitmForge)
	pc.mode.Store(mitmForge)
	// Twice the rounds a peer unheard stays in the vote. Every peer sees
	// bal-1 up, so a down vote gslb-a counts from a peer is a forged view
	// believed: asked with its own probe taken as up, the vote must never
	// count one. (gslb-a's own probe may time out on a busy machine and move
	// east for a moment: that failover is its own, not the forger's. So may
	// a peer's: its true view, carried unaltered, is a down vote gslb-a
	// rightly counts — a look after one is not held against the forger.)
	var peerDown, genuine int
	var firstDown string
	healthtest.WaitUntil(t, "the man in the middle rewrites gslb-a's reads of both peers for several rounds", func() bool {
		carried := pb.genuineDown.Load() + pc.genuineDown.Load()
		if _, why := a.agreed(memberKey{"ide.ringlb.test.", "east", "bal-1"}, true, "", true); !strings.HasPrefix(why, "down for 0 ") && why != "" {
			if carried > 0 {
				genuine++
			} else if peerDown++; peerDown == 1 {
				firstDown = why
			}
		}
		return pb.altered.Load() >= 2*peerStaleRounds && pc.altered.Load() >= 2*peerStaleRounds
	})
	moved := failovers(t, a, "east") - before
	_, why := a.agreed(memberKey{"ide.ringlb.test.", "east", "bal-1"}, true, "", true)
	t.Logf("after %d and %d forged views: gslb-a failed east over %.0f times (its own probe's doing unless a peer's down vote was counted), bal-1 %q; %.0f answers refused; %d true down views of the peers carried (%d looks after one saw a down vote)",
		pb.altered.Load(), pc.altered.Load(), moved, why, healthtest.AnswersRefused(t, ma)-refused, pb.genuineDown.Load()+pc.genuineDown.Load(), genuine)
	if peerDown > 0 {
		t.Errorf("forged peer views counted as down votes for bal-1 (up for every nameserver) in %d looks: %q", peerDown, firstDown)
	}
	waitAnswer(t, a, "127.0.0.1", "192.0.2.1") // east's clients get east's member
	if healthtest.AnswersRefused(t, ma) == refused {
		t.Errorf("ringlb_peer_answers_refused_total did not count the forged answers")
	}
}

// The attacker cannot forge an answer, but it has seen genuine ones. bal-1
// was down for every nameserver and east failed over; it records the
// views gslb-b and gslb-c sent gslb-a then, and once bal-1 is back it
// answers each of gslb-a's reads with them, the peers not asked. The
// signatures on them are genuine, made for requests gslb-a sent earlier:
// bound to its request's MAC, an answer is refused for any other request,
// and gslb-a, alone with what it can believe, serves bal-1 again.
func TestReplayedPeerViewsKeepNoMemberOut(t *testing.T) {
	east, west := newFakeBalancer(t), newFakeBalancer(t)
	east.healthy.Store(false)
	kc := healthtest.New(t)
	cfg := keyedAgreeConfig(t, east.addr(), west.addr())
	a, ma := startKeyedNameserver(t, kc, "gslb-a", cfg, nil)
	pb, pc := newMITM(t), newMITM(t)
	pb.mode.Store(mitmRecord)
	pc.mode.Store(mitmRecord)
	startKeyedNameserver(t, kc, "gslb-b", cfg, pb.front)
	startKeyedNameserver(t, kc, "gslb-c", cfg, pc.front)
	healthtest.WaitMembers(t, ma, "gslb-a sees gslb-b and gslb-c", func(n []health.Node) bool { return len(n) == 3 })
	healthtest.WaitUntil(t, "gslb-a hears gslb-b and gslb-c see bal-1 down", func() bool {
		_, why := a.agreed(memberKey{"ide.ringlb.test.", "east", "bal-1"}, false, "", true)
		return strings.HasPrefix(why, "down for 3 of 3 gslb nodes")
	})
	waitAnswer(t, a, "127.0.0.1", "192.0.2.2")

	pb.mode.Store(mitmReplay)
	pc.mode.Store(mitmReplay)
	east.healthy.Store(true)
	healthtest.WaitUntil(t, "gslb-a's own probe sees bal-1 up again", func() bool { return a.state.Load().pools.localMonitors()[bal1Key] })
	healthtest.WaitUntil(t, "the man in the middle answers gslb-a's reads with old answers to other requests for several rounds", func() bool {
		return pb.altered.Load() >= 2*peerStaleRounds && pc.altered.Load() >= 2*peerStaleRounds
	})
	got := answerIPs(queryFrom(t, a, "udp", "127.0.0.1", "ide.ringlb.test.", 1, nil))
	_, why := a.agreed(memberKey{"ide.ringlb.test.", "east", "bal-1"}, true, "", true)
	t.Logf("after %d and %d replayed views: gslb-a answers east's clients %s, bal-1 %q", pb.altered.Load(), pc.altered.Load(), got, why)
	if got != "192.0.2.1" {
		t.Errorf("replayed peer views kept bal-1 out of gslb-a's answers: east's clients get %s (bal-1 is up for every nameserver)", got)
	}
}

// A rolling upgrade: gslb-b runs an earlier release, which signs no
// answer (the man in the middle strips the signature, as such a node
// sends none) and announces peer_signing below PeerSigningAnswer. gslb-a
// reads its view as before: gslb-a's own path to bal-1 is broken, gslb-b
// sees it up, a tie, and bal-1 is served. Once gslb-b announces
// PeerSigningAnswer, an unsigned answer from it is no view: gslb-a,
// alone, fails east over.
func TestPeerOfAnEarlierReleaseIsReadUnsigned(t *testing.T) {
	east, west := newFakeBalancer(t), newFakeBalancer(t)
	kc := healthtest.New(t)
	a, ma := startKeyedNameserver(t, kc, "gslb-a", keyedAgreeConfig(t, closedAddr(t), west.addr()), nil)
	pb := newMITM(t)
	pb.mode.Store(mitmStrip)
	_, mb := startKeyedNameserver(t, kc, "gslb-b", keyedAgreeConfig(t, east.addr(), west.addr()), pb.front)
	announce := func(level int) { healthtest.AnnouncePeerSigning(t, mb, ma, level) }
	announce(health.PeerSigningForwarded)
	healthtest.WaitUntil(t, "gslb-a hears gslb-b's unsigned view", func() bool {
		_, why := a.agreed(memberKey{"ide.ringlb.test.", "east", "bal-1"}, false, "broken path", true)
		return strings.HasPrefix(why, "down for 1 of 2 gslb nodes")
	})
	start := pb.altered.Load()
	healthtest.WaitUntil(t, "gslb-a reads gslb-b's unsigned answers for several rounds", func() bool {
		return pb.altered.Load() >= start+2*peerStaleRounds
	})
	_, heard := a.peers.Load().reports["gslb-b"]
	got := answerIPs(queryFrom(t, a, "udp", "127.0.0.1", "ide.ringlb.test.", 1, nil))
	t.Logf("gslb-b announcing %d: %d unsigned answers, heard %v, gslb-a answers east's clients %s", health.PeerSigningForwarded, pb.altered.Load(), heard, got)
	if !heard || got != "192.0.2.1" {
		t.Errorf("gslb-a did not read an earlier release's peer: heard %v, east's clients get %s", heard, got)
	}

	refused := healthtest.AnswersRefused(t, ma)
	announce(health.PeerSigningAnswer)
	healthtest.WaitUntil(t, "gslb-a drops gslb-b's unsigned view", func() bool {
		_, heard := a.peers.Load().reports["gslb-b"]
		return !heard
	})
	waitAnswer(t, a, "127.0.0.1", "192.0.2.2")
	t.Logf("gslb-b announcing %d: %.0f unsigned answers refused", health.PeerSigningAnswer, healthtest.AnswersRefused(t, ma)-refused)
	if healthtest.AnswersRefused(t, ma) == refused {
		t.Errorf("ringlb_peer_answers_refused_total did not count the unsigned answers")
	}
}
