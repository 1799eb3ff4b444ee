package configs

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// Every Kubernetes manifest parses, every document has apiVersion, kind and
// a name, and the ringlb config inside the ConfigMap passes validation.
func TestKubernetesManifests(t *testing.T) {
	files, _ := filepath.Glob("deploy/kubernetes/*.yaml")
	if len(files) == 0 {
		t.Fatal("no manifests")
	}
	kinds := map[string]bool{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(data))
		for i := 0; ; i++ {
			var doc struct {
				APIVersion string                `yaml:"apiVersion"`
				Kind       string                `yaml:"kind"`
				Metadata   struct{ Name string } `yaml:"metadata"`
				Data       map[string]string     `yaml:"data"`
			}
			err := dec.Decode(&doc)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s document %d: %v", f, i, err)
			}
			if doc.APIVersion == "" || doc.Kind == "" || doc.Metadata.Name == "" {
				t.Errorf("%s document %d lacks apiVersion, kind or metadata.name", f, i)
			}
			kinds[doc.Kind] = true
			if cfg, ok := doc.Data["ringlb.yaml"]; ok {
				if _, err := Parse(f+" (ConfigMap ringlb.yaml)", withSecrets(t, []byte(cfg))); err != nil {
					t.Errorf("config in %s:\n%v", f, err)
				}
			}
		}
	}
	for _, k := range []string{"ConfigMap", "StatefulSet", "Deployment", "Service"} {
		if !kinds[k] {
			t.Errorf("no %s among the manifests", k)
		}
	}
}

// The alerting rules pass promtool's checks and its unit tests (each alert
// fires on the series that should fire it), and they and the Grafana
// dashboard name only metrics of the contract. promtool is Debian's
// prometheus package; CI installs it.
func TestPrometheusRulesAndGrafanaDashboard(t *testing.T) {
	contract, err := os.ReadFile("../docs/CONTRACT.md")
	if err != nil {
		t.Fatal(err)
	}
	metric := regexp.MustCompile(`ringlb_[a-z_]+`)
	documented := func(where, expr string) {
		t.Helper()
		for _, name := range metric.FindAllString(expr, -1) {
			base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_sum"), "_count")
			if !strings.Contains(string(contract), "`"+base) {
				t.Errorf("%s uses %s, which docs/CONTRACT.md does not list", where, name)
			}
		}
	}
	rules, err := os.ReadFile("deploy/prometheus/ringlb-rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	var groups struct {
		Groups []struct {
			Rules []struct{ Alert, Expr string }
		}
	}
	if err := yaml.Unmarshal(rules, &groups); err != nil {
		t.Fatal(err)
	}
	alerts := map[string]bool{}
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			alerts[r.Alert] = true
			documented("alert "+r.Alert, r.Expr)
		}
	}
	for _, want := range []string{"RinglbNodeDown", "RinglbRegionFailedOver", "RinglbSlowConsumersRising", "RinglbRingLostEdges", "RinglbCertificateExpiresSoon"} {
		if !alerts[want] {
			t.Errorf("no %s alert", want)
		}
	}

	raw, err := os.ReadFile("deploy/grafana/ringlb.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title  string
		Panels []struct {
			Type, Title string
			Targets     []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("grafana dashboard: %v", err)
	}
	graphs := 0
	for _, p := range dash.Panels {
		if p.Type == "row" {
			continue
		}
		graphs++
		if p.Title == "" || len(p.Targets) == 0 {
			t.Errorf("panel %q has no title or no query", p.Title)
		}
		for _, q := range p.Targets {
			documented("panel "+p.Title, q.Expr)
		}
	}
	if dash.Title == "" || graphs < 10 {
		t.Errorf("dashboard %q with %d graphs", dash.Title, graphs)
	}

	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not installed (apt-get install prometheus): rules not checked by it")
	}
	for _, args := range [][]string{{"check", "rules", "ringlb-rules.yml"}, {"test", "rules", "ringlb-rules_test.yml"}} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = "deploy/prometheus"
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// unitDirectives reads a systemd unit's [Service] section: every value of
// every key, in order (a key may be given more than once).
func unitDirectives(t *testing.T, path string) map[string][]string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	section := ""
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "["):
			section = line
		case section == "[Service]":
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				t.Errorf("%s: %q is not key=value", path, line)
				continue
			}
			out[k] = append(out[k], v)
		}
	}
	return out
}

