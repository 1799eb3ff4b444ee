//go:build linux

package balancer

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ringlb/ringlb/configs"
	"github.com/ringlb/ringlb/health/healthtest"
)

// TestFramingAgainstHAProxy is a differential test of the balancer's request
// framing against HAProxy 2.6 (compareFraming), with HAProxy's defaults'
// framing rules.
func TestFramingAgainstHAProxy(t *testing.T) {
	t.Parallel()
	compareFraming(t, framingPeer{name: "HAProxy", program: "haproxy", pkg: "haproxy", start: startDiffHAProxy, lax: haproxyLax})
}

// TestFramingAgainstNginx is the differential test of the balancer's
// request framing against nginx 1.22 (compareFraming), nginx configured as
// an operator of a WebSocket front does (startDiffNginx).
func TestFramingAgainstNginx(t *testing.T) {
	t.Parallel()
	compareFraming(t, framingPeer{name: "nginx", program: "nginx", pkg: "nginx-light", start: startDiffNginx, lax: nginxLax})
}

// framingPeer is a front the balancer's framing is compared with.
type framingPeer struct {
	name    string // as the log names it
	program string // its binary: without it the test skips
	pkg     string // Debian's package of it, for the skip's message
	// start runs the peer's binary bin in front of backend for the rest
	// of the test, closing each backend connection after its answer, and
	// returns the address it serves.
	start func(t *testing.T, bin, backend string) string
	// lax: the corpus's cases the peer refuses for what is not about
	// where a request ends, with why the balancer forwarding them cannot
	// desync.
	lax map[string]string
	// workers: how many pairs of fronts (a peer and a balancer)
	// compareResponses and compareUpgrades share the corpus among, for a
	// peer that waits on its backend case after case (diffShards); 0: one.
	workers int
}

// compareFraming is a differential test of the balancer's request framing
// against peer, as a reviewer hunting request smuggling and desync would
// write it. The same corpus of raw requests goes to the peer and to a
// balancer (one static edge), both in front of the same recording backend,
// each request alone and followed by an innocent pipelined `GET /second`.
// What is compared is safety, not status codes:
//
//   - every request the backend parsed through the balancer is one the
//     balancer relayed the backend's answer to (no request it did not
//     account for);
//   - the balancer forwards no request the peer did not (a body, or part of
//     one, arriving as a request of its own: the corpus's bodies hold a
//     `GET /smuggled` request);
//   - the balancer forwards no body holding the client's `GET /second`
//     where the peer did not (an innocent request swallowed into a body);
//   - a request the peer refuses as ambiguous the balancer refuses too.
//
// Where the balancer is stricter than the peer, or answers a refusal with
// another status, the test logs it (go test -v) and asserts nothing.
func compareFraming(t *testing.T, peer framingPeer) {
	bin := findSbinBinary(peer.program)
	if bin == "" {
		t.Skipf("%s not installed (apt-get install -y %s): no differential run", peer.program, peer.pkg)
	}
	backend := startDiffBackend(t)
	peerAddr := peer.start(t, bin, backend.listen(t, "peer"))
	cb := startDiffBalancer(t, backend.listen(t, "ringlb"))
	settlePeer := func(t *testing.T) []seenRequest { return backend.settle(t, "peer", nil) }
	settleRinglb := func(t *testing.T) []seenRequest { return backend.settle(t, "ringlb", cb.bal.edges.closeIdle) }
	// Each front answers before the corpus starts.
	for _, f := range []struct {
		addr   string
		settle func(*testing.T) []seenRequest
	}{{peerAddr, settlePeer}, {cb.addr, settleRinglb}} {
		if got := sendRaw(t, f.addr, diffSecond); len(got.answers) != 1 || got.answers[0].status != 200 {
			t.Fatalf("%s does not answer: %+v", f.addr, got)
		}
		f.settle(t)
	}

	var refusedByBoth, stricter, aborted, laxer, otherDiff int
	for _, c := range framingCorpus() {
		for _, pipelined := range []bool{false, true} {
			name := c.name
			payload := c.req
			if pipelined {
				name += "+second"
				payload += diffSecond
			}
			t.Run(name, func(t *testing.T) {
				p := sendRaw(t, peerAddr, payload)
				p.backend = settlePeer(t)
				r := sendRaw(t, cb.addr, payload)
				r.backend = settleRinglb(t)
				t.Logf("%-8s %s", peer.name+":", p)
				t.Logf("%-8s %s", "ringlb:", r)

				// The balancer accounts for every request it forwarded.
				if answered, parsed := r.answeredSeqs(), r.parsedSeqs(); fmt.Sprint(answered) != fmt.Sprint(parsed) {
					t.Errorf("the backend parsed requests %v through the balancer, which relayed answers to %v", parsed, answered)
				}
				// No request the peer did not forward; no /second in a
				// body where the peer kept it out of one.
				// (Unless, as RFC 9112 reads the bytes, no body
				// comes and what follows the head is the next request.)
				if r.smuggledForwarded() && !p.smuggledForwarded() && !framingNext[c.name] {
					t.Errorf("desync: the balancer forwarded the body's GET /smuggled as a request, %s did not", peer.name)
				}
				if r.secondInBody() && !p.secondInBody() {
					t.Errorf("desync: the balancer forwarded the client's GET /second inside a body")
				}
				// A request the peer refuses is not forwarded by the balancer.
				pFirst, rFirst := p.firstForwarded(), r.firstForwarded()
				switch {
				case !pFirst && !rFirst:
					refusedByBoth++
					if p.firstStatus() != r.firstStatus() {
						t.Logf("DIFF both refuse: %s %d, ringlb %d", peer.name, p.firstStatus(), r.firstStatus())
					}
				case pFirst && !rFirst:
					stricter++
					t.Logf("DIFF ringlb stricter: %s forwarded, ringlb answered %d", peer.name, r.firstStatus())
				case !pFirst && rFirst && !r.firstComplete():
					// The balancer streams a body: a chunked one
					// found broken is cut off and its request
					// aborted, never complete at the backend.
					aborted++
					t.Logf("DIFF %s refused it (%d), ringlb forwarded its head, aborted it and answered %d", peer.name, p.firstStatus(), r.firstStatus())
				case !pFirst && rFirst && peer.lax[c.name] != "":
					laxer++
					t.Logf("DIFF ringlb laxer, harmless: %s refused it (%d), ringlb forwarded it: %s", peer.name, p.firstStatus(), peer.lax[c.name])
				case !pFirst && rFirst:
					laxer++
					t.Errorf("ringlb laxer: %s refused it (%d), the balancer forwarded it", peer.name, p.firstStatus())
				case p.firstComplete() && !r.firstComplete():
					// A body the balancer found over a limit of
					// its own as it streamed (chunk extensions).
					stricter++
					t.Logf("DIFF ringlb stricter: %s forwarded it whole, ringlb aborted it and answered %d", peer.name, r.firstStatus())
				default:
					if p.firstBody() != r.firstBody() {
						otherDiff++
						t.Errorf("both forwarded the request with different bodies: %s %q, ringlb %q", peer.name, p.firstBody(), r.firstBody())
					}
				}
			})
		}
	}
	t.Logf("%d cases: %d refused by both, %d forwarded by %s and refused by ringlb, %d refused by %s and aborted by ringlb, %d refused by %s only, %d forwarded differently",
		2*len(framingCorpus()), refusedByBoth, stricter, peer.name, aborted, peer.name, laxer, peer.name, otherDiff)
}

