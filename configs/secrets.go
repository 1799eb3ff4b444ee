package configs

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// Secret files: the cluster keyring (cluster.secret_key_file) and the admin
// tokens (*.admin.token_file). Their format and checks live here, so that
// `ringlb check`, start-up and SIGHUP read them alike.

// GenerateKey returns a new random 32-byte key, base64-encoded: a line of a
// keyring file, an admin token or a join-token HMAC secret (`ringlb keygen`).
func GenerateKey() string {
	var key [32]byte
	_, _ = rand.Read(key[:]) // crypto/rand.Read never fails on Linux (it panics first)
	return base64.StdEncoding.EncodeToString(key[:])
}

// ReadKeyring reads a keyring file: one base64 AES key (16, 24 or 32 bytes)
// per line, the first one primary (gossip is encrypted with it; every key of
// the file is accepted). Blank lines and lines starting with # are skipped.
// Rotation is three edits of the file on every node, each followed by a
// SIGHUP: add the new key as a second line, move it to the first, remove the
// old one.
func ReadKeyring(path string) ([][]byte, error) {
	raw, err := readSecret(path, whatKeyring, maxSecretFileBytes)
	if err != nil {
		return nil, err
	}
	return parseKeyring(path, raw)
}

// checked is a secret as the check of a config read it, with the file it
// read it from. A reload checks the file, then applies it: were the secret
// read again to apply, a file swapped between the two would apply what was
// never checked, or fail after part of the reload had applied (the role's
// section, then the keyring). So the check keeps what it read, and the
// config's readers (Cluster.Keyring, Admin.Token, Admin.ReadMetricsToken,
// Admin.Users, EdgeAuth.Secret, TSIG.Secret, DNSSECKey.Read) hand that out
// for as long as the field names the same file; a config built in code,
// never checked, reads it.
type checked[T any] struct {
	file string
	v    T
}

// of is the value checked for file, if file is the one it was read from.
func (c checked[T]) of(file string) (T, bool) {
	if c.file == "" || c.file != file {
		var zero T
		return zero, false
	}
	return c.v, true
}

// keep reads file with read and records what it read; an error keeps
// nothing (the check refuses the config).
func keep[T any](file string, read func(string) (T, error)) (checked[T], error) {
	v, err := read(file)
	if err != nil {
		return checked[T]{}, err
	}
	return checked[T]{file: file, v: v}, nil
}

// maxSecretFileBytes bounds what is read of a keyring, token or users file:
// a keyring and a token are a line, a users file of maxAdminUsers users
// about 130 KiB.
const maxSecretFileBytes = 256 << 10

// readSecret reads a file a config names for a secret (a key, a token,
// users; what says which, for messages), at most limit bytes of it, and
// refuses one whose mode breaks the rule of secret files (secretFileMode).
// Its content is never quoted in an error.
func readSecret(path, what string, limit int) ([]byte, error) {
	return readFile(path, limit, func(fi fs.FileInfo) error {
		_, err := secretFileMode(path, what, fi)
		return err
	})
}

