package configs

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// DNSSEC key files (gslb.zones[].dnssec.keys): BIND's pair, as dnssec-keygen
// and `ringlb keygen -dnssec` write them — K<zone>+013+<tag>.key holds the
// DNSKEY record (public), K<zone>+013+<tag>.private the private key (format
// v1.3). Their format and checks live here, so that `ringlb check`, start-up
// and SIGHUP read them alike, and keys made with BIND's tools work as they are.

// DNSSECAlgorithm is the one algorithm signed with: ECDSA P-256 with SHA-256
// (13), what the root and most TLDs validate, with small keys and signatures.
const DNSSECAlgorithm = dns.ECDSAP256SHA256

// DNSKEY flags: a zone key (ZSK) signs the zone's data; with the SEP bit
// (KSK) it signs the DNSKEY set and is the key the parent's DS names.
const (
	FlagsZSK = dns.ZONE
	FlagsKSK = dns.ZONE | dns.SEP
)

// maxKeyFileBytes bounds what is read of a key file: both are a few hundred bytes.
const maxKeyFileBytes = 64 << 10

// DNSSECKeyFiles returns the public (.key) and private (.private) file of the
// key named file: its base name as dnssec-keygen prints it
// (Kringlb.test.+013+12345), or either of its two files.
func DNSSECKeyFiles(file string) (public, private string) {
	base := strings.TrimSuffix(strings.TrimSuffix(file, ".key"), ".private")
	return base + ".key", base + ".private"
}

// ReadDNSSECKey reads the key pair named file (see DNSSECKeyFiles) of zone:
// its DNSKEY record and its private key. It refuses a private file the rule
// of secret files refuses (secretFileMode: whoever reads it can sign for
// the zone), a key of another zone or another algorithm than 13,
// flags other than 256 (ZSK) or 257 (KSK), and a private key that is not the
// DNSKEY's. Errors never quote the private file's content.
func ReadDNSSECKey(file, zone string) (*dns.DNSKEY, crypto.Signer, error) {
	pubFile, privFile := DNSSECKeyFiles(file)
	key, err := readDNSKEY(pubFile, zone)
	if err != nil {
		return nil, nil, err
	}
	raw, err := readSecret(privFile, whatDNSSECKey(dns.Fqdn(zone)), maxKeyFileBytes)
	if err != nil {
		return nil, nil, err
	}
	pk, err := key.ReadPrivateKey(bytes.NewReader(raw), privFile)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: not a private key file of algorithm 13 (v1.2 or v1.3 format)", privFile)
	}
	ek, ok := pk.(*ecdsa.PrivateKey)
	if !ok || ek.D == nil {
		return nil, nil, fmt.Errorf("%s: not an ECDSA P-256 private key", privFile)
	}
	// miekg/dns takes the public half from the DNSKEY without checking it:
	// derive it from the private scalar and compare, so that a .key and
	// .private that do not belong together fail here, not at the first
	// signature a validator rejects.
	priv, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), ek.D.FillBytes(make([]byte, 32)))
	if err != nil {
		return nil, nil, fmt.Errorf("%s: not a valid P-256 private key", privFile)
	}
	derived, err := priv.PublicKey.Bytes()
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", privFile, err)
	}
	published, err := base64.StdEncoding.DecodeString(key.PublicKey)
	if err != nil || !bytes.Equal(derived[1:], published) { // derived: 0x04 || X || Y
		return nil, nil, fmt.Errorf("%s is not the private key of %s (key tag %d)", privFile, pubFile, key.KeyTag())
	}
	return key, priv, nil
}

// readDNSKEY reads the one DNSKEY record of a .key file (comment lines
// allowed, as BIND writes them).
func readDNSKEY(path, zone string) (*dns.DNSKEY, error) {
	raw, err := readFile(path, maxKeyFileBytes, nil) // public
	if err != nil {
		return nil, err
	}
	zp := dns.NewZoneParser(bytes.NewReader(raw), dns.Fqdn(zone), path)
	var key *dns.DNSKEY
	for rr, ok := zp.Next(); ok; rr, ok = zp.Next() {
		k, isKey := rr.(*dns.DNSKEY)
		if !isKey || key != nil {
			return nil, fmt.Errorf("%s: must hold one DNSKEY record and nothing else", path)
		}
		key = k
	}
	if err := zp.Err(); err != nil {
		return nil, ZoneError(err) // names path
	}
	switch {
	case key == nil:
		return nil, fmt.Errorf("%s: holds no DNSKEY record", path)
	case dns.CanonicalName(key.Hdr.Name) != dns.CanonicalName(zone):
		return nil, fmt.Errorf("%s: a key of %s, not of zone %s", path, key.Hdr.Name, dns.Fqdn(zone))
	case key.Algorithm != DNSSECAlgorithm:
		return nil, fmt.Errorf("%s: algorithm %d; only 13 (ECDSAP256SHA256) is supported (dnssec-keygen -a ECDSAP256SHA256, or ringlb keygen -dnssec)", path, key.Algorithm)
	case key.Protocol != 3:
		return nil, fmt.Errorf("%s: protocol %d, must be 3", path, key.Protocol)
	case key.Flags != FlagsZSK && key.Flags != FlagsKSK:
		return nil, fmt.Errorf("%s: flags %d; must be 256 (zone-signing key) or 257 (key-signing key)", path, key.Flags)
	}
	key.Hdr.Name = dns.CanonicalName(key.Hdr.Name)
	return key, nil
}