// diffWorkers is how many pairs of fronts (a peer and a balancer) a
// differential test whose peer waits on its backend goes through its
// corpus with (framingPeer.workers).
const diffWorkers = 4

// diffShards runs job(k, j) for every j below jobs, job j on worker
// k = j % workers, the workers at once, each its jobs in order; it
// returns once all have. (Subtests run from several goroutines at once:
// t.Run allows it, and -parallel does not bound it.)
func diffShards(workers, jobs int, job func(k, j int)) {
	var wg sync.WaitGroup
	for k := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := k; j < jobs; j += workers {
				job(k, j)
			}
		}()
	}
	wg.Wait()
}

// startDiffBalancer starts a balancer whose one backend is the static edge
// at edgeAddr, as the differential tests compare it with a peer, and
// returns once it routes.
func startDiffBalancer(t *testing.T, edgeAddr string) *clusterBalancer {
	t.Helper()
	one := 1
	mon := &configs.Monitor{Type: configs.MonitorTCP, Interval: configs.Duration(time.Hour), Timeout: configs.Duration(time.Second), Rise: 1, Fall: 1}
	_, port, _ := net.SplitHostPort(edgeAddr)
	mon.Port, _ = strconv.Atoi(port)
	cb := startClusterBalancer(t, healthtest.New(t), "bal-1", configs.Balancer{
		Edges:        []configs.StaticEdge{{Name: "app", URL: "http://" + edgeAddr, Weight: &one, Monitor: mon}},
		SessionTable: configs.SessionTable{StartupWait: configs.Duration(time.Millisecond)},
	})
	waitRing(t, cb, "app")
	healthtest.WaitUntil(t, "table ready", cb.bal.table.routable)
	return cb
}

const (
	// diffSecond is the innocent request pipelined after each case's.
	diffSecond = "GET /second HTTP/1.1\r\nHost: h\r\n\r\n"
	// diffSmuggled is what bodies hold: a request, should a front take
	// the body, or a part of it, for the next request.
	diffSmuggled = "GET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n"
	diffPost     = "POST /first HTTP/1.1\r\nHost: h\r\n"
	diffGet      = "GET /first HTTP/1.1\r\nHost: h\r\n"
	diffUpgrade  = "GET /first HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
)

type framingCase struct{ name, req string }

// framingNext are the cases without a body as RFC 9112 reads them: the
// bytes after the head (GET /smuggled) are the next request.
var framingNext = map[string]bool{
	"Connection close then more bytes":        true,
	"HTTP/1.0 body without length":            true,
	"HTTP/1.0 keep-alive body without length": true,
	"POST without length":                     true,
	"upgrade HTTP/1.0":                        true,
	"upgrade refused then a request":          true,
	"upgrade h2c refused then a request":      true,
	"HEAD without length then more bytes":     true,
}

// haproxyLax are the cases HAProxy refuses for what is not about where a
// request ends, and why the balancer forwarding them cannot desync.
var haproxyLax = map[string]string{
	"non-ASCII in the target":  "the target is one token between two spaces whatever its bytes",
	"absolute-form other host": "the target's host wins over Host (RFC 9112 3.2.2); goes as origin form with Host: other",
	"120 headers":              "HAProxy's tune.http.maxhdr (101); the balancer bounds a head by bytes (8 KiB)",
}

// nginxLax are the cases nginx refuses for what is not about where a
// request ends, and why the balancer forwarding them cannot desync.
var nginxLax = map[string]string{
	"lowercase method":      "a method is a case-sensitive token (RFC 9110 9.1) that framing does not depend on; nginx's parser takes upper-case letters only",
	"asterisk-form OPTIONS": "the asterisk form is OPTIONS' own (RFC 9112 3.2.4) and says nothing of a body; nginx's parser takes origin and absolute form only",
}