// readFile reads a file a config names, at most limit bytes of it, after
// check (nil: none) has accepted what the open file is. A config can name
// any path, and a check, a PUT of the config API and a SIGHUP read it: a
// huge file would be read whole, and what OpenRegular refuses would hold
// the reader. Only a regular file is read (a symlink to one is one), and no
// more of it than limit.
func readFile(path string, limit int, check func(fs.FileInfo) error) ([]byte, error) {
	f, fi, err := OpenRegular(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if check != nil {
		if err := check(fi); err != nil {
			return nil, err
		}
	}
	raw, err := io.ReadAll(io.LimitReader(f, int64(limit)+1))
	if err != nil {
		return nil, fmt.Errorf("cannot read %s: %w", path, unwrapPath(err))
	}
	if len(raw) > limit {
		return nil, fmt.Errorf("%s: larger than %d bytes, not a file of this kind", path, limit)
	}
	return raw, nil
}

// OpenRegular opens a file a config names for reading, and only if it is a
// regular file (a symlink to one is one); its error says which path and
// why. A FIFO would hold the reader in open(2) until someone writes to it (a
// reload holds the reload lock meanwhile), a device such as /dev/zero never
// ends, and opening some devices does something. What is not a regular
// file is refused before it is opened; then the open does not wait
// (O_NONBLOCK, which changes nothing for a regular file) and what is judged
// again is what was opened, so a FIFO swapped in between by someone who can
// write its directory is refused too, not waited on. What the node reads
// from it, it believes — a zone, a CA, a key — so a file in a directory
// others may write is refused before any of that (wayOpenToOthers): they
// could put their own in its place.
func OpenRegular(path string) (*os.File, fs.FileInfo, error) {
	if msg := wayOpenToOthers(path, "file"); msg != "" {
		return nil, nil, fmt.Errorf("cannot read %s: %s", path, msg)
	}
	fi, err := os.Stat(path)
	if err := notRegular(path, fi, err); err != nil {
		return nil, nil, err
	}
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, nil, notRegular(path, nil, err)
	}
	fi, err = f.Stat()
	if err := notRegular(path, fi, err); err != nil {
		f.Close()
		return nil, nil, err
	}
	return f, fi, nil
}

// notRegular is OpenRegular's refusal of path after a look at it (fi, or
// the error the look failed with): nil when it is a regular file.
func notRegular(path string, fi fs.FileInfo, err error) error {
	switch {
	case err != nil:
		return fmt.Errorf("cannot read %s: %w", path, unwrapPath(err))
	case !fi.Mode().IsRegular():
		return fmt.Errorf("cannot read %s: not a regular file (%s)", path, fi.Mode().Type())
	}
	return nil
}

// maxKeyringKeys bounds a keyring: rotation needs two keys at a time.
const maxKeyringKeys = 8

func parseKeyring(path string, raw []byte) ([][]byte, error) {
	var keys [][]byte
	seen := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		// Never quote the line: it is a secret.
		key, err := base64.StdEncoding.DecodeString(text)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: not a base64 key (make one with: ringlb keygen)", path, line)
		}
		switch len(key) {
		case 16, 24, 32:
		default:
			return nil, fmt.Errorf("%s:%d: key is %d bytes, want 16, 24 or 32 (make one with: ringlb keygen)", path, line, len(key))
		}
		if seen[string(key)] {
			return nil, fmt.Errorf("%s:%d: the same key is listed twice", path, line)
		}
		seen[string(key)] = true
		keys = append(keys, key)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	switch {
	case len(keys) == 0:
		return nil, fmt.Errorf("%s: holds no key (make one with: ringlb keygen -o %s)", path, path)
	case len(keys) > maxKeyringKeys:
		return nil, fmt.Errorf("%s: %d keys, at most %d (remove the retired ones)", path, len(keys), maxKeyringKeys)
	}
	return keys, nil
}

// unwrapPath drops the *fs.PathError's own copy of the path, which the
// caller's message already names.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// MinTokenLength is the shortest admin token accepted: a short token can be
// guessed online against an admin port.
const MinTokenLength = 16

// ReadToken reads an admin bearer token file: its content, surrounding
// whitespace trimmed, at least MinTokenLength bytes.
func ReadToken(path string) ([]byte, error) {
	raw, err := readSecret(path, whatToken, maxSecretFileBytes)
	if err != nil {
		return nil, err
	}
	token := bytes.TrimSpace(raw)
	if len(token) < MinTokenLength {
		return nil, fmt.Errorf("%s: the token is %d bytes, need at least %d (make one with: ringlb keygen -o %s)", path, len(token), MinTokenLength, path)
	}
	for _, c := range token {
		// It travels in an Authorization header.
		if c <= ' ' || c >= 0x7f {
			return nil, fmt.Errorf("%s: the token holds a space, control or non-ASCII character", path)
		}
	}
	return token, nil
}

