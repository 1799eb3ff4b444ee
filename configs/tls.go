package configs

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
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
		pem, err := readFile(t.CAFile, maxPEMFileBytes, nil)
		if err != nil {
			return nil, fmt.Errorf("tls.ca_file: %w", err)
		}
		c.RootCAs = x509.NewCertPool()
		if !c.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls.ca_file %s: no PEM certificate in it", t.CAFile)
		}
	}
	if t.CertFile != "" {
		cert, err := LoadKeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("tls.%w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

// LoadKeyPair reads a certificate and its private key, the key held to the
// rule of every secret file (readSecret): one any user of the host can
// read is refused. Errors name the field (cert_file, key_file) first.
func LoadKeyPair(certFile, keyFile string) (tls.Certificate, error) {
	certPEM, err := readFile(certFile, maxPEMFileBytes, nil)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("cert_file: %w", err)
	}
	keyPEM, err := readSecret(keyFile, "the TLS private key", maxPEMFileBytes)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("key_file: %w", err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("cert_file and key_file: %w", err)
	}
	return cert, nil
}