// framingCorpus is the requests each front gets, each as the client means
// it to end (the pipelined GET /second follows it).
func framingCorpus() []framingCase {
	cl := func(head, body string) string {
		return head + fmt.Sprintf("Content-Length: %d\r\n\r\n", len(body)) + body
	}
	// clte: a Transfer-Encoding variant with a Content-Length covering a
	// body that, read as chunked, ends at once and leaves the smuggled
	// request behind.
	clte := func(te string) string {
		body := "0\r\n\r\n" + diffSmuggled
		return diffPost + te + fmt.Sprintf("Content-Length: %d\r\n\r\n", len(body)) + body
	}
	// teOnly: a Transfer-Encoding variant alone, its chunked body holding
	// the smuggled request.
	teOnly := func(te string) string { return diffPost + te + "\r\n" + chunk(diffSmuggled) + "0\r\n\r\n" }
	long, many := longHeader, manyHeaders
	cs := []framingCase{
		// Baselines.
		{"get", diffGet + "\r\n"},
		{"post content-length", cl(diffPost, diffSmuggled)},
		{"post chunked", diffPost + "Transfer-Encoding: chunked\r\n\r\n" + chunk(diffSmuggled) + "0\r\n\r\n"},

		// Content-Length with Transfer-Encoding.
		{"CL.TE", clte("Transfer-Encoding: chunked\r\n")},
		{"TE.CL", diffPost + "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n" + chunk(diffSmuggled) + "0\r\n\r\n"},
		{"CL.TE chunked, identity", clte("Transfer-Encoding: chunked, identity\r\n")},
		{"CL.TE space before colon", clte("Transfer-Encoding : chunked\r\n")},
		{"CL.TE folded", clte("Transfer-Encoding:\r\n chunked\r\n")},
		{"CL.TE xchunked", clte("Transfer-Encoding: xchunked\r\n")},

		// Transfer-Encoding spellings.
		{"TE chunked, identity", teOnly("Transfer-Encoding: chunked, identity\r\n")},
		{"TE identity, chunked", teOnly("Transfer-Encoding: identity, chunked\r\n")},
		{"TE identity", teOnly("Transfer-Encoding: identity\r\n")},
		{"TE leading space", teOnly("Transfer-Encoding:  chunked\r\n")},
		{"TE CHUNKED", teOnly("Transfer-Encoding: CHUNKED\r\n")},
		{"TE xchunked", teOnly("Transfer-Encoding: xchunked\r\n")},
		{"TE chunkedx", teOnly("Transfer-Encoding: chunkedx\r\n")},
		{"TE tab before value", teOnly("Transfer-Encoding:\tchunked\r\n")},
		{"TE tab after value", teOnly("Transfer-Encoding: chunked\t\r\n")},
		{"TE vertical tab", teOnly("Transfer-Encoding: \vchunked\r\n")},
		{"TE two headers", teOnly("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n")},
		{"TE two headers, second identity", teOnly("Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n")},
		{"TE chunked, chunked", teOnly("Transfer-Encoding: chunked, chunked\r\n")},
		{"TE gzip, chunked", teOnly("Transfer-Encoding: gzip, chunked\r\n")},
		{"TE empty", teOnly("Transfer-Encoding: \r\n")},
		{"TE space before colon", teOnly("Transfer-Encoding : chunked\r\n")},
		{"TE folded", teOnly("Transfer-Encoding:\r\n chunked\r\n")},
		{"TE on HTTP/1.0", strings.Replace(teOnly("Transfer-Encoding: chunked\r\n"), "HTTP/1.1", "HTTP/1.0", 1)},

		// Content-Length spellings.
		{"CL duplicate same", diffPost + "Content-Length: 2\r\nContent-Length: 2\r\n\r\n{}"},
		{"CL duplicate differing", diffPost + fmt.Sprintf("Content-Length: 2\r\nContent-Length: %d\r\n\r\n{}", 2+len(diffSmuggled)) + diffSmuggled},
		{"CL list same", diffPost + "Content-Length: 2, 2\r\n\r\n{}"},
		{"CL list same no space", diffPost + "Content-Length: 2,2\r\n\r\n{}"},
		{"CL list differing", diffPost + fmt.Sprintf("Content-Length: 2, %d\r\n\r\n{}", 2+len(diffSmuggled)) + diffSmuggled},
		{"CL plus", diffPost + "Content-Length: +2\r\n\r\n{}"},
		{"CL minus", diffPost + "Content-Length: -2\r\n\r\n{}"},
		{"CL leading zeros", diffPost + "Content-Length: 0002\r\n\r\n{}"},
		{"CL spaces around", diffPost + "Content-Length:   2   \r\n\r\n{}"},
		{"CL space inside", diffPost + "Content-Length: 1 2\r\n\r\n{}" + strings.Repeat("x", 10)},
		{"CL 20 digits", diffPost + "Content-Length: 00000000000000000002\r\n\r\n{}"},
		{"CL hex", diffPost + "Content-Length: 0x2\r\n\r\n{}"},
		{"CL empty", diffPost + "Content-Length: \r\n\r\n"},
		{"CL overflow", diffPost + "Content-Length: 18446744073709551617\r\n\r\n{}"},
		{"CL space before colon", diffPost + "Content-Length : 2\r\n\r\n{}"},

		// Chunk sizes.
		{"chunk extension", diffPost + "Transfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\n\r\n"},
		{"chunk extension quoted", diffPost + "Transfer-Encoding: chunked\r\n\r\n5;ext=\"a\\\"b\"\r\nhello\r\n0\r\n\r\n"},
		{"chunk extension space", diffPost + "Transfer-Encoding: chunked\r\n\r\n5 ;ext\r\nhello\r\n0\r\n\r\n"},
		{"chunk size leading zeros", diffPost + "Transfer-Encoding: chunked\r\n\r\n0005\r\nhello\r\n0000\r\n\r\n"},
		{"chunk size overflow", diffPost + "Transfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n" + diffSmuggled + "\r\n0\r\n\r\n"},
		{"chunk size 20 digits", diffPost + "Transfer-Encoding: chunked\r\n\r\n00000000000000000005\r\nhello\r\n0\r\n\r\n"},
		{"last chunk with an extension", diffPost + "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0;x=y\r\n\r\n"},
		{"chunk size uppercase hex", diffPost + "Transfer-Encoding: chunked\r\n\r\nA\r\nhellohello\r\n0\r\n\r\n"},
		{"chunk size 0x", diffPost + "Transfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n"},
		{"chunk size minus", diffPost + "Transfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n"},
		{"chunk size trailing space", diffPost + "Transfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n"},
		{"chunk data longer than size", diffPost + "Transfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n"},
		{"chunk framing bare LF", diffPost + "Transfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n" + diffSmuggled},
		{"chunk data end bare CR", diffPost + "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r0\r\n\r\n"},
		{"last chunk without final CRLF", diffPost + "Transfer-Encoding: chunked\r\n\r\n0\r\n"},

		// Line ends.
		{"bare LF in headers", diffPost + "X-A: b\nContent-Length: 2\r\n\r\n{}"},
		{"bare LF everywhere", "POST /first HTTP/1.1\nHost: h\nContent-Length: 2\n\n{}"},
		{"bare LF ending the request line", "POST /first HTTP/1.1\nHost: h\r\nContent-Length: 2\r\n\r\n{}"},
		{"bare CR in a header", diffPost + "X-A: b\rContent-Length: 40\r\nContent-Length: 2\r\n\r\n{}"},
		{"bare CR ending a header", diffPost + "X-A: b\r\rContent-Length: 2\r\n\r\n{}"},
		{"bare CR in the request line", "POST /first\rX HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n{}"},
		{"leading empty line", "\r\n" + cl(diffPost, "{}")},

		// Folding and whitespace.
		{"obs-fold", diffPost + "X-A: b\r\n c\r\nContent-Length: 2\r\n\r\n{}"},
		{"obs-fold tab", diffPost + "X-A: b\r\n\tc\r\nContent-Length: 2\r\n\r\n{}"},
		{"obs-fold hiding CL", diffPost + "X-A: b\r\n Content-Length: 40\r\nContent-Length: 2\r\n\r\n{}"},
		{"first header folded", diffPost[:len(diffPost)-len("Host: h\r\n")] + " X-A: b\r\nHost: h\r\nContent-Length: 2\r\n\r\n{}"},
		{"tab before colon", diffPost + "Content-Length\t: 2\r\n\r\n{}"},
		{"space in a header name", diffPost + "X A: b\r\nContent-Length: 2\r\n\r\n{}"},
		{"header without colon", diffPost + "X-A b\r\nContent-Length: 2\r\n\r\n{}"},
		{"empty header name", diffPost + ": b\r\nContent-Length: 2\r\n\r\n{}"},

		// Control bytes.
		{"NUL in a header value", diffGet + "X-A: a\x00b\r\n\r\n"},
		{"SOH in a header value", diffGet + "X-A: a\x01b\r\n\r\n"},
		{"DEL in a header value", diffGet + "X-A: a\x7fb\r\n\r\n"},
		{"ESC in a header value", diffGet + "X-A: a\x1bb\r\n\r\n"},
		{"NUL in Content-Length", diffPost + "Content-Length: 2\x00\r\n\r\n{}"},
		{"NUL in Transfer-Encoding", teOnly("Transfer-Encoding: chunked\x00\r\n")},
		{"NUL in a header name", diffGet + "X-\x00A: b\r\n\r\n"},
		{"NUL in the target", "GET /fi\x00rst HTTP/1.1\r\nHost: h\r\n\r\n"},
		{"SOH in the target", "GET /fi\x01rst HTTP/1.1\r\nHost: h\r\n\r\n"},
		{"DEL in the target", "GET /fi\x7frst HTTP/1.1\r\nHost: h\r\n\r\n"},
		{"tab in the target", "GET /fi\trst HTTP/1.1\r\nHost: h\r\n\r\n"},
		{"space in the target", "GET /fi rst HTTP/1.1\r\nHost: h\r\n\r\n"},
		{"non-ASCII in the target", "GET /fi\xc3\xa9rst HTTP/1.1\r\nHost: h\r\n\r\n"},
		{"two spaces after the method", "GET  /first HTTP/1.1\r\nHost: h\r\n\r\n"},
		{"unknown version", "GET /first HTTP/1.2\r\nHost: h\r\n\r\n"},
		{"HTTP/2.0 version", "GET /first HTTP/2.0\r\nHost: h\r\n\r\n"},
		{"HTTP/0.9 version", cl("POST /first HTTP/0.9\r\nHost: h\r\n", diffSmuggled)},
		{"HTTP/0.9 version GET", "GET /first HTTP/0.9\r\nHost: h\r\n\r\n"},
		{"HTTP/1.9 version with a body", cl("POST /first HTTP/1.9\r\nHost: h\r\n", diffSmuggled)},
		{"HTTP/9.9 version", "GET /first HTTP/9.9\r\nHost: h\r\n\r\n"},
		{"no version", "GET /first\r\nHost: h\r\n\r\n"},
		{"lowercase version", "GET /first http/1.1\r\nHost: h\r\n\r\n"},
		{"lowercase method", "get /first HTTP/1.1\r\nHost: h\r\n\r\n"},
		{"CONNECT", "CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n"},
		{"lowercase CONNECT", "connect h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n"},
		{"TRACE", "TRACE /first HTTP/1.1\r\nHost: h\r\n\r\n"},
		{"lowercase TRACE", "trace /first HTTP/1.1\r\nHost: h\r\n\r\n"},
		{"mixed-case TRACE", "Trace /first HTTP/1.1\r\nHost: h\r\n\r\n"},

		// Targets.
		{"absolute-form", "GET http://h/first HTTP/1.1\r\nHost: h\r\n\r\n"},
		{"absolute-form other host", "GET http://other/first HTTP/1.1\r\nHost: h\r\n\r\n"},
		{"absolute-form userinfo", "GET http://u@other/first HTTP/1.1\r\nHost: h\r\n\r\n"},
		{"absolute-form https", "GET https://h/first HTTP/1.1\r\nHost: h\r\n\r\n"},
		{"asterisk-form OPTIONS", "OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n"},
		{"authority-form GET", "GET h:80 HTTP/1.1\r\nHost: h\r\n\r\n"},
		{"two Host headers", "GET /first HTTP/1.1\r\nHost: h\r\nHost: other\r\n\r\n"},
		{"no Host on HTTP/1.1", "GET /first HTTP/1.1\r\n\r\n"},

		// Expect, Connection: close, HTTP/1.0, bodies on GET.
		{"Expect 100-continue", cl(diffPost+"Expect: 100-continue\r\n", diffSmuggled)},
		{"Expect 100-continue chunked", diffPost + "Expect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk(diffSmuggled) + "0\r\n\r\n"},
		{"Expect unknown", cl(diffPost+"Expect: 200-ok\r\n", "{}")},
		{"Connection close then more bytes", diffGet + "Connection: close\r\n\r\n" + diffSmuggled},
		{"Connection close post", cl(diffPost+"Connection: close\r\n", "{}") + diffSmuggled},
		{"HTTP/1.0 body without length", "POST /first HTTP/1.0\r\nHost: h\r\n\r\n" + diffSmuggled},
		{"HTTP/1.0 keep-alive body without length", "POST /first HTTP/1.0\r\nHost: h\r\nConnection: keep-alive\r\n\r\n" + diffSmuggled},
		{"HTTP/1.0 with length", cl("POST /first HTTP/1.0\r\nHost: h\r\nConnection: keep-alive\r\n", diffSmuggled)},
		{"GET with a body", cl(diffGet, diffSmuggled)},
		{"GET with a chunked body", diffGet + "Transfer-Encoding: chunked\r\n\r\n" + chunk(diffSmuggled) + "0\r\n\r\n"},
		{"POST without length", diffPost + "\r\n" + diffSmuggled},

		// Upgrades.
		{"upgrade", diffUpgrade + "\r\n"},
		{"upgrade with a body", cl(diffUpgrade, diffSmuggled)},
		{"upgrade chunked", diffUpgrade + "Transfer-Encoding: chunked\r\n\r\n" + chunk(diffSmuggled) + "0\r\n\r\n"},
		{"upgrade content-length 0", cl(diffUpgrade, "")},
		{"upgrade h2c with a body", cl(diffGet+"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n", diffSmuggled)},
		{"upgrade without Connection with a body", cl(diffGet+"Upgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n", diffSmuggled)},
		{"upgrade POST with a body", cl(strings.Replace(diffUpgrade, "GET", "POST", 1), diffSmuggled)},
		{"upgrade HTTP/1.0", strings.Replace(diffUpgrade, "HTTP/1.1", "HTTP/1.0", 1) + "\r\n" + diffSmuggled},

		// Long heads: the balancer's limit is 8 KiB, HAProxy's 16 KiB.
		{"header line 4 KiB", diffGet + long(4000) + "\r\n"},
		{"header line 8 KiB", diffGet + long(8100) + "\r\n"},
		{"header line 12 KiB", diffGet + long(12000) + "\r\n"},
		{"header line 17 KiB", diffGet + long(17000) + "\r\n"},
		{"header line 12 KiB with a body", cl(diffPost+long(12000), diffSmuggled)},
		{"100 headers", diffGet + many(99) + "\r\n"},
		{"120 headers", diffGet + many(120) + "\r\n"},
		{"target 12 KiB", "GET /first?" + strings.Repeat("a", 12000) + " HTTP/1.1\r\nHost: h\r\n\r\n"},

		// Trailers.
		{"trailer", diffPost + "Transfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n" + chunk("{}") + "0\r\nX-T: 1\r\n\r\n"},
		{"trailer Content-Length", diffPost + "Transfer-Encoding: chunked\r\n\r\n" + chunk("{}") + "0\r\nContent-Length: 40\r\n\r\n"},
		{"trailer Transfer-Encoding", diffPost + "Transfer-Encoding: chunked\r\n\r\n" + chunk("{}") + "0\r\nTransfer-Encoding: chunked\r\n\r\n"},
		{"trailer bare LF", diffPost + "Transfer-Encoding: chunked\r\n\r\n" + chunk("{}") + "0\r\nX-T: 1\n\r\n"},
		{"trailer folded", diffPost + "Transfer-Encoding: chunked\r\n\r\n" + chunk("{}") + "0\r\nX-T: 1\r\n 2\r\n\r\n"},
		{"trailer NUL", diffPost + "Transfer-Encoding: chunked\r\n\r\n" + chunk("{}") + "0\r\nX-T: \x00\r\n\r\n"},
		{"trailer without colon", diffPost + "Transfer-Encoding: chunked\r\n\r\n" + chunk("{}") + "0\r\nX-T\r\n\r\n"},
		{"trailer that is a request line", diffPost + "Transfer-Encoding: chunked\r\n\r\n" + chunk("{}") + "0\r\nGET /smuggled HTTP/1.1\r\n\r\n"},

		// What nginx's parsing history makes worth a case (RFC 9112
		// sections 2.2, 3.2, 5, 6, 7 and 9.6).
		// Chunk sizes past 64 bits: one that wraps to 5, one that turns
		// negative in a signed 64-bit integer, the largest that does not.
		{"chunk size wrapping to 5", diffPost + "Transfer-Encoding: chunked\r\n\r\n10000000000000005\r\nhello\r\n0\r\n\r\n"},
		{"chunk size 2^63", diffPost + "Transfer-Encoding: chunked\r\n\r\n8000000000000000\r\n" + diffSmuggled + "\r\n0\r\n\r\n"},
		{"chunk size 2^63-1", diffPost + "Transfer-Encoding: chunked\r\n\r\n7fffffffffffffff\r\n" + diffSmuggled + "\r\n0\r\n\r\n"},
		{"chunk size 16 digits", diffPost + "Transfer-Encoding: chunked\r\n\r\n0000000000000005\r\nhello\r\n0\r\n\r\n"},
		// Transfer-Encoding lists, parameters, HTTP/1.0.
		{"TE empty element, chunked", teOnly("Transfer-Encoding: , chunked\r\n")},
		{"TE chunked, empty element", teOnly("Transfer-Encoding: chunked,\r\n")},
		{"TE chunked, gzip", teOnly("Transfer-Encoding: chunked, gzip\r\n")},
		{"TE chunked with a parameter", teOnly("Transfer-Encoding: chunked;q=1\r\n")},
		{"TE two headers, gzip then chunked", teOnly("Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n")},
		{"TE tab before colon", teOnly("Transfer-Encoding\t: chunked\r\n")},
		{"CL.TE on HTTP/1.0", strings.Replace(clte("Transfer-Encoding: chunked\r\n"), "HTTP/1.1", "HTTP/1.0", 1)},
		{"TE identity on HTTP/1.0", strings.Replace(teOnly("Transfer-Encoding: identity\r\n"), "HTTP/1.1", "HTTP/1.0", 1)},
		{"CL tab before value", diffPost + "Content-Length:\t2\r\n\r\n{}"},
		{"CL tab after value", diffPost + "Content-Length: 2\t\r\n\r\n{}"},
		// Bare LF in a chunked body's framing, one line at a time.
		{"chunk size line ended by LF", diffPost + "Transfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n"},
		{"chunk data ended by LF", diffPost + "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\n0\r\n\r\n"},
		{"last chunk ended by LF", diffPost + "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\n\r\n"},
		{"chunked body ended by LF", diffPost + "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\n"},
		{"chunk extension ended by LF", diffPost + "Transfer-Encoding: chunked\r\n\r\n5;a=b\nhello\r\n0\r\n\r\n"},
		{"chunk extension with a bare CR", diffPost + "Transfer-Encoding: chunked\r\n\r\n5;a\rb\r\nhello\r\n0\r\n\r\n"},
		// Long chunk extensions: one, and many small ones.
		{"chunk extension 4 KiB", diffPost + "Transfer-Encoding: chunked\r\n\r\n5;" + strings.Repeat("a", 4000) + "\r\nhello\r\n0\r\n\r\n"},
		{"chunk extension 20 KiB", diffPost + "Transfer-Encoding: chunked\r\n\r\n5;" + strings.Repeat("a", 20000) + "\r\nhello\r\n0\r\n\r\n"},
		{"last chunk extension 20 KiB", diffPost + "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0;" + strings.Repeat("a", 20000) + "\r\n\r\n"},
		{"2000 chunks with extensions", diffPost + "Transfer-Encoding: chunked\r\n\r\n" + strings.Repeat("1;"+strings.Repeat("e", 30)+"\r\nx\r\n", 2000) + "0\r\n\r\n"},
		// Control bytes in names and in framing names.
		{"CR in a header name", diffGet + "X-\rA: b\r\n\r\n"},
		{"SOH in a header name", diffGet + "X-\x01A: b\r\n\r\n"},
		{"DEL in a header name", diffGet + "X-\x7fA: b\r\n\r\n"},
		{"non-ASCII in a header name", diffGet + "X-\xc3\xa9: b\r\n\r\n"},
		{"NUL inside Transfer-Encoding's name", clte("Transfer-\x00Encoding: chunked\r\n")},
		{"NUL ending Transfer-Encoding's name", clte("Transfer-Encoding\x00: chunked\r\n")},
		{"NUL in Host", "GET /first HTTP/1.1\r\nHost: h\x00other\r\n\r\n"},
		{"tab in a header value", diffGet + "X-A: a\tb\r\n\r\n"},
		// Blanks before the colon, Host.
		{"space before Host's colon", "GET /first HTTP/1.1\r\nHost : h\r\n\r\n"},
		{"space before another header's colon", diffGet + "X-A : b\r\n\r\n"},
		{"two Host headers alike", "GET /first HTTP/1.1\r\nHost: h\r\nHost: h\r\n\r\n"},
		{"two Host headers on HTTP/1.0", "GET /first HTTP/1.0\r\nHost: h\r\nHost: other\r\n\r\n"},
		{"empty Host", "GET /first HTTP/1.1\r\nHost: \r\n\r\n"},
		{"Host with a path", "GET /first HTTP/1.1\r\nHost: h/other\r\n\r\n"},
		{"Host with userinfo", "GET /first HTTP/1.1\r\nHost: u@h\r\n\r\n"},
		{"Host with a space", "GET /first HTTP/1.1\r\nHost: h other\r\n\r\n"},
		// Userinfo in an absolute-form target (RFC 9110 4.2.4: an error).
		{"absolute-form userinfo same host", "GET http://u:p@h/first HTTP/1.1\r\nHost: h\r\n\r\n"},
		{"absolute-form empty userinfo", "GET http://@h/first HTTP/1.1\r\nHost: h\r\n\r\n"},
		{"absolute-form host then @other", "GET http://h@other/first HTTP/1.1\r\nHost: h\r\n\r\n"},
		{"absolute-form backslash then @other", "GET http://h\\@other/first HTTP/1.1\r\nHost: h\r\n\r\n"},
		{"upgrade absolute-form userinfo", strings.Replace(diffUpgrade, "/first", "http://u@other/first", 1) + "\r\n"},
		// Expect with an upgrade.
		{"upgrade Expect 100-continue", diffUpgrade + "Expect: 100-continue\r\n\r\n"},
		{"upgrade Expect 100-continue with a body", cl(diffUpgrade+"Expect: 100-continue\r\n", diffSmuggled)},
		// An upgrade the backend refuses (its 200): the connection stays
		// HTTP/1.1, and what follows is the next request.
		{"upgrade refused then a request", diffUpgrade + "\r\n" + diffSmuggled},
		{"upgrade h2c refused then a request", diffGet + "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n" + diffSmuggled},
		{"upgrade refused then a frame", diffUpgrade + "\r\n" + "\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"},
		// Connection: close, however written, ends the requests a server
		// takes from the connection (RFC 9112 9.6); so does HTTP/1.0
		// without keep-alive.
		{"Connection keep-alive, close then more bytes", diffGet + "Connection: keep-alive, close\r\n\r\n" + diffSmuggled},
		{"Connection close in a second line then more bytes", diffGet + "Connection: keep-alive\r\nConnection: close\r\n\r\n" + diffSmuggled},
		{"Connection CLOSE then more bytes", diffGet + "Connection: CLOSE\r\n\r\n" + diffSmuggled},
		{"HTTP/1.0 then more bytes", "GET /first HTTP/1.0\r\nHost: h\r\n\r\n" + diffSmuggled},
		// HEAD: its answer has no body, its request may.
		{"HEAD", "HEAD /first HTTP/1.1\r\nHost: h\r\n\r\n"},
		{"HEAD with a body", cl("HEAD /first HTTP/1.1\r\nHost: h\r\n", diffSmuggled)},
		{"HEAD with a chunked body", "HEAD /first HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk(diffSmuggled) + "0\r\n\r\n"},
		{"HEAD without length then more bytes", "HEAD /first HTTP/1.1\r\nHost: h\r\n\r\n" + diffSmuggled},
	}
	return cs
}

// seenRequest is one request the backend read.
type seenRequest struct {
	seq      int    // the X-Seq its answer carried; 0 when unanswered
	line     string // its request line
	head     string // its header block, raw
	body     string // its body, chunks decoded
	complete bool   // read to its end (and answered)
}

// diffBackend is the backend both fronts forward to: a raw TCP server that
// records each request it reads (head as it came, body decoded) and answers
// each with a fixed 200, Content-Length and the request's sequence number in
// X-Seq (a HEAD's without its body), keeping the connection open. Its parser is minimal: both fronts
// re-frame what they forward, so a well-formed head with Content-Length or
// chunked coding is all it needs; anything else is recorded incomplete and
// the connection closed. Each front has its own listener, so what reached it
// through which front is never mixed.
type diffBackend struct {
	// serveConn, when set before the first listen, serves each connection
	// in place of serve's fixed answers (the response and upgrade tests'
	// backends), recording what it reads with record.
	serveConn func(front string, c net.Conn)

	wg sync.WaitGroup

	mu    sync.Mutex
	seq   int
	lns   map[string]net.Listener
	reqs  map[string][]seenRequest
	conns map[string]map[net.Conn]struct{}
	done  bool
	// ended is closed (and replaced) whenever a connection ends: settle
	// waits on it.
	ended chan struct{}
}

func startDiffBackend(t *testing.T) *diffBackend {
	b := &diffBackend{lns: map[string]net.Listener{}, reqs: map[string][]seenRequest{}, conns: map[string]map[net.Conn]struct{}{}, ended: make(chan struct{})}
	t.Cleanup(func() {
		b.mu.Lock()
		b.done = true
		for _, ln := range b.lns {
			ln.Close()
		}
		for _, cs := range b.conns {
			for c := range cs {
				c.Close()
			}
		}
		b.mu.Unlock()
		b.wg.Wait()
	})
	return b
}

// listen opens the listener of front and returns its address.
func (b *diffBackend) listen(t *testing.T, front string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b.mu.Lock()
	b.lns[front] = ln
	b.conns[front] = map[net.Conn]struct{}{}
	b.mu.Unlock()
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.mu.Lock()
			if b.done {
				b.mu.Unlock()
				c.Close()
				return
			}
			b.conns[front][c] = struct{}{}
			b.wg.Add(1)
			b.mu.Unlock()
			go func() {
				defer b.wg.Done()
				if b.serveConn != nil {
					b.serveConn(front, c)
				} else {
					b.serve(front, c)
				}
				b.mu.Lock()
				delete(b.conns[front], c)
				close(b.ended)
				b.ended = make(chan struct{})
				b.mu.Unlock()
			}()
		}
	}()
	return ln.Addr().String()
}