// The systemd unit runs the node in a sandbox that leaves it what it needs
// and nothing else: an unprivileged user, the one capability of a port below
// 1024 and a bounding set holding only it, a read-only system with a state
// and a runtime directory of its own (0700), the address families it uses
// (AF_UNIX for the upgrade's hand-off socket and sd_notify, AF_NETLINK for
// the interface list a 0.0.0.0 bind reads), the system calls of
// @system-service, and what a hitless upgrade needs (NotifyAccess=all: the
// new process names itself the main one). Where systemd-analyze is installed
// it verifies the unit and holds its exposure rating at 2.5 or below (the
// unit shipped before this sandbox rated 8.7, "EXPOSED").
func TestSystemdUnitSandboxed(t *testing.T) {
	files, _ := filepath.Glob("deploy/systemd/*.service")
	if len(files) == 0 {
		t.Fatal("no systemd unit")
	}
	for _, f := range files {
		d := unitDirectives(t, f)
		one := func(k string) string {
			if v := d[k]; len(v) > 0 {
				return v[len(v)-1]
			}
			return ""
		}
		for k, want := range map[string]string{
			"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
			"PrivateDevices": "yes", "ProtectKernelTunables": "yes", "ProtectKernelModules": "yes",
			"ProtectControlGroups": "yes", "RestrictNamespaces": "yes", "RestrictSUIDSGID": "yes",
			"LockPersonality": "yes", "MemoryDenyWriteExecute": "yes", "SystemCallArchitectures": "native",
			"UMask": "0077", "RuntimeDirectoryMode": "0700", "StateDirectoryMode": "0700", "NotifyAccess": "all",
		} {
			if got := one(k); got != want {
				t.Errorf("%s: %s=%q, want %q", f, k, got, want)
			}
		}
		if u := one("User"); u == "" || u == "root" || u == "0" {
			t.Errorf("%s: User=%q: the node runs as a user of its own", f, u)
		}
		if one("RuntimeDirectory") == "" || one("StateDirectory") == "" {
			t.Errorf("%s: no RuntimeDirectory (the hand-off socket) or StateDirectory (cluster.state_dir): under ProtectSystem=strict the node can write nowhere else", f)
		}
		bounding, ambient := one("CapabilityBoundingSet"), one("AmbientCapabilities")
		if bounding != "CAP_NET_BIND_SERVICE" && bounding != "" || ambient != bounding {
			t.Errorf("%s: CapabilityBoundingSet=%q AmbientCapabilities=%q: want both CAP_NET_BIND_SERVICE (or, for a node on high ports only, an empty bounding set)", f, bounding, ambient)
		}
		if _, set := d["CapabilityBoundingSet"]; !set {
			t.Errorf("%s: no CapabilityBoundingSet: the bounding set is everything", f)
		}
		families := strings.Fields(one("RestrictAddressFamilies"))
		slices.Sort(families)
		if want := []string{"AF_INET", "AF_INET6", "AF_NETLINK", "AF_UNIX"}; !slices.Equal(families, want) {
			t.Errorf("%s: RestrictAddressFamilies=%v, want %v", f, families, want)
		}
		if !slices.Contains(d["SystemCallFilter"], "@system-service") {
			t.Errorf("%s: SystemCallFilter=%v lacks @system-service", f, d["SystemCallFilter"])
		}
		if n, err := strconv.Atoi(one("LimitNOFILE")); err != nil || n < 65536 {
			t.Errorf("%s: LimitNOFILE=%q: the connection limits derive from it", f, one("LimitNOFILE"))
		}
		if one("MemoryMax") == "" {
			t.Errorf("%s: no MemoryMax: without a limit the node cannot tell it is low on memory", f)
		}
		if strings.Contains(f, "balancer") || strings.Contains(f, "gslb") {
			if !strings.Contains(one("ExecReload"), "ringlb upgrade -pid $MAINPID") {
				t.Errorf("%s: ExecReload=%q is not the hitless upgrade", f, one("ExecReload"))
			}
		}
	}

	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed (Debian's systemd package): the unit is not verified by it")
	}
	// verify wants the commands to exist: any executable stands in.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		unit := filepath.Join(t.TempDir(), filepath.Base(f))
		if err := os.WriteFile(unit, []byte(strings.ReplaceAll(string(data), "/usr/local/bin/ringlb", self)), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(analyze, "verify", unit).CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
			t.Errorf("systemd-analyze verify %s: %v\n%s", f, err, out)
		}
		if out, err := exec.Command(analyze, "security", "--offline=yes", "--threshold=25", unit).CombinedOutput(); err != nil {
			t.Errorf("systemd-analyze security %s: exposure above 2.5: %v\n%s", f, err, out)
		}
	}
}
