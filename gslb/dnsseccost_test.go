package gslb

import (
	"crypto"
	"fmt"
	"io"
	"sync/atomic"
	"testing"

	"github.com/miekg/dns"

	"github.com/ringlb/ringlb/configs"
)

// countingKey is a signing key that counts the signatures it makes.
type countingKey struct {
	crypto.Signer
	n *atomic.Int64
}

func (k countingKey) Sign(rand io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	k.n.Add(1)
	return k.Signer.Sign(rand, digest, opts)
}

// countSignatures makes every key of s's signers count the ECDSA
// signatures it computes into n (before s starts).
func countSignatures(s *Server, n *atomic.Int64) {
	for _, z := range s.state.Load().zones {
		if sg := z.signer; sg != nil {
			for _, keys := range [][]signingKey{sg.ksks, sg.zsks} {
				for i := range keys {
					keys[i].priv = countingKey{keys[i].priv, n}
				}
			}
		}
	}
}

// signatures_per_second bounds signatures, the CPU a flood of new names
// costs, whatever the keys: during a rollover two keys sign each RRset (a
// combined signing key's double-signature rollover: two active KSKs and no
// ZSK, each signing everything), and a zone may list up to 8 active keys.
// Counted per RRset, the budget let each new name cost as many signatures
// as there are keys.
func TestSigningBudgetCountsSignaturesNotRRsets(t *testing.T) {
	dir := t.TempDir()
	var keys []string
	for range 2 {
		k, _, err := configs.GenerateDNSSECKey(dir, "ringlb.test", true)
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k)
	}
	cfg := signed(fuzzConfig(t), keys...)
	cfg.Zones[0].DNSSEC.SignaturesPerSecond = 100
	var made atomic.Int64
	clock := newTestClock() // stands still: the budget never refills
	s := startGSLBWith(t, cfg, func(s *Server) { clock.use(s); countSignatures(s, &made) })
	const flood = 2000
	for i := range flood {
		exchangeSized(t, s, "udp", doQuestion(fmt.Sprintf("r%05d.nope.ringlb.test.", i)))
	}
	t.Logf("%d UDP queries for new names, two keys signing each RRset, signatures_per_second 100: %d ECDSA signatures", flood, made.Load())
	if made.Load() > 100 {
		t.Errorf("%d signatures computed, want at most the budget's burst of 100", made.Load())
	}
	// Within it, answers are signed by both keys, and validate.
	m := query(t, s, "tcp", "r00000.nope.ringlb.test.", dns.TypeA, withDO(false))
	if tags := checkSigned(t, m, dnskeys(t, s)); len(tags) != 2 {
		t.Errorf("signed by %d keys, want 2: %v", len(tags), m)
	}
}
