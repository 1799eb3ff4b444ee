package health

import (
	"bytes"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ringlb/ringlb/configs"
)

// A node's answer to a signed read (configs.HeaderPeerAnswer) is good for
// that answer — its status and body — to that request, from that node,
// for that reader, and nothing else: altered, replayed for another
// request, or passed off as another node's, it is refused.
func TestPeerAnswerSignatures(t *testing.T) {
	kr, err := loadKeyring(configs.Cluster{SecretKeyFile: keyringFile(t, configs.GenerateKey())})
	if err != nil {
		t.Fatal(err)
	}
	other, err := loadKeyring(configs.Cluster{SecretKeyFile: keyringFile(t, configs.GenerateKey())})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	request := kr.Sign("gslb-a", "gslb-b", http.MethodGet, "/api/monitors", nil)
	// The same read of the same node, a second later: another MAC.
	next := signedAt(t, kr, "gslb-a", "gslb-b", http.MethodGet, "/api/monitors", now.Add(time.Second))
	body := []byte(`{"members":{"ide.ringlb.test./east/bal-1":true}}`)
	answer := kr.SignAnswer("gslb-b", "gslb-a", request, http.StatusOK, body)
	if err := kr.VerifyAnswer(answer, "gslb-a", "gslb-b", request, http.StatusOK, body, now); err != nil {
		t.Fatalf("a genuine answer: %v", err)
	}
	byC := kr.SignAnswer("gslb-c", "gslb-a", request, http.StatusOK, body)
	forB := kr.SignAnswer("gslb-b", "gslb-c", request, http.StatusOK, body)
	for _, tt := range []struct {
		name, header, self, peer, request string
		status                            int
		body                              []byte
		want                              error // nil: any error
	}{
		{"body altered", answer, "gslb-a", "gslb-b", request, 200, bytes.Replace(body, []byte("true"), []byte("false"), 1), ErrPeerBadMAC},
		{"status altered", answer, "gslb-a", "gslb-b", request, 503, body, ErrPeerBadMAC},
		{"replayed for another request", answer, "gslb-a", "gslb-b", next, 200, body, ErrPeerBadMAC},
		{"another node's answer", byC, "gslb-a", "gslb-b", request, 200, body, nil},
		{"made for another reader", forB, "gslb-a", "gslb-b", request, 200, body, ErrPeerNotOurs},
		{"missing", "", "gslb-a", "gslb-b", request, 200, body, ErrPeerMissing},
		{"the request's own signature", request, "gslb-b", "gslb-a", request, 200, nil, ErrPeerBadMAC},
		{"no request signature to answer", answer, "gslb-a", "gslb-b", "", 200, body, ErrPeerMalform},
		{"late", answer, "gslb-a", "gslb-b", request, 200, body, ErrPeerExpired},
	} {
		at := now
		if tt.name == "late" {
			at = now.Add(PeerWindow + 2*time.Second)
		}
		err := kr.VerifyAnswer(tt.header, tt.self, tt.peer, tt.request, tt.status, tt.body, at)
		if err == nil || tt.want != nil && !errors.Is(err, tt.want) {
			t.Errorf("%s: %v, want %v", tt.name, err, tt.want)
		}
	}
	if err := other.VerifyAnswer(answer, "gslb-a", "gslb-b", request, 200, body, now); !errors.Is(err, ErrPeerBadMAC) {
		t.Errorf("another cluster's key: %v, want %v", err, ErrPeerBadMAC)
	}
	// An answer's signature is never a request's: its method holds a space.
	if _, err := kr.VerifyRequest(answer, "gslb-a", http.MethodGet, "/api/monitors", nil, now); err == nil {
		t.Error("an answer's signature passed for a request's")
	}
}

// signedAt is Sign's value as made at the time at.
func signedAt(t *testing.T, k *Keyring, node, to, method, uri string, at time.Time) string {
	t.Helper()
	ts := strconv.FormatInt(at.Unix(), 10)
	mac := peerMAC((*k.sign.Load())[0], node, to, ts, method, uri, nil)
	return node + " " + ts + " " + base64.RawURLEncoding.EncodeToString(mac) + " " + to
}