func (b *diffBackend) serve(front string, c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	for {
		_ = c.SetDeadline(time.Now().Add(healthtest.Patience))
		r, ok := readSeenRequest(br)
		if r.line == "" && !ok {
			return // nothing (more) on this connection
		}
		b.record(front, &r, ok)
		if !ok {
			return
		}
		body := "ok"
		if strings.HasPrefix(r.line, "HEAD ") {
			body = "" // its Content-Length is the GET's
		}
		if _, err := fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Seq: %d\r\n\r\n%s", r.seq, body); err != nil {
			return
		}
	}
}

// record notes r as read through front: whole (ok), it gets the next
// sequence number, which its answer carries.
func (b *diffBackend) record(front string, r *seenRequest, ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if ok {
		b.seq++
		r.seq, r.complete = b.seq, true
	}
	b.reqs[front] = append(b.reqs[front], *r)
}

// readSeenRequest reads one request: its head to the empty line, its body
// by Content-Length or chunked coding. ok is false when it did not come
// whole.
func readSeenRequest(br *bufio.Reader) (r seenRequest, ok bool) {
	r, chunked, length, ok := readSeenHead(br)
	if !ok {
		return r, false
	}
	return readSeenBody(br, r, chunked, length)
}

// readSeenHead reads a request's head to the empty line: its body is
// chunked, or length bytes long. ok is false when it did not come whole.
func readSeenHead(br *bufio.Reader) (r seenRequest, chunked bool, length int, ok bool) {
	var head strings.Builder
	for first := true; ; first = false {
		line, err := br.ReadString('\n')
		if first {
			r.line = strings.TrimRight(line, "\r\n")
		} else {
			head.WriteString(line)
		}
		if err != nil {
			r.head = head.String()
			return r, false, 0, false
		}
		if first {
			continue
		}
		if line == "\r\n" || line == "\n" {
			break
		}
		name, value, _ := strings.Cut(line, ":")
		value = strings.TrimSpace(value)
		switch strings.ToLower(strings.TrimSpace(name)) {
		case "content-length":
			var err error
			if length, err = strconv.Atoi(value); err != nil || length < 0 {
				r.head = head.String()
				return r, false, 0, false
			}
		case "transfer-encoding":
			chunked = strings.Contains(strings.ToLower(value), "chunked")
		}
	}
	r.head = head.String()
	return r, chunked, length, true
}

