package configs

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// maxPEMFileBytes bounds what is read of a CA bundle, a certificate chain
// or its key (tls.ca_file, cert_file, key_file): a system's whole bundle
// of roots is about 200 KiB.
const maxPEMFileBytes = 1 << 20

// ClientConfig is how a TLS client verifies a peer with t — a static
// edge the balancer dials or checks, a gslb pool member an https monitor
// checks: the peer's certificate must chain to ca_file (default: the
// system's roots) and name server_name (default: host), which is also sent
// as SNI; cert_file and key_file are presented to it. Verification cannot
// be turned off here. The files are read now, through the bounded reader
// of config files (a regular file, at most 1 MiB; a key's content is never
// quoted): key_file, a secret, is held to the rule of secret files (closed
// to other users of the host), the certificates are public. A caller builds
// a new config to take up renewed files (a reload does), once, and hands
// that value to every user of it: a file read again later may have been
// swapped since the read that was checked.
func (t EdgeTLS) ClientConfig(host string) (*tls.Config, error) {
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: host, NextProtos: []string{"http/1.1"}}
	if t.ServerName != "" {
		c.ServerName = t.ServerName
	}
	if t.CAFile != "" {
		roots, ok := t.ca.of(t.CAFile)
		if !ok {
			var err error
			if roots, err = loadCAFile(t.CAFile); err != nil {
				return nil, fmt.Errorf("tls.%w", err)
			}
		}
		c.RootCAs = roots
	}
	if t.CertFile != "" {
		cert, err := keptKeyPair(t.pair, t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("tls.%w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

// loadCAFile reads a PEM bundle of the certificates a peer's must chain
// to (tls.ca_file).
func loadCAFile(file string) (*x509.CertPool, error) {
	pem, err := readFile(file, maxPEMFileBytes, nil)
	if err != nil {
		return nil, &tlsFileError{"ca_file", err}
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return nil, &tlsFileError{"ca_file", fmt.Errorf("%s: no PEM certificate in it", file)}
	}
	return roots, nil
}

// LoadKeyPair reads a certificate and its private key, the key held to the
// rule of every secret file (readSecret): one any user of the host can
// read is refused. Errors name the field (cert_file, key_file) first.
func LoadKeyPair(certFile, keyFile string) (tls.Certificate, error) {
	certPEM, err := readFile(certFile, maxPEMFileBytes, nil)
	if err != nil {
		return tls.Certificate{}, &tlsFileError{"cert_file", err}
	}
	keyPEM, err := readSecret(keyFile, whatTLSKey, maxPEMFileBytes)
	if err != nil {
		return tls.Certificate{}, &tlsFileError{"key_file", err}
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, &tlsFileError{pairFields, err}
	}
	return cert, nil
}

// KeyPair is the certificate and key the balancer terminates TLS with:
// as the config's check loaded them (checkTLSFiles), for as long as the
// fields name the same files, else read now (LoadKeyPair). A start or
// reload reads them once, the check's read, and a file swapped between the
// check and the start is not what is served.
func (t TLS) KeyPair() (tls.Certificate, error) {
	return keptKeyPair(t.pair, t.CertFile, t.KeyFile)
}

// keptKeyPair is the pair kept for certFile and keyFile, else LoadKeyPair.
func keptKeyPair(kept checked[tls.Certificate], certFile, keyFile string) (tls.Certificate, error) {
	if cert, ok := kept.of(pairFile(certFile, keyFile)); ok {
		return cert, nil
	}
	return LoadKeyPair(certFile, keyFile)
}

// PairStamp identifies the content of the certificate and key files that
// KeyPair hands out: the stamp KeyPairStamp took before the check's read
// of them, else one taken now, to be taken before KeyPair reads them. A
// stamp taken after the read (by the start or reload, a moment after the
// check) recorded a renewal landing in between as the certificate in use,
// and the balancer's watcher never loaded it.
func (t TLS) PairStamp() string {
	if _, ok := t.pair.of(pairFile(t.CertFile, t.KeyFile)); ok {
		return t.pairStamp
	}
	return KeyPairStamp(t.CertFile, t.KeyFile)
}

// KeyPairStamp identifies the current content of a certificate and key
// file by their modification times and sizes. Taken before they are read,
// so that a write racing the read shows as a change at the next look.
func KeyPairStamp(certFile, keyFile string) string {
	var s string
	for _, f := range []string{certFile, keyFile} {
		if fi, err := os.Stat(f); err == nil {
			s += fi.ModTime().String() + fmt.Sprint(fi.Size())
		}
	}
	return s
}

// pairFile names a certificate and key file together, for checked.
func pairFile(certFile, keyFile string) string { return certFile + "\x00" + keyFile }

// pairFields is what a tlsFileError names when the certificate and the key
// each read but do not make a pair.
const pairFields = "cert_file and key_file"

// tlsFileError is a TLS file that does not load (loadCAFile, LoadKeyPair),
// with the field it is named by: "field: why", as the start and a reload
// say it; the check locates it at that field (checkTLSFiles).
type tlsFileError struct {
	field string
	err   error
}

func (e *tlsFileError) Error() string { return e.field + ": " + e.err.Error() }
func (e *tlsFileError) Unwrap() error { return e.err }

// tlsFileField is where err, a file of the TLS section at path that does
// not load, is named — the field of the file — and what is said there.
func tlsFileField(path string, err error) (string, error) {
	var fe *tlsFileError
	switch {
	case !errors.As(err, &fe):
		return path, err
	case fe.field == pairFields:
		return path, fe
	default:
		return path + "." + fe.field, fe.err
	}
}

// checkTLSFiles loads what a TLS section names (at path: balancer.tls, a
// static edge's or a gslb monitor's tls) as the start and every reload
// load them — the CA bundle (ca; "" for none), the certificate and its
// key (when both are given; that they come together is the caller's rule)
// — and reports each file that does not load at its field, so the check
// refuses what a start would refuse: before, it only stated the files, and
// a key open to others or a file holding no key passed it. A key its
// group may read is warned of, as every secret file is. What loaded is
// returned, kept for the start to use (ClientConfig, KeyPair): read once,
// as the config's other secrets are (keep).
func checkTLSFiles(ps *problems, path, ca, cert, key string) (roots checked[*x509.CertPool], pair checked[tls.Certificate]) {
	report := func(err error) {
		at, why := tlsFileField(path, err)
		ps.add(at, "%v", why)
	}
	if ca != "" {
		var err error
		if roots, err = keep(ca, loadCAFile); err != nil {
			report(err)
		}
	}
	switch {
	case cert != "" && key != "":
		var err error
		if pair, err = keep(pairFile(cert, key), func(string) (tls.Certificate, error) { return LoadKeyPair(cert, key) }); err != nil {
			report(err)
		}
		ps.warnSecret(path+".key_file", key, whatTLSKey)
	case cert != "":
		checkFile(ps, path+".cert_file", cert)
	case key != "":
		checkFile(ps, path+".key_file", key)
	}
	return roots, pair
}