// NoRedirect is the CheckRedirect of every client that calls another
// node, probes a target or drives an admin API (ringlb probe, ringlb bench
// chaos): the address checked (against cluster.allowed_networks, or the
// configured target) is the one called, never where it redirects to, and a
// signed or token header is not sent on to another host.
func NoRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// MinJoinSecretLength is the shortest join-token secret accepted: a short
// one is found offline from one leaked token.
const MinJoinSecretLength = 16

// ReadJoinSecret reads the join-token HMAC secret (edge.auth.hmac_secret_file):
// the file's bytes, surrounding whitespace trimmed, at least
// MinJoinSecretLength of them.
func ReadJoinSecret(path string) ([]byte, error) {
	raw, err := readSecret(path, whatJoinSecret, maxSecretFileBytes)
	if err != nil {
		return nil, err
	}
	secret := bytes.TrimSpace(raw)
	if len(secret) < MinJoinSecretLength {
		return nil, fmt.Errorf("%s: the secret is %d bytes, need at least %d (make one with: ringlb keygen -o %s)", path, len(secret), MinJoinSecretLength, path)
	}
	return secret, nil
}

// DefaultAllowedNetworks is cluster.allowed_networks when unset, as its
// description lists them (TestAllowedNetworksDocumented holds the two
// together): loopback, the private IPv4 ranges (RFC 1918), shared address
// space (RFC 6598) and unique local IPv6 (RFC 4193).
var DefaultAllowedNetworks = []string{
	"127.0.0.0/8", "::1/128",
	"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", sharedAddressSpace.String(),
	"fc00::/7",
}

// sharedAddressSpace (RFC 6598) is the pod network of some clusters: peers
// admit it by default, so a node there advertises it (privateAddress).
var sharedAddressSpace = netip.MustParsePrefix("100.64.0.0/10")

// noPrivateAddress says why a node on every interface announced loopback.
const noPrivateAddress = "this host has no private address (RFC 1918, 100.64.0.0/10 or fc00::/7)"

// ReachableAddr turns a listen address into the host:port others can reach
// it at. An unspecified host (":7101", "0.0.0.0:7101") becomes this host's
// first private address (privateAddress), so a pod or VM works without
// configuring one, else 127.0.0.1 (which an edge's check refuses beyond a
// loopback cluster: Edge.validateReachable).
func ReachableAddr(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	if anyHost(host) {
		host = privateAddress()
	}
	return net.JoinHostPort(host, port)
}

// interfaceAddrs is net.InterfaceAddrs, a variable so that a test can
// give the host the addresses its case needs.
var interfaceAddrs = net.InterfaceAddrs

// privateAddress is this host's first private IPv4 address (RFC 1918), else
// its first of shared address space (a pod network of 100.64.0.0/10; after
// RFC 1918, as a host on a LAN with a VPN of that space announced its LAN
// address), else its first unique local IPv6 one (fc00::/7: a host with
// IPv6 alone on its private network, or beside public IPv4), else
// 127.0.0.1 (noPrivateAddress). IPv4 first: it is the one a host with both
// had announced.
func privateAddress() string {
	addrs, err := interfaceAddrs()
	if err != nil {
		return "127.0.0.1"
	}
	var shared, v6 net.IP
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		v4 := ipn.IP.To4()
		switch {
		case v4 != nil && ipn.IP.IsPrivate():
			return ipn.IP.String()
		case v4 != nil && shared == nil && sharedAddressSpace.Contains(netip.AddrFrom4([4]byte(v4))):
			shared = ipn.IP
		case v4 == nil && v6 == nil && ipn.IP.IsPrivate():
			v6 = ipn.IP
		}
	}
	switch {
	case shared != nil:
		return shared.String()
	case v6 != nil:
		return v6.String()
	}
	return "127.0.0.1"
}