// readSeenBody reads the body of the request whose head readSeenHead read
// into r.
func readSeenBody(br *bufio.Reader, head seenRequest, chunked bool, length int) (r seenRequest, ok bool) {
	r = head
	var body bytes.Buffer
	defer func() { r.body = body.String() }()
	if !chunked {
		_, err := io.CopyN(&body, br, int64(length))
		return r, err == nil
	}
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return r, false
		}
		sz, _, _ := strings.Cut(strings.TrimRight(line, "\r\n"), ";")
		n, err := strconv.ParseInt(strings.TrimSpace(sz), 16, 32)
		if err != nil || n < 0 {
			return r, false
		}
		if n == 0 {
			for { // trailers
				line, err := br.ReadString('\n')
				if err != nil {
					return r, false
				}
				if line == "\r\n" || line == "\n" {
					return r, true
				}
			}
		}
		if _, err := io.CopyN(&body, br, n); err != nil {
			return r, false
		}
		if crlf, err := br.ReadString('\n'); err != nil || strings.TrimRight(crlf, "\r\n") != "" {
			return r, false
		}
	}
}

// settle returns what reached the backend through front since the last
// settle, once every connection of front has ended: a probe of its own,
// answered, shows every connection queued before it accepted (the accept
// queue is FIFO); closeIdle (the balancer's pool) is called until they all
// ended (HAProxy, with http-server-close, closes its own).
func (b *diffBackend) settle(t *testing.T, front string, closeIdle func()) []seenRequest {
	t.Helper()
	b.mu.Lock()
	addr := b.lns[front].Addr().String()
	b.mu.Unlock()
	probe := sendRaw(t, addr, "GET /probe HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n")
	if len(probe.answers) != 1 || probe.answers[0].status != 200 {
		t.Fatalf("backend probe: %+v", probe)
	}
	// Looked at again as each connection ends, not every 10 ms: a poll's
	// 10 ms after the pool's close, hundreds of times a corpus, were most
	// of the balancer's side of a differential test.
	deadline := time.Now().Add(healthtest.Patience)
	for {
		if closeIdle != nil {
			closeIdle()
		}
		b.mu.Lock()
		n, ended := len(b.conns[front]), b.ended
		b.mu.Unlock()
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s's backend connections end: not within %s", front, healthtest.Patience)
		}
		select {
		case <-ended:
		case <-time.After(10 * time.Millisecond):
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []seenRequest
	for _, r := range b.reqs[front] {
		if r.line != "GET /probe HTTP/1.1" {
			out = append(out, r)
		}
	}
	b.reqs[front] = nil
	return out
}

// diffAnswer is one answer a client read.
type diffAnswer struct {
	status int
	line   string // status line
	seq    int    // X-Seq: the backend's; 0 from the front itself
}

// diffOutcome is what one front did with one payload.
type diffOutcome struct {
	answers []diffAnswer
	rest    string // what followed the answers that is none
	backend []seenRequest
}

func (o diffOutcome) String() string {
	var b strings.Builder
	writeAnswers(&b, o.answers)
	if o.rest != "" {
		fmt.Fprintf(&b, " then %q", trimForLog(o.rest))
	}
	b.WriteString("; backend read [")
	for i, r := range o.backend {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%q body %q", trimForLog(r.line), trimForLog(r.body))
		if !r.complete {
			b.WriteString(" INCOMPLETE")
		}
	}
	b.WriteString("]")
	return b.String()
}

// longHeader is a header line whose value is n bytes long; manyHeaders n
// header lines: what the corpora send past a front's limits.
func longHeader(n int) string { return "X-Long: " + strings.Repeat("a", n) + "\r\n" }

func manyHeaders(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "X-H%d: v\r\n", i)
	}
	return b.String()
}

