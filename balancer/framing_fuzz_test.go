package balancer

import (
	"bufio"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/ringlb/ringlb/configs"
)

// FuzzRefusal: any request head, as the balancer's server parses it
// (fasthttp), then judged by refusal. Where the balancer lets a request on,
// Go's net/http parser (http.ReadRequest), a parser a proxy in front of the
// balancer or an edge behind it could be, must read the same body framing
// from the same bytes: chunked or not, and the same length; an upgrade
// carries no body. A disagreement is where a request hides in another's
// body (framing.go). Heads net/http refuses for reasons other than their
// framing (a missing Host, a URL or a header value it finds malformed) are
// no smuggling and not compared.
func FuzzRefusal(f *testing.F) {
	for _, head := range []string{
		"GET /whoami HTTP/1.1\r\nHost: bal\r\nctstickiness: k\r\n\r\n",
		wsHead + "\r\n",
		wsHead + "Content-Length: 0\r\n\r\n",
		wsHead + "Content-Length: 5\r\n\r\n",
		wsHead + "Transfer-Encoding: chunked\r\n\r\n",
		upgradeHead + "Transfer-Encoding: identity\r\n\r\n",
		postHead + "Content-Length: 2\r\n\r\n{}",
		postHead + "Content-Length: 007\r\n\r\n",
		postHead + "Content-Length:  2 \t\r\n\r\n",
		postHead + "Content-Length: 2\r\nContent-Length: 2\r\n\r\n",
		postHead + "Content-Length: 2, 2\r\n\r\n",
		postHead + "Content-Length: +2\r\n\r\n",
		postHead + "Content-Length: 99999999999999999999\r\n\r\n",
		postHead + "Transfer-Encoding: chunked\r\n\r\n",
		postHead + "Transfer-Encoding: Chunked\r\n\r\n",
		postHead + "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n",
		postHead + "Transfer-Encoding: chunked, identity\r\n\r\n",
		postHead + "Transfer-Encoding: identity\r\n\r\n",
		postHead + "Transfer-Encoding:\r\n chunked\r\n\r\n",
		postHead + "X-Pad: y\nTransfer-Encoding: chunked\r\n\r\n",
		postHead + "X-Pad: y\rTransfer-Encoding: chunked\r\n\r\n",
		postHead + "Transfer-Encoding : chunked\r\n\r\n",
		postHead + "Transfer-Encoding:\vchunked\r\n\r\n",
		postHead + "Connection: Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n\r\n",
		postHead + "X A: b\r\nContent-Length: 2\r\n\r\n",
		strings.Replace(postHead, "HTTP/1.1", "HTTP/1.0", 1) + "Transfer-Encoding: chunked\r\n\r\n",
		strings.Replace(postHead, "HTTP/1.1", "HTTP/1.0", 1) + "Content-Length: 3\r\n\r\n",
		withBoth("Transfer-Encoding: chunked\r\n"),
		teOnly("Transfer-Encoding: xchunked\r\n"),
	} {
		f.Add(head)
	}
	maxBody := int64(configs.DefaultMaxBodyBytes)
	f.Fuzz(func(t *testing.T, head string) {
		var h fasthttp.RequestHeader
		if err := h.Read(bufio.NewReader(strings.NewReader(head))); err != nil {
			return // fasthttp's server answers 400 before the handler runs
		}
		if code, _ := refusal(&h, maxBody); code != 0 {
			return
		}
		chunked, err := checkFraming(&h)
		if err != nil {
			t.Fatalf("refusal let on a head checkFraming refuses: %v", err)
		}
		length := int64(h.ContentLength()) // -1 chunked, -2 none
		if chunked != (length == -1) {
			t.Fatalf("checkFraming says chunked %v, fasthttp's length is %d", chunked, length)
		}
		if length == -2 {
			length = 0
		}
		if isWebSocketUpgrade(&h) && length != 0 {
			t.Fatalf("an upgrade let on with a body (length %d)", length)
		}

		req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(head)))
		if err != nil {
			if framingError(err) {
				t.Fatalf("let on, but net/http refuses its framing: %v", err)
			}
			return
		}
		defer req.Body.Close()
		goChunked := len(req.TransferEncoding) > 0
		if goChunked && fmt.Sprint(req.TransferEncoding) != "[chunked]" {
			t.Fatalf("net/http reads Transfer-Encoding %q", req.TransferEncoding)
		}
		if goChunked != chunked {
			t.Fatalf("chunked: the balancer %v, net/http %v", chunked, goChunked)
		}
		if !chunked && req.ContentLength != length {
			t.Fatalf("Content-Length: the balancer %d, net/http %d", length, req.ContentLength)
		}
	})
}

// framingError reports whether net/http refused a head for its body
// framing (transfer.go's errors), rather than for its URL, Host or a
// header value.
func framingError(err error) bool {
	s := strings.ToLower(err.Error())
	for _, framing := range []string{"content-length", "content length", "transfer-encoding", "transfer encoding", "chunked"} {
		if strings.Contains(s, framing) {
			return true
		}
	}
	return false
}
