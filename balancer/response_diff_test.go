//go:build linux

package balancer

import (
	"bufio"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ringlb/ringlb/health/healthtest"
)

// TestResponseFramingAgainstHAProxy is a differential test of how the
// balancer frames a backend's answers, against HAProxy 2.6
// (compareResponses).
func TestResponseFramingAgainstHAProxy(t *testing.T) {
	t.Parallel()
	compareResponses(t, framingPeer{name: "HAProxy", program: "haproxy", pkg: "haproxy", start: startDiffHAProxy, workers: diffWorkers})
}

// TestResponseFramingAgainstNginx is the differential test of the
// balancer's response framing against nginx 1.22 (compareResponses), nginx
// configured as startDiffNginx says.
func TestResponseFramingAgainstNginx(t *testing.T) {
	t.Parallel()
	compareResponses(t, framingPeer{name: "nginx", program: "nginx", pkg: "nginx-light", start: startDiffNginx, workers: diffWorkers})
}

// compareResponses is a differential test of the balancer's response
// framing against peer, as a reviewer hunting response splitting, response
// desync and pool poisoning would write it. A backend — a third party's:
// a static edge — answers each request for /case/N with the raw answer of
// the corpus's case N, whose body or trailing bytes hide a whole answer of
// their own (forged, X-Forged). Each case's request goes through the peer
// and through a balancer (one static edge), both in front of that backend,
// alone and followed by an innocent pipelined request; then an innocent
// request comes on a connection of its own, which the balancer sends on
// its pooled connection to the backend when it kept it. What is compared
// is safety, not status codes:
//
//   - no client gets the forged answer as an answer (on the case's
//     connection, pipelined, or on the next client's connection: pool
//     poisoning);
//   - every innocent request the balancer answers gets its own answer,
//     and the one on a connection of its own is answered;
//   - what the balancer sends a client reads as a strict client reads it
//     (readStrict): one Content-Length or chunked, never both, lines ended
//     by CRLF, no fold, no byte a field may not hold, no framing field in
//     a trailer; an answer cut short is safe (the client sees it cut);
//   - a 101 reaches a client that asked for an upgrade only.
//
// Whether the balancer passes an answer the peer refuses (or the other
// way), or answers with another status, is logged (go test -v) and counted,
// and asserts nothing.
func compareResponses(t *testing.T, peer framingPeer) {
	bin := findSbinBinary(peer.program)
	if bin == "" {
		t.Skipf("%s not installed (apt-get install -y %s): no differential run", peer.program, peer.pkg)
	}
	corpus := responseCorpus()
	backend := startDiffBackend(t)
	rb := &respBackend{b: backend, corpus: corpus}
	backend.serveConn = rb.serve
	// Each of peer.workers workers has a peer and a balancer of its own in
	// front of the backend (its listeners "peer-k" and "ringlb-k"), and
	// goes through its share of the corpus: the peer waits for the
	// backend's close after each answer without a length (respIdle), and
	// case after case those waits were most of the test.
	type front struct {
		name, addr string
		settle     func(*testing.T)
	}
	workers := make([][2]front, max(peer.workers, 1))
	for k := range workers {
		peerFront, ringlbFront := fmt.Sprintf("peer-%d", k), fmt.Sprintf("ringlb-%d", k)
		peerAddr := peer.start(t, bin, backend.listen(t, peerFront))
		cb := startDiffBalancer(t, backend.listen(t, ringlbFront))
		workers[k] = [2]front{
			{peer.name, peerAddr, func(t *testing.T) { backend.settle(t, peerFront, nil) }},
			{"ringlb", cb.addr, func(t *testing.T) { backend.settle(t, ringlbFront, cb.bal.edges.closeIdle) }},
		}
	}

	type job struct {
		i         int
		c         respCase
		pipelined bool
	}
	var jobs []job
	for i, c := range corpus {
		for _, pipelined := range []bool{false, true} {
			if pipelined && c.method == "UPGRADE" {
				continue // after a 101 what follows is the tunnel's
			}
			jobs = append(jobs, job{i, c, pipelined})
		}
	}
	var (
		mu                                                                       sync.Mutex // the counts
		alike, refusedByBoth, ringlbOnly, peerOnly, aborted, otherStatus, unsafe int
		innocent                                                                 atomic.Int64
	)
	cases := len(jobs)
	start := time.Now()
	diffShards(len(workers), len(jobs), func(k, j int) {
		i, c, pipelined := jobs[j].i, jobs[j].c, jobs[j].pipelined
		fronts := workers[k]
		name := c.name
		if pipelined {
			name += "+innocent"
		}
		t.Run(name, func(t *testing.T) {
			var got [2]respOutcome
			for f, front := range fronts {
				o := &got[f]
				o.methods = []string{c.method}
				payload := c.request(i)
				if pipelined {
					o.pipelined = int(innocent.Add(1))
					o.methods = append(o.methods, "GET")
					payload += innocentRequest(o.pipelined)
				}
				o.raw = exchangeRaw(t, front.addr, payload)
				o.answers, o.truncated, o.err = readStrict(o.raw, o.methods)
				o.next = int(innocent.Add(1))
				o.nextRaw = exchangeRaw(t, front.addr, innocentRequest(o.next))
				o.nextAnswers, _, o.nextErr = readStrict(o.nextRaw, []string{"GET"})
				front.settle(t)
				t.Logf("%-8s %s", front.name+":", o)
			}
			mu.Lock()
			defer mu.Unlock()
			p, r := got[0], got[1]
			for _, pr := range p.unsafe(c.method == "UPGRADE") {
				t.Logf("%s (not asserted): %s", peer.name, pr)
			}
			if problems := r.unsafe(c.method == "UPGRADE"); len(problems) > 0 {
				unsafe++
				for _, pr := range problems {
					t.Errorf("UNSAFE: %s", pr)
				}
			}
			pPassed, rPassed := p.passed(), r.passed()
			switch {
			case !pPassed && !rPassed:
				refusedByBoth++
			case pPassed && !rPassed:
				ringlbOnly++
				t.Logf("DIFF ringlb refused it (%d), %s passed it on (%d)", r.status(), peer.name, p.status())
			case !pPassed && rPassed && r.truncated:
				// The balancer streams a body: one found broken
				// as it streams is cut, its head already sent.
				aborted++
				t.Logf("DIFF %s refused it (%d), ringlb passed its head on and cut its body", peer.name, p.status())
			case !pPassed && rPassed:
				peerOnly++
				t.Logf("DIFF %s refused it (%d), ringlb passed it on re-framed (%d)", peer.name, p.status(), r.status())
			case p.status() != r.status():
				otherStatus++
				t.Logf("DIFF both passed it on: %s as %d, ringlb as %d", peer.name, p.status(), r.status())
			default:
				alike++
				if pb, rb := p.body(), r.body(); pb != rb {
					t.Logf("DIFF both passed it on with different bodies: %s %q, ringlb %q", peer.name, trimForLog(pb), trimForLog(rb))
				}
			}
		})
	})
	t.Logf("%d cases (%d answers) in %v: %d alike, %d refused by both, %d refused by ringlb only, %d by %s only (%d more cut by ringlb as they streamed), %d passed on by both with another status; %d unsafe",
		cases, len(corpus), time.Since(start).Round(time.Millisecond), alike, refusedByBoth, ringlbOnly, peerOnly, peer.name, aborted, otherStatus, unsafe)
}