// CheckAdvertisedURL reports whether a URL a node gossips about itself
// (an edge's data URL, an admin URL) is one peers will trust: http or https,
// an IP address (peers do not resolve names another node hands them) within
// allowed, and a port.
func CheckAdvertisedURL(raw string, allowed []netip.Prefix) error {
	u, err := parseHTTPURL(raw)
	if err != nil {
		return err
	}
	addr, err := netip.ParseAddr(u.Hostname())
	if err != nil {
		return fmt.Errorf("%q: the host must be an IP address, not a name", raw)
	}
	if u.Port() == "" {
		return fmt.Errorf("%q: the port is missing", raw)
	}
	addr = addr.Unmap()
	for _, p := range allowed {
		if p.Contains(addr) {
			return nil
		}
	}
	return fmt.Errorf("%q: %s is outside cluster.allowed_networks", raw, addr)
}

// Admin is an operational listener. In YAML a bare address is short for
// { listen: ADDRESS }.
type Admin struct {
	// Listen is the admin address (each role has its own loopback default).
	Listen string `yaml:"listen"`
	// TokenFile holds the operator's bearer token (whitespace trimmed, at
	// least 16 bytes); required when Listen is not loopback. Every POST needs
	// it (or, without a token, the header X-Ringlb-Admin: 1).
	TokenFile string `yaml:"token_file"`
	// MetricsTokenFile holds a second bearer token (as token_file's) that
	// reads GET /metrics and nothing else: give it to the Prometheus that
	// scrapes the port (credentials_file), so that a scraper's credential
	// drains nothing. Re-read on SIGHUP; it must differ from the token.
	MetricsTokenFile string `yaml:"metrics_token_file"`
	// UsersFile lists the operators who log in to the dashboard: one
	// "user:bcrypt-hash" line each (htpasswd -B writes them; so does
	// `ringlb keygen -password`). RINGLB_ADMIN_USER with
	// RINGLB_ADMIN_PASSWORD_HASH in the environment adds one more. With a
	// user configured, a browser logs in (a session cookie) and a loopback
	// address alone no longer makes a caller the operator; the token keeps
	// working for scripts. Without one, an admin port beyond loopback
	// generates a password for the user "admin" at its first start and
	// logs it once (its hash is kept in cluster.state_dir). Read again on
	// SIGHUP (and a config PUT): a user removed is logged out at once, as
	// is every session of a user whose password changed; listing the first
	// user, or none any more, takes a restart.
	UsersFile string `yaml:"users_file"`
	// HistoryInterval is how often the node samples its own metrics into
	// the history behind GET /api/history (default 10s): 360 samples are
	// kept, an hour at the default.
	HistoryInterval Duration `yaml:"history_interval"`
	// MaxConnections caps the connections the admin port holds open
	// (default 128); more wait in the kernel's accept queue until one
	// closes. Each holds a descriptor of the process, which the data port
	// and gossip share, so anyone who reaches the port must not open them
	// without end; a data port's limit derived from the open-file limit
	// keeps one for each. Raise it when many balancers read this node
	// (each keeps up to two connections to it).
	MaxConnections int `yaml:"max_connections"`
	// MaxConnectionsPerIP is one client's share of max_connections (an
	// IPv4 address, an IPv6 /64; default 32): beyond it a new connection
	// from that client is answered 429 and closed, so one client cannot
	// take every slot and lock the operator out. A balancer reading this
	// node keeps a few connections to it (one per dashboard view it
	// serves at once), a browser up to six: a NAT or a host running
	// several nodes fits.
	MaxConnectionsPerIP int `yaml:"max_connections_per_ip"`
	// RequestTimeout bounds reading one whole request, body included, and
	// writing its answer (default 30s); it is also how long an idle
	// keep-alive connection stays open. A client that sends a byte now and
	// then holds nothing longer.
	RequestTimeout Duration `yaml:"request_timeout"`
	// Hosts are the names a browser may log in to the admin port by
	// (POST /login), besides an IP address, localhost and listen's own
	// name (default none): a login addressed otherwise gets 403. A web page
	// that rebinds its own name to this address is same-origin to it and
	// would guess passwords from the operator's own address, locking the
	// operator out; everything else on the port needs credentials such a
	// page never holds. List the names operators open the dashboard by,
	// e.g. [admin.example.com].
	Hosts []string `yaml:"hosts"`

	// StateDir is cluster.state_dir, copied here by Config.Provision so that
	// a role, which reads only its own section, finds it.
	StateDir string `yaml:"-"`
	// Inherited is the admin plane's state of the process this one
	// replaced by an upgrade — the generated password's hash and the login
	// sessions —, as cmd/ringlb took it from the hand-off
	// (operator.Node.HandOff): without state_dir nothing else keeps it, and
	// each upgrade made and logged a new password, refusing the one the
	// operator had, and logged every operator out.
	Inherited []byte `yaml:"-"`

	// The secrets as the check read them (checked): the token, the
	// metrics token and the users of UsersFile.
	token, metricsToken checked[[]byte]
	users               checked[map[string][]byte]
}