// writeAnswers writes the status lines a client got, as the outcomes'
// String methods show them.
func writeAnswers(b *strings.Builder, answers []diffAnswer) {
	b.WriteString("client got [")
	for i, a := range answers {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(b, "%q", a.line)
		if a.seq != 0 {
			fmt.Fprintf(b, " (seq %d)", a.seq)
		}
	}
	b.WriteString("]")
}

// answeredSeqs are the backend answers the client got; parsedSeqs the
// requests the backend read whole (and answered).
func (o diffOutcome) answeredSeqs() []int {
	var s []int
	for _, a := range o.answers {
		if a.seq != 0 {
			s = append(s, a.seq)
		}
	}
	return s
}

func (o diffOutcome) parsedSeqs() []int {
	var s []int
	for _, r := range o.backend {
		if r.complete {
			s = append(s, r.seq)
		}
	}
	return s
}

// smuggledForwarded reports whether the backend read a body's
// GET /smuggled as a request.
func (o diffOutcome) smuggledForwarded() bool {
	for _, r := range o.backend {
		if strings.Contains(r.line, "/smuggled") {
			return true
		}
	}
	return false
}

// isFirst: r is the client's first request (the corpus's other targets
// than /first are *, h:80 and /fi…rst with a byte inside).
func isFirst(r seenRequest) bool {
	return !strings.Contains(r.line, "/smuggled") && !strings.Contains(r.line, "/second")
}