// respCase is one answer of the corpus.
type respCase struct {
	name string
	// method of the client's request: GET (""), HEAD, POST (with a
	// body), UPGRADE (a WebSocket upgrade).
	method string
	answer string // what the backend writes
	// late is written once the next request's head has come on the
	// backend connection (or it ended): a body the backend sends after
	// its head, as a front that takes the answer for whole reuses the
	// connection.
	late  string
	close bool // the backend closes the connection after the answer
	// early: answered once the request's head has come, before its body
	// is read; bodyAsRequest: (early) the body is read as the next
	// request, and answered (a backend that ignores the body of this
	// path).
	early, bodyAsRequest bool
	// body of a POST (default: a few bytes).
	body string
}

const (
	// caseMark marks the case's answer: a front passed it on.
	caseMark = "X-Case: 1\r\n"
	// respIdle is how long the backend waits for the next request on a
	// connection after a case's answer before it closes it: a front that
	// reads the answer as one without a length waits for that close.
	respIdle = 150 * time.Millisecond
)

// request is the client's request for case i.
func (c respCase) request(i int) string {
	target := fmt.Sprintf("/case/%d", i)
	switch c.method {
	case "HEAD":
		return "HEAD " + target + " HTTP/1.1\r\nHost: h\r\n\r\n"
	case "POST":
		body := c.body
		if body == "" {
			body = "x=1"
		}
		return fmt.Sprintf("POST %s HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n%s", target, len(body), body)
	case "UPGRADE":
		return strings.Replace(diffUpgrade, "/first", target, 1) + "\r\n"
	}
	return "GET " + target + " HTTP/1.1\r\nHost: h\r\n\r\n"
}

// innocentRequest is an innocent client's request; its answer names id.
func innocentRequest(id int) string {
	return fmt.Sprintf("GET /innocent/%d HTTP/1.1\r\nHost: h\r\n\r\n", id)
}

// respBackend answers /case/N with the corpus's case N, /innocent/N with
// innocentAnswer(N), /forge with the forged answer and anything else
// (the fronts' and settle's probes) with a 200, on diffBackend's
// listeners.
type respBackend struct {
	b      *diffBackend
	corpus []respCase
}