// Token is the operator's bearer token (nil without TokenFile): the one the
// check of a read, when a was checked (as Cluster.Keyring), else the
// file's (ReadToken).
func (a Admin) Token() ([]byte, error) {
	if a.TokenFile == "" {
		return nil, nil
	}
	if token, ok := a.token.of(a.TokenFile); ok {
		return token, nil
	}
	return ReadToken(a.TokenFile)
}

// RestartChanges names the admin fields that differ between a and next and
// are read only at start (the listener, the users file's path, the
// sampling), under section (balancer, edge, gslb); nil when there are none.
func (a Admin) RestartChanges(section string, next Admin) error {
	return errors.Join(
		RestartNeeded(section+".admin.listen", a.Listen, next.Listen),
		RestartNeeded(section+".admin.users_file", a.UsersFile, next.UsersFile),
		RestartNeeded(section+".admin.history_interval", a.HistoryInterval, next.HistoryInterval),
		RestartNeeded(section+".admin.max_connections", a.MaxConnections, next.MaxConnections),
		RestartNeeded(section+".admin.max_connections_per_ip", a.MaxConnectionsPerIP, next.MaxConnectionsPerIP),
		RestartNeeded(section+".admin.request_timeout", a.RequestTimeout, next.RequestTimeout),
		RestartNeeded(section+".admin.hosts", strings.Join(a.Hosts, ", "), strings.Join(next.Hosts, ", ")),
	)
}

// Admin defaults and bounds.
const (
	DefaultHistoryInterval = 10 * time.Second
	minHistoryInterval     = 100 * time.Millisecond
	maxHistoryInterval     = 10 * time.Minute
	// DefaultAdminMaxConnections is admin.max_connections when unset.
	DefaultAdminMaxConnections = 128
	maxAdminMaxConnections     = 10_000
	// DefaultAdminMaxConnectionsPerIP is admin.max_connections_per_ip when
	// unset: a quarter of the default max_connections.
	DefaultAdminMaxConnectionsPerIP = 32
	// DefaultAdminRequestTimeout is admin.request_timeout when unset.
	DefaultAdminRequestTimeout = 30 * time.Second
	minAdminRequestTimeout     = time.Second
	maxAdminRequestTimeout     = 10 * time.Minute
	// Environment variables that add one admin user (Admin.Users).
	EnvAdminUser         = "RINGLB_ADMIN_USER"
	EnvAdminPasswordHash = "RINGLB_ADMIN_PASSWORD_HASH"
	// maxAdminUsers bounds a users file.
	maxAdminUsers = 1000
)

// provision fills the admin listener's unset fields but Listen, whose
// default is each role's own.
func (a *Admin) provision() {
	setDefaultDuration(&a.HistoryInterval, DefaultHistoryInterval)
	setDefaultInt(&a.MaxConnections, DefaultAdminMaxConnections)
	setDefaultInt(&a.MaxConnectionsPerIP, DefaultAdminMaxConnectionsPerIP)
	setDefaultDuration(&a.RequestTimeout, DefaultAdminRequestTimeout)
}