func (o diffOutcome) secondInBody() bool {
	for _, r := range o.backend {
		if strings.Contains(r.body, "/second") || strings.Contains(r.head, "/second") {
			return true
		}
	}
	return false
}

// firstForwarded reports whether the client's first request reached the
// backend (whole or not).
func (o diffOutcome) firstForwarded() bool {
	for _, r := range o.backend {
		if isFirst(r) {
			return true
		}
	}
	return false
}

func (o diffOutcome) firstComplete() bool {
	for _, r := range o.backend {
		if isFirst(r) && r.complete {
			return true
		}
	}
	return false
}

func (o diffOutcome) firstBody() string {
	for _, r := range o.backend {
		if isFirst(r) {
			return r.body
		}
	}
	return ""
}

func (o diffOutcome) firstStatus() int {
	for _, a := range o.answers {
		if a.status >= 200 {
			return a.status
		}
	}
	return 0
}

// sendRaw writes payload to a new connection to addr, shuts its write side
// (nothing more comes: a front waiting for more of a request reads its
// end), reads until the front closes and returns the answers.
func sendRaw(t *testing.T, addr, payload string) diffOutcome {
	t.Helper()
	all := exchangeRaw(t, addr, payload)
	var o diffOutcome
	br := bufio.NewReader(bytes.NewReader(all))
	// The answer to a HEAD has no body: the first final one, when the
	// payload starts with one (no case pipelines a HEAD after another).
	var head *http.Request
	if strings.HasPrefix(payload, "HEAD ") {
		head = &http.Request{Method: http.MethodHead}
	}
	for {
		if _, err := br.Peek(1); err != nil {
			break
		}
		resp, err := http.ReadResponse(br, head)
		if err != nil {
			rest, _ := io.ReadAll(br)
			o.rest = string(rest)
			break
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode >= 200 {
			head = nil
		}
		seq, _ := strconv.Atoi(resp.Header.Get("X-Seq"))
		o.answers = append(o.answers, diffAnswer{status: resp.StatusCode, line: resp.Proto + " " + resp.Status, seq: seq})
	}
	return o
}

// findSbinBinary returns the path of program: on PATH, else in Debian's
// /usr/sbin (not on a user's PATH), else "".
func findSbinBinary(program string) string {
	for _, p := range []string{program, "/usr/sbin/" + program} {
		if p, err := exec.LookPath(p); err == nil {
			return p
		}
	}
	return ""
}

// peerListener opens the listener a peer serves on, on a free loopback
// port, and returns it as a file for the peer to inherit (fd 3 of its
// ExtraFiles), so no port is picked and then raced for.
func peerListener(t *testing.T) (*os.File, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	lf, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lf.Close() })
	return lf, ln.Addr().String()
}