func (rb *respBackend) serve(front string, c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	idle := healthtest.Patience
	late := ""
	defer func() {
		if late != "" {
			_, _ = c.Write([]byte(late))
		}
	}()
	for {
		_ = c.SetDeadline(time.Now().Add(idle))
		r, chunked, length, ok := readSeenHead(br)
		if !ok {
			return
		}
		_ = c.SetDeadline(time.Now().Add(healthtest.Patience))
		if late != "" {
			if _, err := c.Write([]byte(late)); err != nil {
				return
			}
			late = ""
		}
		idle = healthtest.Patience
		target := ""
		if f := strings.Fields(r.line); len(f) > 1 {
			target = f[1]
		}
		var answer string
		var cs *respCase
		switch {
		case strings.HasPrefix(target, "/case/"):
			n, _ := strconv.Atoi(strings.TrimPrefix(target, "/case/"))
			if n < 0 || n >= len(rb.corpus) {
				return
			}
			cs = &rb.corpus[n]
			answer = cs.answer
		case strings.HasPrefix(target, "/innocent/"):
			n, _ := strconv.Atoi(strings.TrimPrefix(target, "/innocent/"))
			answer = innocentAnswer(n)
		case target == "/forge":
			answer = forged
		default:
			answer = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
		}
		if cs != nil && cs.bodyAsRequest {
			// The body, read as the next request, is answered with its
			// answer, both in one write: what the front finds after the
			// answer is there as it reads it, however the scheduler runs
			// this goroutine.
			if next, _, _, ok := readSeenHead(br); ok && strings.Contains(next.line, " /forge ") {
				answer += forged
			}
		}
		if cs != nil && cs.early {
			if _, err := c.Write([]byte(answer)); err != nil {
				return
			}
		}
		if cs == nil || !cs.bodyAsRequest {
			if r, ok = readSeenBody(br, r, chunked, length); !ok {
				return
			}
		}
		rb.b.record(front, &r, true)
		if cs == nil || !cs.early {
			if _, err := c.Write([]byte(answer)); err != nil {
				return
			}
		}
		if cs != nil {
			if cs.close {
				return
			}
			late, idle = cs.late, respIdle
		}
	}
}