// Users returns the admin users: those of UsersFile and the one of the
// environment (EnvAdminUser, EnvAdminPasswordHash), name → bcrypt hash.
// None configured: an empty map and no error. Those of UsersFile are the
// ones the check of a read, when a was checked (as Cluster.Keyring).
func (a Admin) Users() (map[string][]byte, error) {
	users := map[string][]byte{}
	if a.UsersFile != "" {
		fromFile, ok := a.users.of(a.UsersFile)
		if !ok {
			var err error
			if fromFile, err = readUsers(a.UsersFile); err != nil {
				return nil, err
			}
		}
		maps.Copy(users, fromFile)
	}
	name, hash, err := envAdminUser()
	if err != nil {
		return nil, err
	}
	if name != "" {
		users[name] = []byte(hash)
	}
	return users, nil
}

// envAdminUser is the admin user of the environment (EnvAdminUser,
// EnvAdminPasswordHash); "" when none is set.
func envAdminUser() (name, hash string, err error) {
	name, hash = os.Getenv(EnvAdminUser), os.Getenv(EnvAdminPasswordHash)
	switch {
	case name == "" && hash == "":
		return "", "", nil
	case name == "" || hash == "":
		return "", "", fmt.Errorf("set both %s and %s, or neither", EnvAdminUser, EnvAdminPasswordHash)
	}
	if err := checkUser(name, hash); err != nil {
		return "", "", fmt.Errorf("%s/%s: %w", EnvAdminUser, EnvAdminPasswordHash, err)
	}
	return name, hash, nil
}

// readUsers reads a users file (Admin.UsersFile).
func readUsers(path string) (map[string][]byte, error) {
	raw, err := readSecret(path, whatUsers, maxSecretFileBytes)
	if err != nil {
		return nil, err
	}
	return parseUsers(path, raw)
}

// UsersLine is a line of a users file for user with password: the name and
// the password's bcrypt hash (`ringlb keygen -password USER`).
func UsersLine(user, password string) (string, error) {
	if !ValidUserName(user) {
		return "", fmt.Errorf("user name %q: want 1-64 letters, digits, '.', '-' or '_'", user)
	}
	if len(password) < 8 || len(password) > 72 {
		return "", fmt.Errorf("the password is %d bytes: want 8 to 72 (bcrypt's limit)", len(password))
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.DefaultCost)
	if err != nil {
		return "", err
	}
	return user + ":" + string(hash), nil
}

// parseUsers reads "user:bcrypt-hash" lines; blank lines and lines starting
// with # are skipped. Nothing of the file but a valid user name is quoted
// in an error.
func parseUsers(path string, raw []byte) (map[string][]byte, error) {
	users := map[string][]byte{}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		name, hash, ok := strings.Cut(text, ":")
		if !ok {
			return nil, fmt.Errorf("%s:%d: want user:bcrypt-hash (make a line with: ringlb keygen -password USER)", path, line)
		}
		if err := checkUser(name, hash); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, line, err)
		}
		if _, dup := users[name]; dup {
			return nil, fmt.Errorf("%s:%d: user %q is listed twice", path, line, name)
		}
		users[name] = []byte(hash)
		if len(users) > maxAdminUsers {
			return nil, fmt.Errorf("%s: more than %d users", path, maxAdminUsers)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return users, nil
}

// checkUser checks an admin user's name (it appears in audit records and
// headers) and that its hash is a bcrypt hash (htpasswd -B: $2y$, $2b$, $2a$).
func checkUser(name, hash string) error {
	if !ValidUserName(name) {
		// Not quoted: a users file may be any file the config names (the
		// config API checks an operator's), and what stands before a line's
		// first colon may be anything — in /proc/self/environ, every
		// variable up to PATH's.
		return errors.New("the user name (before the first ':') is not 1-64 letters, digits, '.', '-' or '_'")
	}
	if _, err := bcrypt.Cost([]byte(hash)); err != nil {
		return fmt.Errorf("user %s: the password hash is not a bcrypt hash (htpasswd -B or ringlb keygen -password make one)", name)
	}
	return nil
}

