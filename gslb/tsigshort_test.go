package gslb

import (
	"encoding/base64"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/ringlb/ringlb/configs"
)

// Every NOTIFY a zone with a TSIG key sends carries a MAC made with the
// secret, and whoever sees one on its way (or asks with guesses: a wrong
// MAC is answered BADSIG) can try secrets against it offline. A secret of
// two bytes — anything base64 decoded to — was taken: one captured NOTIFY
// gave it away in at most 65,536 HMACs, and with it a transfer (from an
// allowed address) or a forged acknowledgement. Secrets shorter than 16
// bytes are refused, as admin tokens are.
func TestShortTSIGSecretRefused(t *testing.T) {
	capture, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer capture.Close()
	file := filepath.Join(t.TempDir(), "xfr.key")
	if err := os.WriteFile(file, []byte(base64.StdEncoding.EncodeToString([]byte("ab"))+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	const keyName = "xfr.ringlb.test."
	cfg := withTransfer(t, fuzzConfig(t), configs.Transfer{Allow: []string{"127.0.0.0/8"}, Notify: []string{capture.LocalAddr().String()},
		TSIG: &configs.TSIG{Name: keyName, Algorithm: "hmac-sha256", SecretFile: file}})
	if _, err := New(cfg, "gslb-test", nil, nil); err != nil {
		t.Logf("a 2-byte TSIG secret: %v", err)
		return
	}
	s := startGSLB(t, cfg)
	// The NOTIFY it sends at start, seen on the wire.
	buf := make([]byte, 4096)
	capture.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, _, err := capture.ReadFrom(buf)
	if err != nil {
		t.Fatal(err)
	}
	notify := buf[:n]
	var found string
	tries := 0
	for i := range 1 << 16 {
		tries++
		guess := base64.StdEncoding.EncodeToString([]byte{byte(i >> 8), byte(i)})
		// TsigVerify rewrites the message it checks: a copy each.
		if dns.TsigVerify(append([]byte(nil), notify...), guess, "", false) == nil {
			found = guess
			break
		}
	}
	if found == "" {
		t.Fatal("secret not found")
	}
	rrs, err := axfr(t, s, keyName, found)
	t.Logf("a 2-byte TSIG secret taken: found from one NOTIFY in %d HMACs; a transfer signed with it: %d records, err %v", tries, len(rrs), err)
	t.Errorf("a TSIG secret of 2 bytes was taken, and gave itself away in %d HMACs", tries)
}