// responseCorpus is the answers the backend gives. In each, the forged
// answer sits where a front that frames the answer otherwise than its
// backend meant would take it for the next answer on the connection.
func responseCorpus() []respCase {
	const ok = "HTTP/1.1 200 OK\r\n" + caseMark
	f := forged
	// cl: an answer of head whose Content-Length is body's.
	cl := func(head, body string) string {
		return head + fmt.Sprintf("Content-Length: %d\r\n\r\n", len(body)) + body
	}
	// teCL: a Transfer-Encoding variant whose chunked body ends at once,
	// with a Content-Length that covers the forged answer after it.
	teCL := func(te string) string {
		body := "0\r\n\r\n" + f
		return ok + te + fmt.Sprintf("Content-Length: %d\r\n\r\n", len(body)) + body
	}
	// clTE: a Content-Length that ends where the forged answer starts,
	// which a chunk of the chunked body holds.
	clTE := func(te string) string {
		size := fmt.Sprintf("%x\r\n", len(f))
		return ok + fmt.Sprintf("Content-Length: %d\r\n", len(size)) + te + "\r\n" + size + f + "\r\n0\r\n\r\n"
	}
	// teOnly: a Transfer-Encoding variant alone, the forged answer after
	// its chunked body.
	teOnly := func(te string) string { return ok + te + "\r\n" + chunk("ok") + "0\r\n\r\n" + f }
	// clOnly: a Content-Length header line of 2 as written, the forged
	// answer after the 2 bytes.
	clOnly := func(line string) string { return ok + line + "\r\nok" + f }
	chunked := "Transfer-Encoding: chunked\r\n"
	// body: a chunked body as written, the forged answer after it.
	body := func(b string) string { return ok + chunked + "\r\n" + b + f }
	trailer := func(t string) string { return body(chunk("ok") + "0\r\n" + t + "\r\n") }
	interims := func(n int, status string) string { return strings.Repeat("HTTP/1.1 "+status+"\r\n\r\n", n) }
	long, many := longHeader, manyHeaders
	final := cl(ok, "ok")
	const accept = "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
	const switched = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" + caseMark + accept

	return []respCase{
		// Baselines.
		{name: "content-length", answer: final},
		{name: "chunked", answer: ok + chunked + "\r\n" + chunk("ok") + "0\r\n\r\n"},
		{name: "close-delimited", answer: ok + "\r\nok" + f, close: true},
		{name: "forged in a body", answer: cl(ok, f)},

		// Content-Length with Transfer-Encoding.
		{name: "CL then TE, the chunked body ends first", answer: teCL(chunked)},
		{name: "TE then CL, the chunked body ends first", answer: ok + chunked + fmt.Sprintf("Content-Length: %d\r\n\r\n", len("0\r\n\r\n"+f)) + "0\r\n\r\n" + f},
		{name: "CL ends first, TE", answer: clTE(chunked)},
		{name: "CL 0 and TE", answer: ok + "Content-Length: 0\r\n" + chunked + "\r\n" + chunk(f) + "0\r\n\r\n"},
		{name: "CL.TE chunked, gzip", answer: teCL("Transfer-Encoding: chunked, gzip\r\n")},
		{name: "CL.TE gzip, chunked", answer: teCL("Transfer-Encoding: gzip, chunked\r\n")},
		{name: "CL.TE gzip", answer: teCL("Transfer-Encoding: gzip\r\n")},
		{name: "CL.TE identity", answer: teCL("Transfer-Encoding: identity\r\n")},
		{name: "CL.TE chunked twice", answer: teCL("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n")},
		{name: "CL.TE chunked, chunked", answer: teCL("Transfer-Encoding: chunked, chunked\r\n")},
		{name: "CL.TE space before colon", answer: teCL("Transfer-Encoding : chunked\r\n")},
		{name: "CL.TE folded", answer: teCL("Transfer-Encoding:\r\n chunked\r\n")},
		{name: "CL.TE xchunked", answer: teCL("Transfer-Encoding: xchunked\r\n")},
		{name: "CL.TE on HTTP/1.0", answer: strings.Replace(teCL(chunked), "HTTP/1.1", "HTTP/1.0", 1)},
		{name: "CL ends first, TE on HTTP/1.0", answer: strings.Replace(clTE(chunked), "HTTP/1.1", "HTTP/1.0", 1)},

		// Transfer-Encoding alone.
		{name: "TE chunked, gzip", answer: teOnly("Transfer-Encoding: chunked, gzip\r\n")},
		{name: "TE gzip, chunked", answer: teOnly("Transfer-Encoding: gzip, chunked\r\n")},
		{name: "TE gzip", answer: teOnly("Transfer-Encoding: gzip\r\n")},
		{name: "TE identity", answer: teOnly("Transfer-Encoding: identity\r\n")},
		{name: "TE chunked twice", answer: teOnly("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n")},
		{name: "TE gzip then chunked", answer: teOnly("Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n")},
		{name: "TE chunked, chunked", answer: teOnly("Transfer-Encoding: chunked, chunked\r\n")},
		{name: "TE CHUNKED", answer: teOnly("Transfer-Encoding: CHUNKED\r\n")},
		{name: "TE tab after value", answer: teOnly("Transfer-Encoding: chunked\t\r\n")},
		{name: "TE vertical tab", answer: teOnly("Transfer-Encoding: \vchunked\r\n")},
		{name: "TE chunked with a parameter", answer: teOnly("Transfer-Encoding: chunked;q=1\r\n")},
		{name: "TE empty", answer: teOnly("Transfer-Encoding: \r\n")},
		{name: "TE on HTTP/1.0", answer: strings.Replace(teOnly(chunked), "HTTP/1.1", "HTTP/1.0", 1)},
		{name: "TE on HTTP/1.0 keep-alive", answer: strings.Replace(teOnly(chunked+"Connection: keep-alive\r\n"), "HTTP/1.1", "HTTP/1.0", 1)},

		// Content-Length spellings.
		{name: "CL twice, equal", answer: clOnly("Content-Length: 2\r\nContent-Length: 2\r\n")},
		{name: "CL twice, differing", answer: ok + fmt.Sprintf("Content-Length: 2\r\nContent-Length: %d\r\n\r\nok", 2+len(f)) + f},
		{name: "CL twice, differing, larger first", answer: ok + fmt.Sprintf("Content-Length: %d\r\nContent-Length: 2\r\n\r\nok", 2+len(f)) + f},
		{name: "CL list equal", answer: clOnly("Content-Length: 2, 2\r\n")},
		{name: "CL list differing", answer: ok + fmt.Sprintf("Content-Length: 2, %d\r\n\r\nok", 2+len(f)) + f},
		{name: "CL plus", answer: clOnly("Content-Length: +2\r\n")},
		{name: "CL minus", answer: clOnly("Content-Length: -2\r\n")},
		{name: "CL leading zeros", answer: clOnly("Content-Length: 0002\r\n")},
		{name: "CL spaces around", answer: clOnly("Content-Length:   2   \r\n")},
		{name: "CL tab before value", answer: clOnly("Content-Length:\t2\r\n")},
		{name: "CL tab after value", answer: clOnly("Content-Length: 2\t\r\n")},
		{name: "CL space inside", answer: clOnly("Content-Length: 1 2\r\n")},
		{name: "CL hex", answer: clOnly("Content-Length: 0x2\r\n")},
		{name: "CL with a letter", answer: clOnly("Content-Length: 2a\r\n")},
		{name: "CL empty", answer: clOnly("Content-Length: \r\n")},
		{name: "CL 20 digits", answer: clOnly("Content-Length: 00000000000000000002\r\n")},
		{name: "CL overflow", answer: clOnly("Content-Length: 18446744073709551618\r\n")},
		{name: "CL NUL after value", answer: clOnly("Content-Length: 2\x00\r\n")},
		{name: "CL space before colon", answer: clOnly("Content-Length : 2\r\n")},

		// Chunked bodies.
		{name: "chunk size not hex", answer: body("zz\r\nok\r\n0\r\n\r\n")},
		{name: "chunk size 0x", answer: body("0x2\r\nok\r\n0\r\n\r\n")},
		{name: "chunk size negative", answer: body("-2\r\nok\r\n0\r\n\r\n")},
		{name: "chunk size leading space", answer: body(" 2\r\nok\r\n0\r\n\r\n")},
		{name: "chunk size trailing space", answer: body("2 \r\nok\r\n0\r\n\r\n")},
		{name: "chunk size wrapping to 2", answer: body("10000000000000002\r\nok\r\n0\r\n\r\n")},
		{name: "chunk size 2^63", answer: body("8000000000000000\r\nok\r\n0\r\n\r\n")},
		{name: "chunk extension", answer: body("2;a=b\r\nok\r\n0\r\n\r\n")},
		{name: "chunk extension quoted", answer: body("2;a=\"b c\"\r\nok\r\n0\r\n\r\n")},
		{name: "chunk extension with a bare CR", answer: body("2;a\rb\r\nok\r\n0\r\n\r\n")},
		{name: "chunk extension 20 KiB", answer: body("2;" + strings.Repeat("a", 20000) + "\r\nok\r\n0\r\n\r\n")},
		{name: "chunk data longer than its size", answer: body("2\r\nokXX\r\n0\r\n\r\n")},
		{name: "chunk data without its CRLF", answer: body("2\r\nok0\r\n\r\n")},
		{name: "chunk size line ended by LF", answer: body("2\nok\r\n0\r\n\r\n")},
		{name: "chunk data ended by LF", answer: body("2\r\nok\n0\r\n\r\n")},
		{name: "last chunk ended by LF", answer: body("2\r\nok\r\n0\n\r\n")},
		{name: "chunked body ended by LF", answer: body("2\r\nok\r\n0\r\n\n")},
		{name: "missing final CRLF", answer: body("2\r\nok\r\n0\r\n")},
		{name: "no last chunk, closed", answer: ok + chunked + "\r\n" + chunk("ok"), close: true},

		// Trailers.
		{name: "trailer", answer: trailer("X-T: 1\r\n")},
		{name: "trailer Content-Length", answer: trailer("Content-Length: 40\r\n")},
		{name: "trailer Transfer-Encoding", answer: trailer("Transfer-Encoding: chunked\r\n")},
		{name: "trailer Set-Cookie", answer: trailer("Set-Cookie: a=b\r\n")},
		{name: "trailer announced Set-Cookie", answer: strings.Replace(trailer("Set-Cookie: a=b\r\n"), chunked, chunked+"Trailer: Set-Cookie\r\n", 1)},
		{name: "trailer folded", answer: trailer("X-T: 1\r\n 2\r\n")},
		{name: "trailer bare LF", answer: trailer("X-T: 1\n")},
		{name: "trailer NUL", answer: trailer("X-T: \x00\r\n")},
		{name: "trailer without colon", answer: trailer("X-T\r\n")},

		// Line ends, folds, names.
		{name: "bare LF line ends", answer: strings.ReplaceAll(final, "\r\n", "\n") + f},
		{name: "bare LF in one line", answer: ok + "X-A: b\nContent-Length: 2\r\n\r\nok" + f},
		{name: "bare LF hiding CL", answer: ok + fmt.Sprintf("X-A: b\nContent-Length: %d\r\n\r\nok", 2+len(f)) + f},
		{name: "bare LF blank line", answer: ok + "Content-Length: 2\r\n\nok" + f},
		{name: "bare CR in a line", answer: ok + "X-A: b\rContent-Length: 2\r\n\r\nok" + f},
		{name: "bare CR hiding CL", answer: ok + fmt.Sprintf("X-A: b\rContent-Length: 2\r\nContent-Length: %d\r\n\r\nok", 2+len(f)) + f},
		{name: "obs-fold", answer: ok + "X-A: b\r\n c\r\nContent-Length: 2\r\n\r\nok" + f},
		{name: "obs-fold hiding CL", answer: ok + fmt.Sprintf("X-A: b\r\n Content-Length: 2\r\nContent-Length: %d\r\n\r\nok", 2+len(f)) + f},
		{name: "CL folded", answer: ok + "Content-Length:\r\n 2\r\n\r\nok" + f},
		{name: "first header folded", answer: "HTTP/1.1 200 OK\r\n X-A: b\r\n" + caseMark + "Content-Length: 2\r\n\r\nok" + f},
		{name: "space in a header name", answer: clOnly("X A: b\r\nContent-Length: 2\r\n")},
		{name: "tab before colon", answer: clOnly("Content-Length\t: 2\r\n")},
		{name: "SOH in a header name", answer: clOnly("X-\x01A: b\r\nContent-Length: 2\r\n")},
		{name: "NUL in a header name", answer: clOnly("X-\x00A: b\r\nContent-Length: 2\r\n")},
		{name: "NUL ending CL's name", answer: ok + fmt.Sprintf("Content-Length\x00: %d\r\nContent-Length: 2\r\n\r\nok", 2+len(f)) + f},
		{name: "non-ASCII in a header name", answer: clOnly("X-\xc3\xa9: b\r\nContent-Length: 2\r\n")},
		{name: "empty header name", answer: clOnly(": b\r\nContent-Length: 2\r\n")},
		{name: "header without colon", answer: clOnly("X-A b\r\nContent-Length: 2\r\n")},
		{name: "NUL in a header value", answer: clOnly("X-A: a\x00b\r\nContent-Length: 2\r\n")},
		{name: "DEL in a header value", answer: clOnly("X-A: a\x7fb\r\nContent-Length: 2\r\n")},
		{name: "NUL in the body", answer: cl(ok, "o\x00k")},

		// Bodies where none may be.
		{name: "body on 204", answer: "HTTP/1.1 204 No Content\r\n" + caseMark + fmt.Sprintf("Content-Length: %d\r\n\r\n", len(f)) + f},
		{name: "chunked body on 204", answer: "HTTP/1.1 204 No Content\r\n" + caseMark + chunked + "\r\n" + chunk(f) + "0\r\n\r\n"},
		{name: "bytes after 204", answer: "HTTP/1.1 204 No Content\r\n" + caseMark + "\r\n" + f},
		{name: "body on 304", answer: "HTTP/1.1 304 Not Modified\r\n" + caseMark + fmt.Sprintf("Content-Length: %d\r\n\r\n", len(f)) + f},
		{name: "chunked body on 304", answer: "HTTP/1.1 304 Not Modified\r\n" + caseMark + chunked + "\r\n" + chunk(f) + "0\r\n\r\n"},
		{name: "body on HEAD", method: "HEAD", answer: cl(ok, f)},
		{name: "chunked body on HEAD", method: "HEAD", answer: ok + chunked + "\r\n" + chunk(f) + "0\r\n\r\n"},
		{name: "late body on 204", answer: "HTTP/1.1 204 No Content\r\n" + caseMark + fmt.Sprintf("Content-Length: %d\r\n\r\n", len(f)), late: f},
		{name: "late chunked body on 204", answer: "HTTP/1.1 204 No Content\r\n" + caseMark + chunked + "\r\n", late: chunk(f) + "0\r\n\r\n"},
		{name: "late body on 304", answer: "HTTP/1.1 304 Not Modified\r\n" + caseMark + fmt.Sprintf("Content-Length: %d\r\n\r\n", len(f)), late: f},
		{name: "late chunked body on 304", answer: "HTTP/1.1 304 Not Modified\r\n" + caseMark + chunked + "\r\n", late: chunk(f) + "0\r\n\r\n"},
		{name: "late body on HEAD", method: "HEAD", answer: ok + fmt.Sprintf("Content-Length: %d\r\n\r\n", len(f)), late: f},

		// Interim answers.
		{name: "100 then 200", answer: "HTTP/1.1 100 Continue\r\n\r\n" + final},
		{name: "102 then 200", answer: "HTTP/1.1 102 Processing\r\n\r\n" + final},
		{name: "103 with headers then 200", answer: "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\nX-Early: 1\r\nSet-Cookie: early=1\r\n\r\n" + final},
		{name: "103 with CL then 200", answer: "HTTP/1.1 103 Early Hints\r\n" + fmt.Sprintf("Content-Length: %d\r\n\r\n", len(final)) + final + f},
		{name: "100 chunked then 200", answer: "HTTP/1.1 100 Continue\r\n" + chunked + "\r\n" + final + f},
		{name: "10 interim answers", answer: interims(10, "100 Continue") + final},
		{name: "17 interim answers", answer: interims(17, "103 Early Hints") + final},
		{name: "101 interim answers", answer: interims(101, "100 Continue") + final},
		{name: "300 interim answers", answer: interims(300, "102 Processing") + final},
		{name: "101 to a plain request", answer: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: foo\r\nConnection: Upgrade\r\n" + caseMark + "\r\n" + f},
		{name: "101 without Upgrade to a plain request", answer: "HTTP/1.1 101 Switching Protocols\r\n" + caseMark + "\r\n" + f},
		{name: "100 to a POST then 200", method: "POST", answer: "HTTP/1.1 100 Continue\r\n\r\n" + final},

		// Status lines.
		{name: "HTTP/1.0 with length", answer: strings.Replace(final, "HTTP/1.1", "HTTP/1.0", 1) + f},
		{name: "HTTP/1.0 keep-alive with length", answer: strings.Replace(cl(ok+"Connection: keep-alive\r\n", "ok"), "HTTP/1.1", "HTTP/1.0", 1) + f},
		{name: "HTTP/1.0 without length", answer: "HTTP/1.0 200 OK\r\n" + caseMark + "\r\nok" + f, close: true},
		{name: "HTTP/1.0 keep-alive without length", answer: "HTTP/1.0 200 OK\r\n" + caseMark + "Connection: keep-alive\r\n\r\nok" + f},
		{name: "HTTP/2.0 status line", answer: strings.Replace(final, "HTTP/1.1", "HTTP/2.0", 1) + f},
		{name: "HTTP/1.2 status line", answer: strings.Replace(final, "HTTP/1.1", "HTTP/1.2", 1) + f},
		{name: "lowercase version", answer: strings.Replace(final, "HTTP/1.1", "http/1.1", 1) + f},
		{name: "status 099", answer: strings.Replace(final, "200 OK", "099 Low", 1) + f},
		{name: "status 000", answer: strings.Replace(final, "200 OK", "000 Zero", 1) + f},
		{name: "status 600", answer: strings.Replace(final, "200 OK", "600 High", 1) + f},
		{name: "status 999", answer: strings.Replace(final, "200 OK", "999 High", 1) + f},
		{name: "099 hiding an answer", answer: "HTTP/1.1 099 Low\r\n" + caseMark + fmt.Sprintf("Content-Length: %d\r\n\r\n", len(f)) + f},
		{name: "status two digits", answer: strings.Replace(final, "200 OK", "20 OK", 1) + f},
		{name: "status four digits", answer: strings.Replace(final, "200 OK", "2000 OK", 1) + f},
		{name: "status not digits", answer: strings.Replace(final, "200 OK", "2x0 OK", 1) + f},
		{name: "no reason", answer: strings.Replace(final, "200 OK", "200", 1) + f},
		{name: "empty reason", answer: strings.Replace(final, "200 OK", "200 ", 1) + f},
		{name: "two spaces before status", answer: strings.Replace(final, "HTTP/1.1 ", "HTTP/1.1  ", 1) + f},
		{name: "tab before status", answer: strings.Replace(final, "HTTP/1.1 ", "HTTP/1.1\t", 1) + f},
		{name: "NUL in the reason", answer: strings.Replace(final, "200 OK", "200 O\x00K", 1) + f},
		{name: "bare CR in the reason", answer: strings.Replace(final, "200 OK", "200 OK\rSet-Cookie: planted=1", 1) + f},
		{name: "bare CR ending the reason", answer: strings.Replace(final, "200 OK", "200 OK\r", 1) + f},
		{name: "blank line before the status line", answer: "\r\n" + final + f},
		{name: "junk before the status line", answer: "junk\r\n" + final + f},

		// Large heads.
		{name: "header line 3 KiB", answer: clOnly(long(3000) + "Content-Length: 2\r\n")},
		{name: "header line 6 KiB", answer: clOnly(long(6000) + "Content-Length: 2\r\n")},
		{name: "header line 20 KiB", answer: clOnly(long(20000) + "Content-Length: 2\r\n")},
		{name: "120 headers", answer: clOnly(many(120) + "Content-Length: 2\r\n")},
		{name: "head 70 KiB", answer: clOnly(strings.Repeat(long(1000), 70) + "Content-Length: 2\r\n")},

		// Connection: close, and answers before the request's body.
		{name: "Connection close then more bytes", answer: clOnly("Connection: close\r\nContent-Length: 2\r\n")},
		{name: "Connection close chunked then more bytes", answer: ok + "Connection: close\r\n" + chunked + "\r\n" + chunk("ok") + "0\r\n\r\n" + f},
		{name: "Connection close, without length, kept open", answer: ok + "Connection: close\r\n\r\nok" + f},
		{name: "without length, kept open", answer: ok + "\r\nok" + f},
		{name: "Connection keep-alive without length", answer: ok + "Connection: keep-alive\r\n\r\nok" + f},
		{name: "answered before the body", method: "POST", early: true, answer: final},
		{name: "answered before the body, closed", method: "POST", early: true, close: true, answer: clOnly("Connection: close\r\nContent-Length: 2\r\n")},
		{name: "answered before the body, which is read as a request", method: "POST", early: true, bodyAsRequest: true, body: "GET /forge HTTP/1.1\r\nHost: h\r\n\r\n", answer: final},
		{name: "413 before the body, which is read as a request", method: "POST", early: true, bodyAsRequest: true, body: "GET /forge HTTP/1.1\r\nHost: h\r\n\r\n", answer: "HTTP/1.1 413 Content Too Large\r\n" + caseMark + "Content-Length: 2\r\n\r\nno"},

		// Upgrades: the answer is read by the upgrade path.
		{name: "upgrade: 101 then bytes", method: "UPGRADE", answer: switched + "\r\n" + f},
		{name: "upgrade: 101 folded", method: "UPGRADE", answer: switched + "X-A: b\r\n Set-Cookie: a=b\r\n\r\n"},
		{name: "upgrade: 101 bare CR", method: "UPGRADE", answer: switched + "X-A: b\rSet-Cookie: a=b\r\n\r\n"},
		{name: "upgrade: 100 then 101", method: "UPGRADE", answer: "HTTP/1.1 100 Continue\r\n\r\n" + switched + "\r\n"},
		{name: "upgrade: refused, CL and TE", method: "UPGRADE", answer: teCL(chunked)},
		{name: "upgrade: refused, CL ends first, TE", method: "UPGRADE", answer: clTE(chunked)},
		{name: "upgrade: refused, CL twice, differing", method: "UPGRADE", answer: ok + fmt.Sprintf("Content-Length: 2\r\nContent-Length: %d\r\n\r\nok", 2+len(f)) + f},
		{name: "upgrade: refused, obs-fold hiding CL", method: "UPGRADE", answer: ok + fmt.Sprintf("X-A: b\r\n Content-Length: 2\r\nContent-Length: %d\r\n\r\nok", 2+len(f)) + f},
		{name: "upgrade: refused, missing final CRLF", method: "UPGRADE", answer: body("2\r\nok\r\n0\r\n")},
		{name: "upgrade: refused, body on 204", method: "UPGRADE", answer: "HTTP/1.1 204 No Content\r\n" + caseMark + fmt.Sprintf("Content-Length: %d\r\n\r\n", len(f)) + f},
		{name: "upgrade: refused, without length", method: "UPGRADE", answer: ok + "\r\nok" + f, close: true},
		{name: "upgrade: 099 hiding an answer", method: "UPGRADE", answer: "HTTP/1.1 099 Low\r\n" + caseMark + fmt.Sprintf("Content-Length: %d\r\n\r\n", len(f)) + f},
	}
}

// respOutcome is what one front did with one case.
type respOutcome struct {
	methods   []string
	pipelined int // the innocent request's id after the case's, or 0
	raw       []byte
	answers   []strictAnswer
	truncated bool
	err       error
	// next: the innocent request on a connection of its own after it.
	next        int
	nextRaw     []byte
	nextAnswers []strictAnswer
	nextErr     error
}

func (o respOutcome) String() string {
	var b strings.Builder
	b.WriteString("client got [")
	for i, a := range o.answers {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(a.String())
	}
	b.WriteString("]")
	if o.truncated {
		b.WriteString(" CUT")
	}
	if o.err != nil {
		fmt.Fprintf(&b, " NOT STRICT (%v) in %q", o.err, trimForLog(string(o.raw)))
	}
	b.WriteString("; next client got [")
	for i, a := range o.nextAnswers {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(a.String())
	}
	b.WriteString("]")
	if o.nextErr != nil {
		fmt.Fprintf(&b, " NOT STRICT (%v) in %q", o.nextErr, trimForLog(string(o.nextRaw)))
	}
	return b.String()
}

// final is the answer to the case's request: its first answer but 1xx
// interim ones (a 101 is final).
func (o respOutcome) final() (strictAnswer, bool) {
	for _, a := range o.answers {
		if a.status >= 200 || a.status == 101 || a.status < 100 {
			return a, true
		}
	}
	return strictAnswer{}, false
}

// passed reports whether the front passed the case's answer on.
func (o respOutcome) passed() bool {
	a, ok := o.final()
	return ok && a.get("X-Case") != ""
}

func (o respOutcome) status() int {
	a, _ := o.final()
	return a.status
}

func (o respOutcome) body() string {
	a, _ := o.final()
	return a.body
}

// unsafe lists what the front did that a client may be harmed by.
func (o respOutcome) unsafe(upgrade bool) []string {
	var out []string
	if o.err != nil {
		out = append(out, fmt.Sprintf("the client's bytes do not read strictly: %v", o.err))
	}
	if o.nextErr != nil {
		out = append(out, fmt.Sprintf("the next client's bytes do not read strictly: %v", o.nextErr))
	}
	for _, a := range append(append([]strictAnswer(nil), o.answers...), o.nextAnswers...) {
		if a.get("X-Forged") != "" {
			out = append(out, fmt.Sprintf("a client got the forged answer: %s", a))
		}
	}
	if a, ok := o.final(); ok && a.status == 101 && !upgrade {
		out = append(out, "a 101 reached a client that asked for no upgrade")
	}
	// The pipelined innocent request, when answered, gets its own.
	if o.pipelined != 0 {
		seen := false
		for _, a := range o.answers {
			if a.status < 200 {
				continue
			}
			if seen {
				if !a.innocent(o.pipelined) {
					out = append(out, fmt.Sprintf("the pipelined innocent request %d got %s", o.pipelined, a))
				}
				break
			}
			seen = true
		}
	}
	// The next client's is answered, with its own.
	if len(o.nextAnswers) != 1 || !o.nextAnswers[0].innocent(o.next) {
		out = append(out, fmt.Sprintf("the next client's request %d got %d answers, not its own: %q", o.next, len(o.nextAnswers), trimForLog(string(o.nextRaw))))
	}
	return out
}