// startDiffHAProxy runs HAProxy in the foreground (-db) in front of
// backend, with its defaults' framing rules (no accept-invalid options),
// closing each server connection after its answer (http-server-close) and
// adding the client's address to X-Forwarded-For (option forwardfor), as an
// operator's front does. Its frontend is the inherited listener (bind fd@3).
func startDiffHAProxy(t *testing.T, bin, backend string) string {
	t.Helper()
	lf, addr := peerListener(t)
	cfg := filepath.Join(t.TempDir(), "haproxy.cfg")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`global
  nbthread 1
defaults
  mode http
  option http-server-close
  option forwardfor
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  timeout http-request 30s
frontend fe
  bind fd@3
  default_backend app
backend app
  server app %s
`, backend)), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-f", cfg, "-db")
	cmd.ExtraFiles = []*os.File{lf}
	runDiffPeer(t, "haproxy", cmd, addr)
	return addr
}

// runDiffPeer starts cmd, a peer serving addr, in a process group of its
// own, and returns once it answers a request there (its listener queues the
// connection until the peer accepts it). When the test ends it is asked to
// stop (SIGTERM: a master process ends its workers) and, if it has not
// within healthtest.Patience, its group is killed; what it wrote is logged
// if the test failed.
func runDiffPeer(t *testing.T, name string, cmd *exec.Cmd, addr string) {
	t.Helper()
	var out lockedBuffer // written by exec's copying goroutines
	cmd.Stdout, cmd.Stderr = &out, &out
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	// A worker left behind holds the output pipes: Wait stops copying.
	cmd.WaitDelay = time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(healthtest.Patience):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
		if t.Failed() {
			t.Logf("%s wrote:\n%s", name, out.String())
		}
	})
	ready := make(chan diffOutcome, 1)
	go func() {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			close(ready)
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(healthtest.Patience))
		_, _ = io.WriteString(c, "GET /ready HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			close(ready)
			return
		}
		resp.Body.Close()
		ready <- diffOutcome{answers: []diffAnswer{{status: resp.StatusCode}}}
	}()
	select {
	case o, ok := <-ready:
		if !ok || o.answers[0].status != 200 {
			t.Fatalf("%s did not answer: %+v\n%s", name, o, out.String())
		}
	case <-exited:
		t.Fatalf("%s exited: %s", name, out.String())
	case <-time.After(healthtest.Patience):
		t.Fatalf("%s did not answer in %v:\n%s", name, healthtest.Patience, out.String())
	}
}

// startDiffNginx runs nginx in the foreground (daemon off, a master and one
// worker) in front of backend, as an operator of a WebSocket front
// configures it: HTTP/1.1 to the backend, the client's Upgrade passed on and
// Connection set from it (nginx's own WebSocket proxying recipe), the
// client's address added to X-Forwarded-For, and bodies
// not buffered either way (proxy_request_buffering off, proxy_buffering
// off) — the front relays streams and small API calls, holds no upload in
// memory or on disk before the backend sees it, and so streams a body as
// the balancer does. No upstream keepalive: each backend connection is
// closed after its answer. A client's half-close is not an abort
// (proxy_ignore_client_abort): sendRaw shuts its write side after the
// payload, which nginx cannot tell from a close, and nginx would otherwise
// drop the backend's answer to a request already forwarded. Its listener is
// inherited: nginx takes the sockets named in $NGINX (how its binary
// upgrade hands them over) for the listen directive of the same address —
// with a master process, as nginx 1.22 alone (master_process off) crashes
// on an inherited socket. All its files are under a temporary prefix, and
// under root it runs as nobody.
func startDiffNginx(t *testing.T, bin, backend string) string {
	t.Helper()
	lf, addr := peerListener(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`daemon off;
master_process on;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log stderr notice;
events {
  worker_connections 256;
}
http {
  access_log off;
  client_body_temp_path %[1]s/client_body;
  proxy_temp_path %[1]s/proxy;
  fastcgi_temp_path %[1]s/fastcgi;
  uwsgi_temp_path %[1]s/uwsgi;
  scgi_temp_path %[1]s/scgi;
  map $http_upgrade $connection_upgrade {
    default upgrade;
    '' close;
  }
  server {
    listen %[2]s;
    location / {
      proxy_pass http://%[3]s;
      proxy_http_version 1.1;
      proxy_set_header Host $host;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_request_buffering off;
      proxy_buffering off;
      proxy_ignore_client_abort on;
    }
  }
}
`, dir, addr, backend)), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-p", dir, "-c", cfg, "-e", "stderr")
	cmd.ExtraFiles = []*os.File{lf}
	cmd.Env = append(os.Environ(), "NGINX=3;")
	if os.Geteuid() == 0 {
		// A parser under test runs with no privilege: nobody, who may
		// reach the prefix (t.TempDir's parent is 0700) and write in it.
		const nobody = 65534
		if err := os.Chmod(filepath.Dir(dir), 0o711); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(dir, nobody, nobody); err != nil {
			t.Fatal(err)
		}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	}
	runDiffPeer(t, "nginx", cmd, addr)
	return addr
}