// ZoneError is a zone parser's error without the token it stopped at, the
// line and column kept, for a zone file or a DNSSEC key's .key file: either
// may be any file a config names, such as the cluster's keyring, which is
// one token, and the error goes to the log and the config API's answers.
// miekg/dns writes `FILE: dns: WHAT: "TOKEN" at line: L:C`.
func ZoneError(err error) error {
	var pe *dns.ParseError
	if !errors.As(err, &pe) {
		return err
	}
	msg := pe.Error()
	at := strings.LastIndex(msg, " at line: ")
	if at < 0 {
		return errors.New("not a zone file")
	}
	for i := strings.Index(msg, `: "`); i >= 0 && i < at; {
		if q, qerr := strconv.QuotedPrefix(msg[i+2 : at]); qerr == nil && i+2+len(q) == at {
			return errors.New(msg[:i] + msg[at:])
		}
		next := strings.Index(msg[i+1:], `: "`)
		if next < 0 {
			break
		}
		i += 1 + next
	}
	return errors.New("not a zone file" + msg[at:])
}

// GenerateDNSSECKey makes a new ECDSA P-256 key for zone in dir — a KSK
// (flags 257) when ksk, else a ZSK (256) — written as BIND writes it:
// K<zone>+013+<tag>.key (mode 0644) and .private (0600). Neither file is
// ever overwritten. It returns the key's base name (what
// gslb.zones[].dnssec.keys[].file takes) and its DNSKEY.
func GenerateDNSSECKey(dir, zone string, ksk bool) (string, *dns.DNSKEY, error) {
	if _, ok := dns.IsDomainName(zone); !ok || zone == "" {
		return "", nil, fmt.Errorf("%q is not a zone name", zone)
	}
	zone = dns.CanonicalName(zone)
	flags, kind := uint16(FlagsZSK), "zone-signing"
	if ksk {
		flags, kind = FlagsKSK, "key-signing"
	}
	// A key tag is 16 bits: a new key may share one with a key of the
	// zone already in dir (1 in 65,536 a key). Such a key is drawn again,
	// as dnssec-keygen does — two keys of a zone under one tag cost
	// validators work, and the files would collide.
	var (
		key               *dns.DNSKEY
		pk                crypto.PrivateKey
		base              string
		pubFile, privFile string
	)
	for range maxKeyTagDraws {
		key = &dns.DNSKEY{Hdr: dns.RR_Header{Name: zone, Rrtype: dns.TypeDNSKEY, Class: dns.ClassINET, Ttl: 3600},
			Flags: flags, Protocol: 3, Algorithm: DNSSECAlgorithm}
		var err error
		if pk, err = key.Generate(256); err != nil {
			return "", nil, fmt.Errorf("generate a key for %s: %w", zone, err)
		}
		base = filepath.Join(dir, fmt.Sprintf("K%s+%03d+%05d", zone, DNSSECAlgorithm, key.KeyTag()))
		pubFile, privFile = DNSSECKeyFiles(base)
		if !exists(pubFile) && !exists(privFile) {
			break
		}
	}
	now := time.Now().UTC().Format("20060102150405")
	if err := CreateExclusive(privFile, 0o600, key.PrivateKeyString(pk)+"Created: "+now+"\nPublish: "+now+"\nActivate: "+now+"\n"); err != nil {
		return "", nil, err
	}
	pub := fmt.Sprintf("; This is a %s key, keyid %d, for %s\n; Created: %s\n%s\n", kind, key.KeyTag(), zone, now, key.String())
	if err := CreateExclusive(pubFile, 0o644, pub); err != nil {
		os.Remove(privFile)
		return "", nil, err
	}
	return base, key, nil
}

// maxKeyTagDraws bounds how often GenerateDNSSECKey draws a key whose tag
// is taken in its directory before it gives up (CreateExclusive says so).
const maxKeyTagDraws = 16

// exists reports whether path names anything.
func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// CreateExclusive creates path with mode perm holding content (a key); an
// existing file is left alone: overwriting a key would lock a node out of
// its cluster or a zone out of its resolvers.
func CreateExclusive(path string, perm fs.FileMode, content string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%s exists; not overwriting a key (remove it first, or rotate: docs/SECURITY.md)", path)
	}
	if err != nil {
		return err
	}
	if _, err := io.WriteString(f, content); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	return f.Close()
}