// ValidUserName is the rule for an admin user's name: 1–64 of [A-Za-z0-9._-].
func ValidUserName(name string) bool {
	if name == "" || len(name) > 64 {
		return false
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// adminTokenWhy says why an admin port beyond loopback needs a token file.
const adminTokenWhy = "the admin API drains nodes and changes answers. Make one with `ringlb keygen -o FILE`"

// ReadMetricsToken reads a's scrape-only token (nil: none configured), as
// ReadToken reads a token; one equal to the operator's token is refused (a
// scraper holding it could change everything). It is the one the check of
// a read, when a was checked (as Cluster.Keyring).
func (a Admin) ReadMetricsToken() ([]byte, error) {
	if a.MetricsTokenFile == "" {
		return nil, nil
	}
	if metrics, ok := a.metricsToken.of(a.MetricsTokenFile); ok {
		return metrics, nil
	}
	return a.readMetricsToken(a.MetricsTokenFile)
}

func (a Admin) readMetricsToken(path string) ([]byte, error) {
	metrics, err := ReadToken(path)
	if err != nil || a.TokenFile == "" {
		return metrics, err
	}
	if token, err := a.Token(); err == nil && subtle.ConstantTimeCompare(token, metrics) == 1 {
		return nil, fmt.Errorf("%s holds the operator's token (token_file): a scraper holding it could change everything; make another with `ringlb keygen -o FILE`", a.MetricsTokenFile)
	}
	return metrics, nil
}

// checkAdmin applies the admin rule to one role's admin listener: a port
// beyond loopback needs a token file, and the token file must hold a token.
// A demo node's admin address is held to the same rule (validateDemo).
// What it reads of the secret files it keeps in a (checked).
func checkAdmin(ps *problems, path string, a *Admin) {
	checkHostPort(ps, path+".listen", a.Listen, true)
	var err error
	if a.TokenFile != "" {
		if a.token, err = keep(a.TokenFile, ReadToken); err != nil {
			ps.add(path+".token_file", "%v", err)
		}
		ps.warnSecret(path+".token_file", a.TokenFile, whatToken)
	} else if !isLoopback(a.Listen) {
		ps.add(path+".token_file", "is required when %s.listen (%s) is not a loopback address: %s", path, a.Listen, adminTokenWhy)
	}
	if a.MetricsTokenFile != "" {
		if a.metricsToken, err = keep(a.MetricsTokenFile, a.readMetricsToken); err != nil {
			ps.add(path+".metrics_token_file", "%v", err)
		}
		ps.warnSecret(path+".metrics_token_file", a.MetricsTokenFile, whatToken)
	}
	if a.UsersFile != "" {
		if a.users, err = keep(a.UsersFile, readUsers); err != nil {
			ps.add(path+".users_file", "%v", err)
		}
		ps.warnSecret(path+".users_file", a.UsersFile, whatUsers)
	}
	if _, _, err := envAdminUser(); err != nil {
		ps.add(path+".users_file", "%v", err)
	}
	if d := a.HistoryInterval.D(); d < minHistoryInterval || d > maxHistoryInterval {
		ps.add(path+".history_interval", "must be in range [%s, %s], got %s", minHistoryInterval, maxHistoryInterval, d)
	}
	checkRange(ps, path+".max_connections", a.MaxConnections, 1, maxAdminMaxConnections)
	checkRange(ps, path+".max_connections_per_ip", a.MaxConnectionsPerIP, 1, maxAdminMaxConnections)
	if d := a.RequestTimeout.D(); d < minAdminRequestTimeout || d > maxAdminRequestTimeout {
		ps.add(path+".request_timeout", "must be in range [%s, %s], got %s", minAdminRequestTimeout, maxAdminRequestTimeout, d)
	}
	for i, h := range a.Hosts {
		if !validHostname(strings.TrimSuffix(h, ".")) {
			ps.add(fmt.Sprintf("%s.hosts[%d]", path, i), "%q is not a host name (an IP address and localhost are always accepted; list names only, without a port)", h)
		}
	}
}
