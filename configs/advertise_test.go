package configs

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// hostAddrs makes this host's interface addresses those given (CIDRs),
// for the rest of the test.
func hostAddrs(t *testing.T, cidrs ...string) {
	t.Helper()
	var addrs []net.Addr
	for _, c := range cidrs {
		ip, n, err := net.ParseCIDR(c)
		if err != nil {
			t.Fatal(err)
		}
		n.IP = ip
		addrs = append(addrs, n)
	}
	was := interfaceAddrs
	interfaceAddrs = func() ([]net.Addr, error) { return addrs, nil }
	t.Cleanup(func() { interfaceAddrs = was })
}

// An edge listening on every interface advertises the host's first private
// address: an IPv4 one of RFC 1918 first, else a unique local IPv6 one
// (fc00::/7, bracketed). On a host with neither, the address would be
// loopback, which peers on other hosts refuse: the check says so, at the
// field the operator wrote, and names the one to set. All-loopback (the
// demo) stays as it was.
func TestEdgeAdvertisesAnAddressPeersReach(t *testing.T) {
	key := keyringFile(t, 1)
	wide := "cluster: { bind: 0.0.0.0:7946, secret_key_file: " + key + " }\n"

	hostAddrs(t, "127.0.0.1/8", "192.0.2.2/24", "fd00::2/64", "fe80::1/64")
	cfg, err := Parse("t.yaml", []byte(wide+"edge:\n  listen: 0.0.0.0:17101\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := cfg.Edge.AdvertiseURL, "http://[fd00::2]:17101"; got != want {
		t.Errorf("advertise_url on a host with 192.0.2.2 and fd00::2: got %s, want %s", got, want)
	}

	hostAddrs(t, "127.0.0.1/8", "fd00::2/64", "10.1.2.3/8")
	if cfg, err = Parse("t.yaml", []byte(wide+"edge:\n  listen: ':17101'\n")); err != nil {
		t.Fatal(err)
	}
	if got, want := cfg.Edge.AdvertiseURL, "http://10.1.2.3:17101"; got != want {
		t.Errorf("advertise_url beside an RFC 1918 address: got %s, want %s", got, want)
	}

	hostAddrs(t, "127.0.0.1/8", "::1/128", "192.0.2.2/24")
	_, err = Parse("t.yaml", []byte(wide+"edge:\n  listen: 0.0.0.0:17101\n"))
	if e := expectProblem(t, err, "edge.listen", "set edge.advertise_url"); e != nil {
		if e.Line != 3 || !strings.Contains(e.Msg, "http://127.0.0.1:17101") {
			t.Errorf("want line 3 naming the loopback URL, got %v", e)
		}
	}
	_, err = Parse("t.yaml", []byte(wide+"edge:\n  advertise_url: http://127.0.0.1:17101\n"))
	expectProblem(t, err, "edge.advertise_url", "set edge.advertise_url")
	// A file without an edge section is not an edge's: its default
	// listen says nothing. Run as an edge all the same, the node listens
	// on that default, every interface, and announces loopback: refused
	// then, as the section would be.
	cfg, err = Parse("t.yaml", []byte(wide))
	if err != nil {
		t.Fatalf("a file without an edge section: %v", err)
	}
	expectProblem(t, cfg.RunAs("edge"), "edge.listen", "set edge.advertise_url")
	if err := cfg.RunAs("balancer"); err != nil {
		t.Errorf("the same file run as a balancer: %v", err)
	}
	// Loopback gossip: a cluster on one host, as the demo.
	if _, err := Parse("t.yaml", []byte("cluster: { bind: 127.0.0.1:7946 }\nedge:\n  listen: 0.0.0.0:17101\n")); err != nil {
		t.Errorf("loopback gossip: %v", err)
	}
	if _, err := LoadDemo(); err != nil {
		t.Errorf("the demo: %v", err)
	}
	// An advertised gossip address beyond loopback counts as the bind does.
	_, err = Parse("t.yaml", []byte("cluster: { bind: 127.0.0.1:7946, advertise: 10.0.0.11:7946 }\nedge:\n  listen: 127.0.0.1:17101\n"))
	expectProblem(t, err, "edge.listen", "set edge.advertise_url")
}

// A node's admin on every interface announces the host's private address
// to its peers, as an edge's data URL does; on a host without one it
// announced 127.0.0.1, which peers on other hosts take for themselves
// (their dashboards and reads of this node fail). Allowed (the admin is
// the operator's, not the traffic's), and warned of at the field.
func TestAdminAnnouncedWherePeersReachIt(t *testing.T) {
	tok := filepath.Join(t.TempDir(), "admin.token")
	if err := os.WriteFile(tok, []byte(GenerateKey()), 0o600); err != nil {
		t.Fatal(err)
	}
	balancer := "balancer:\n  admin: { listen: '0.0.0.0:9102', token_file: " + tok + " }\n"
	wide := "cluster: { bind: 0.0.0.0:7946, secret_key_file: " + keyringFile(t, 1) + " }\n" + balancer
	warning := func(file string) *FieldError {
		t.Helper()
		cfg, err := Parse("t.yaml", []byte(file))
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range cfg.Warnings() {
			if w.Path == "balancer.admin.listen" {
				return w
			}
		}
		return nil
	}

	hostAddrs(t, "127.0.0.1/8", "::1/128", "192.0.2.2/24")
	if w := warning(wide); w == nil || w.Line != 3 || !strings.Contains(w.Msg, "127.0.0.1") {
		t.Errorf("admin on every interface of a host without a private address: warning %v, want one at line 3 naming 127.0.0.1", w)
	}
	if w := warning("cluster: { bind: 127.0.0.1:7946 }\n" + balancer); w != nil {
		t.Errorf("loopback gossip (a cluster on one host): %v", w)
	}
	hostAddrs(t, "127.0.0.1/8", "10.1.2.3/8")
	if w := warning(wide); w != nil {
		t.Errorf("beside an RFC 1918 address: %v", w)
	}
}

// A pod or VM whose only network is shared address space (RFC 6598,
// 100.64.0.0/10: the pod network of some clusters, which
// cluster.allowed_networks admits by default) advertises that address, as
// it would an RFC 1918 one: announced as loopback, the edge of the shipped
// Kubernetes manifest (listen 0.0.0.0:7101) was refused at start there.
// Beside an RFC 1918 address, that one is still chosen.
func TestEdgeAdvertisesSharedAddressSpace(t *testing.T) {
	wide := "cluster: { bind: 0.0.0.0:7946, secret_key_file: " + keyringFile(t, 1) + " }\nedge:\n  listen: 0.0.0.0:17101\n"
	for _, c := range []struct {
		addrs []string
		want  string
	}{
		{[]string{"127.0.0.1/8", "::1/128", "100.64.3.4/16"}, "http://100.64.3.4:17101"},
		{[]string{"127.0.0.1/8", "100.100.1.2/32", "fd00::2/64"}, "http://100.100.1.2:17101"},
		{[]string{"127.0.0.1/8", "100.100.1.2/32", "10.1.2.3/8"}, "http://10.1.2.3:17101"},
	} {
		hostAddrs(t, c.addrs...)
		cfg, err := Parse("t.yaml", []byte(wide))
		if err != nil {
			t.Errorf("a host with %v: %v", c.addrs, err)
			continue
		}
		if cfg.Edge.AdvertiseURL != c.want {
			t.Errorf("a host with %v: advertise_url %s, want %s", c.addrs, cfg.Edge.AdvertiseURL, c.want)
		}
	}
}