// ReadAnswer requires the signature from a peer announcing
// PeerSigningAnswer and reads an earlier release's peer as before; a
// refusal is counted each time and logged once per transition.
func TestReadAnswer(t *testing.T) {
	kr, err := loadKeyring(configs.Cluster{SecretKeyFile: keyringFile(t, configs.GenerateKey())})
	if err != nil {
		t.Fatal(err)
	}
	var logged bytes.Buffer
	kr.log = slog.New(slog.NewTextHandler(&logged, nil))
	levels := map[string]int{"gslb-b": PeerSigningAnswer, "gslb-old": PeerSigningForwarded}
	kr.members = func(name string) (Node, bool) {
		l, ok := levels[name]
		return Node{Name: name, Meta: Meta{PeerSigning: l}}, ok
	}
	body := []byte(`{"members":{}}`)
	answer := func(peer string, signed bool, b []byte) *http.Response {
		req, _ := http.NewRequest(http.MethodGet, "http://127.0.0.1:1/api/monitors", nil)
		kr.SignRequest(req.Header, "gslb-a", peer, req.Method, req.URL.RequestURI(), nil)
		resp := &http.Response{StatusCode: http.StatusOK, Header: http.Header{}, Request: req, Body: io.NopCloser(bytes.NewReader(b))}
		if signed {
			resp.Header.Set(configs.HeaderPeerAnswer, kr.SignAnswer(peer, "gslb-a", req.Header.Get(configs.HeaderPeer), http.StatusOK, b))
		}
		return resp
	}
	if got, err := kr.ReadAnswer(answer("gslb-old", false, body), "gslb-a", "gslb-old", PeerSigningAnswer, 1<<20); err != nil || !bytes.Equal(got, body) {
		t.Errorf("an earlier release's unsigned answer: %q %v", got, err)
	}
	if got, err := kr.ReadAnswer(answer("gslb-b", true, body), "gslb-a", "gslb-b", PeerSigningAnswer, 1<<20); err != nil || !bytes.Equal(got, body) {
		t.Errorf("a signed answer: %q %v", got, err)
	}
	for range 3 {
		if _, err := kr.ReadAnswer(answer("gslb-b", false, body), "gslb-a", "gslb-b", PeerSigningAnswer, 1<<20); !errors.Is(err, ErrAnswerUnsigned) {
			t.Errorf("an unsigned answer from a node that signs them: %v, want %v", err, ErrAnswerUnsigned)
		}
	}
	if _, err := kr.ReadAnswer(answer("gslb-b", true, body), "gslb-a", "gslb-b", PeerSigningAnswer, int64(len(body)-1)); !errors.Is(err, ErrAnswerUnsigned) {
		t.Errorf("a signed answer beyond the bound: %v, want refused", err)
	}
	if _, err := kr.ReadAnswer(answer("gslb-b", true, body), "gslb-a", "gslb-b", PeerSigningAnswer, 1<<20); err != nil {
		t.Errorf("a signed answer again: %v", err)
	}
	// A form the node does not announce yet: its answers of that kind are
	// an earlier release's, unsigned.
	if got, err := kr.ReadAnswer(answer("gslb-b", false, body), "gslb-a", "gslb-b", PeerSigningClaimAnswer, 1<<20); err != nil || !bytes.Equal(got, body) {
		t.Errorf("an unsigned answer of a later form than the node announces: %q %v", got, err)
	}
	if _, err := kr.ReadAnswer(answer("gslb-new", false, body), "gslb-a", "gslb-new", PeerSigningAnswer, 1<<20); !errors.Is(err, ErrAnswerUnsigned) {
		t.Errorf("an unsigned answer from a node not (yet) a member: %v, want refused", err)
	}
	if n := kr.answers.refused.Load(); n != 5 {
		t.Errorf("refused answers counted: %d, want 5", n)
	}
	lines := strings.Split(strings.TrimSpace(logged.String()), "\n")
	t.Logf("log:\n%s", logged.String())
	if len(lines) != 3 || !strings.Contains(lines[0], "level=WARN") || !strings.Contains(lines[1], "level=INFO") || !strings.Contains(lines[2], "peer=gslb-new") {
		t.Errorf("log lines: %d, want 3: refused (once for 4 refusals), verifying again, the new node refused", len(lines))
	}
	var none *Keyring
	if got, err := none.ReadAnswer(answer("gslb-b", false, body), "gslb-a", "gslb-b", PeerSigningAnswer, 1<<20); err != nil || !bytes.Equal(got, body) {
		t.Errorf("a cluster without a key reads answers as they come: %q %v", got, err)
	}
}
