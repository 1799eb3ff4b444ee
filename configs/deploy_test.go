package configs

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

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

// unitText is a unit file's text.
func unitText(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// unitDirectives reads a systemd unit's [Service] section: every value of
// every key, in order (a key may be given more than once).
func unitDirectives(t *testing.T, path string) map[string][]string {
	t.Helper()
	data := unitText(t, path)
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
		n, err := strconv.Atoi(one("LimitNOFILE"))
		if err != nil || n < 65536 {
			t.Errorf("%s: LimitNOFILE=%q: the connection limits derive from it", f, one("LimitNOFILE"))
		}
		// The clients the unit's comment promises are those a balancer
		// derives from its limit (reserve and admin port included).
		if m := regexp.MustCompile(`= (\d+) clients`).FindSubmatch(unitText(t, f)); m == nil {
			t.Errorf("%s: the comment at LimitNOFILE does not say what max_connections it gives", f)
		} else if want := maxConnectionsFor(n, 2, DefaultAdminMaxConnections); string(m[1]) != strconv.Itoa(want) {
			t.Errorf("%s: the comment says LimitNOFILE=%d gives %s clients; a balancer derives %d", f, n, m[1], want)
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

// at walks a decoded YAML document by keys: nil where a key is missing.
func at(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

// list is v as a list (nil when it is none).
func list(v any) []any { l, _ := v.([]any); return l }

// manifestDocuments decodes every document of the Kubernetes manifests.
func manifestDocuments(t *testing.T) []map[string]any {
	t.Helper()
	files, _ := filepath.Glob("deploy/kubernetes/*.yaml")
	var docs []map[string]any
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(data))
		for {
			var doc map[string]any
			err := dec.Decode(&doc)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			docs = append(docs, doc)
		}
	}
	return docs
}

// Every pod of the manifests runs as an unprivileged user with nothing it
// does not use: no capability (every port is 1024 or above), no privilege
// escalation, a read-only root filesystem (the roles, their reloads and
// upgrades write nothing there with state_dir unset: run under a read-only
// root), RuntimeDefault seccomp, no service-account token (ringlb never calls
// the Kubernetes API). Secrets are files (0400 or 0440, mounted read-only),
// never environment variables (which every process of the container, and
// whoever can read the pod spec, sees). Memory requests equal limits, so the
// node knows its limit (it degrades near 90 % of its cgroup's) and is not the
// first evicted; probes carry no token.
func TestKubernetesPodsLocked(t *testing.T) {
	workloads := 0
	for _, doc := range manifestDocuments(t) {
		kind, name := doc["kind"], at(doc, "metadata", "name")
		if kind != "Deployment" && kind != "StatefulSet" && kind != "DaemonSet" {
			continue
		}
		workloads++
		w := fmt.Sprintf("%s %s", kind, name)
		pod := at(doc, "spec", "template", "spec")
		if at(pod, "automountServiceAccountToken") != false {
			t.Errorf("%s: automountServiceAccountToken is not false: a compromised node would hold a token for the Kubernetes API", w)
		}
		psc := at(pod, "securityContext")
		if at(psc, "runAsNonRoot") != true || at(psc, "runAsUser") == 0 || at(psc, "runAsUser") == nil {
			t.Errorf("%s: pod securityContext %v: want runAsNonRoot and a non-zero runAsUser", w, psc)
		}
		if at(psc, "seccompProfile", "type") != "RuntimeDefault" {
			t.Errorf("%s: seccompProfile %v, want RuntimeDefault", w, at(psc, "seccompProfile"))
		}
		secretVolumes := map[string]bool{}
		for _, v := range list(at(pod, "volumes")) {
			if s := at(v, "secret"); s != nil {
				secretVolumes[at(v, "name").(string)] = true
				if mode := at(s, "defaultMode"); mode != 0o400 && mode != 0o440 {
					t.Errorf("%s: secret volume %v has defaultMode %v, want 0400 or 0440", w, at(v, "name"), mode)
				}
			}
		}
		for _, c := range list(at(pod, "containers")) {
			cn := fmt.Sprintf("%s container %v", w, at(c, "name"))
			sc := at(c, "securityContext")
			if at(sc, "allowPrivilegeEscalation") != false || at(sc, "readOnlyRootFilesystem") != true {
				t.Errorf("%s: securityContext %v: want allowPrivilegeEscalation false, readOnlyRootFilesystem true", cn, sc)
			}
			if drop := list(at(sc, "capabilities", "drop")); !slices.Contains(drop, any("ALL")) {
				t.Errorf("%s: capabilities.drop %v lacks ALL", cn, drop)
			}
			if add := list(at(sc, "capabilities", "add")); len(add) > 0 {
				t.Errorf("%s: capabilities.add %v: every port is above 1024, none is needed", cn, add)
			}
			for _, p := range list(at(c, "ports")) {
				if port, _ := at(p, "containerPort").(int); port < 1024 {
					t.Errorf("%s: containerPort %v: a user without capabilities cannot bind it", cn, at(p, "containerPort"))
				}
			}
			limit, request := at(c, "resources", "limits", "memory"), at(c, "resources", "requests", "memory")
			if limit == nil || limit != request {
				t.Errorf("%s: memory request %v, limit %v: want a limit, and the request equal to it", cn, request, limit)
			}
			if at(c, "resources", "requests", "cpu") == nil {
				t.Errorf("%s: no CPU request", cn)
			}
			if len(list(at(c, "envFrom"))) > 0 {
				t.Errorf("%s: envFrom: secrets go in files", cn)
			}
			for _, e := range list(at(c, "env")) {
				if at(e, "valueFrom", "secretKeyRef") != nil {
					t.Errorf("%s: env %v from a Secret: secrets go in files", cn, at(e, "name"))
				}
			}
			for _, m := range list(at(c, "volumeMounts")) {
				if secretVolumes[at(m, "name").(string)] && at(m, "readOnly") != true {
					t.Errorf("%s: secret volume %v mounted writable", cn, at(m, "name"))
				}
			}
			for _, probe := range []string{"livenessProbe", "readinessProbe", "startupProbe"} {
				p := at(c, probe)
				if p == nil {
					continue
				}
				text := fmt.Sprint(p)
				if strings.Contains(text, "token") || strings.Contains(text, "Authorization") {
					t.Errorf("%s: %s carries a token: /healthz and /_ringlb/health need none", cn, probe)
				}
				if !strings.Contains(text, "/healthz") && !strings.Contains(text, "/_ringlb/health") {
					t.Errorf("%s: %s checks %v, not a health path", cn, probe, p)
				}
			}
		}
	}
	if workloads < 3 {
		t.Fatalf("%d workloads among the manifests, want the edge, balancer and gslb", workloads)
	}
}

// The manifests keep each port to those the threat model lets reach it:
// ingress is denied unless a policy allows it; gossip, an edge's data port
// and its admin port are reachable from ringlb's own pods only (gossip is
// keyed, but memberlist reads a stream before the key can refuse it; a
// client on an edge's data port skips the balancers' routing and limits).
// The public Services keep each client's own address (externalTrafficPolicy
// Local): behind the node's SNAT, per-address limits and RRL would count
// every client as one of a few node addresses. An admin port beyond
// loopback has a token and a users file, so no generated password reaches
// the pod's log at every start.
func TestKubernetesNetworkConfined(t *testing.T) {
	clusterOnly := map[int]string{7946: "gossip", 7101: "edge data", 9101: "edge admin", 9053: "gslb admin"}
	denyAll, allowed := false, map[int]bool{}
	for _, doc := range manifestDocuments(t) {
		name := at(doc, "metadata", "name")
		switch doc["kind"] {
		case "NetworkPolicy":
			spec := at(doc, "spec")
			if sel, _ := at(spec, "podSelector").(map[string]any); len(sel) == 0 && at(spec, "ingress") == nil && slices.Contains(list(at(spec, "policyTypes")), any("Ingress")) {
				denyAll = true
			}
			for _, rule := range list(at(spec, "ingress")) {
				for _, p := range list(at(rule, "ports")) {
					port, _ := at(p, "port").(int)
					what, ok := clusterOnly[port]
					if !ok {
						continue
					}
					allowed[port] = true
					from := list(at(rule, "from"))
					if len(from) == 0 {
						t.Errorf("NetworkPolicy %v opens the %s port %d to everyone", name, what, port)
					}
					for _, peer := range from {
						sel, _ := at(peer, "podSelector", "matchLabels").(map[string]any)
						if at(peer, "ipBlock") != nil || at(peer, "namespaceSelector") != nil || len(sel) == 0 {
							t.Errorf("NetworkPolicy %v opens the %s port %d to %v, beyond ringlb's pods", name, what, port, peer)
						}
					}
				}
			}
		case "Service":
			if at(doc, "spec", "type") == "LoadBalancer" && at(doc, "spec", "externalTrafficPolicy") != "Local" {
				t.Errorf("Service %v: externalTrafficPolicy %v: behind the node's SNAT every client is a node address to the per-address limits", name, at(doc, "spec", "externalTrafficPolicy"))
			}
			for _, p := range list(at(doc, "spec", "ports")) {
				if port, _ := at(p, "port").(int); clusterOnly[port] != "" && at(doc, "spec", "clusterIP") != "None" {
					t.Errorf("Service %v exposes the %s port %d", name, clusterOnly[port], port)
				}
			}
		case "ConfigMap":
			cfg := manifestConfig(t, doc)
			if cfg == nil {
				continue
			}
			for role, a := range map[string]Admin{"edge": cfg.Edge.Admin, "balancer": cfg.Balancer.Admin, "gslb": cfg.GSLB.Admin} {
				if !isLoopback(a.Listen) && a.UsersFile == "" {
					t.Errorf("ConfigMap: %s.admin listens on %s with no users_file: every start logs a new generated password", role, a.Listen)
				}
			}
		}
	}
	if !denyAll {
		t.Error("no NetworkPolicy denies ingress by default (podSelector {}, policyTypes [Ingress], no rule)")
	}
	for port, what := range clusterOnly {
		if !allowed[port] {
			t.Errorf("no NetworkPolicy lets ringlb's pods reach the %s port %d", what, port)
		}
	}
}

// The keepalived example does not pretend VRRP is authenticated: no shipped
// PASS word (clear text in every advert: whoever can forge an advert reads
// it first, then takes the VIP with a higher priority), adverts unicast to
// the peer, and health scripts run as the ringlb user under keepalived's
// script security. Where keepalived is installed, it checks the file.
func TestKeepalivedExample(t *testing.T) {
	const f = "deploy/keepalived/keepalived.conf"
	data, err := os.ReadFile(f)
	if err != nil {
		t.Fatal(err)
	}
	var conf []string
	for _, line := range strings.Split(string(data), "\n") {
		line, _, _ = strings.Cut(line, "#")
		conf = append(conf, strings.Fields(line)...)
	}
	if slices.Contains(conf, "auth_pass") || slices.Contains(conf, "authentication") {
		t.Errorf("%s: a VRRP password: clear text on the wire, it authenticates nothing (and a shipped one is everyone's)", f)
	}
	for _, want := range []string{"unicast_peer", "enable_script_security", "script_user"} {
		if !slices.Contains(conf, want) {
			t.Errorf("%s: no %s", f, want)
		}
	}
	if i := slices.Index(conf, "script_user"); i >= 0 && (i+1 == len(conf) || conf[i+1] == "root") {
		t.Errorf("%s: health scripts run as root", f)
	}

	keepalived, err := exec.LookPath("keepalived")
	if err != nil {
		t.Skip("keepalived not installed (Debian's keepalived): the file is not checked by it")
	}
	// keepalived -t wants the user, the script and the interface to exist
	// here: a user, a program and an interface of this machine stand in.
	iface := ""
	ifaces, _ := net.Interfaces()
	for _, i := range ifaces {
		if i.Flags&net.FlagLoopback == 0 && i.Flags&net.FlagUp != 0 {
			iface = i.Name
			break
		}
	}
	if iface == "" {
		t.Skip("no interface up here for keepalived -t")
	}
	text := strings.NewReplacer("ringlb probe", "/bin/true probe", "/usr/local/bin/ringlb", "/bin/true",
		"script_user ringlb", "script_user nobody", "user ringlb", "user nobody", "eth0", iface).Replace(string(data))
	conf0 := filepath.Join(t.TempDir(), "keepalived.conf")
	if err := os.WriteFile(conf0, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	// It prints each problem as a line and, on a good file, ends itself
	// with SIGTERM (2.2.7): the output is the verdict, not the exit status.
	out, _ := exec.Command(keepalived, "-t", "-l", "-f", conf0).CombinedOutput()
	if len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("keepalived -t %s:\n%s", f, out)
	}
}

// The image is the static binary alone: its final stage is FROM scratch (no
// shell, no package manager, nothing to exec into), runs no command of its
// own, and runs as a numeric non-root user (Kubernetes' runAsNonRoot can
// check only a number). Nothing copied into it, nor any example or deploy
// file, holds a key: keys are made by `ringlb keygen` where they are used.
func TestImageAndShippedFilesHoldNoKey(t *testing.T) {
	data, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	var final []string
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "FROM ") {
			final = nil
		}
		if line != "" && !strings.HasPrefix(line, "#") {
			final = append(final, line)
		}
	}
	if len(final) == 0 || !strings.HasPrefix(final[0], "FROM scratch") {
		t.Fatalf("the image's final stage does not start FROM scratch: %q", final)
	}
	user := ""
	for _, line := range final[1:] {
		if strings.HasPrefix(line, "RUN ") || strings.HasPrefix(line, "ADD ") {
			t.Errorf("Dockerfile final stage: %q (only COPY of the binary and its files)", line)
		}
		if u, ok := strings.CutPrefix(line, "USER "); ok {
			user = u
		}
	}
	uid, _, _ := strings.Cut(user, ":")
	if n, err := strconv.Atoi(uid); err != nil || n == 0 {
		t.Errorf("Dockerfile final stage: USER %q, want a numeric non-root uid", user)
	}

	// A cluster key, token or secret is 32 random bytes in base64; a
	// private key has a PEM header or a BIND Private-key-format line.
	keyish := regexp.MustCompile(`(?m)^[A-Za-z0-9+/]{43}=$|PRIVATE KEY-----|Private-key-format`)
	err = filepath.WalkDir(".", func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if !strings.HasPrefix(path, "examples/") && !strings.HasPrefix(path, "deploy/") && path != "demo.yaml" {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if keyish.Match(b) || strings.HasSuffix(path, ".private") || strings.HasSuffix(path, ".key") || strings.HasSuffix(path, ".pem") {
			t.Errorf("%s holds a key: a shipped key is every deployment's key", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// Every example keeps its admin port behind the token, on loopback too: the
// threat model has other processes on the host, and a token-less loopback
// port takes a change (a drain, maintenance, a pool's answers) from any of
// them, of any user, that adds the X-Ringlb-Admin header.
func TestExampleAdminPortsHaveATokenOnLoopbackToo(t *testing.T) {
	for file, admin := range map[string]func(*Config) Admin{
		"examples/balancer.yaml": func(c *Config) Admin { return c.Balancer.Admin },
		"examples/edge.yaml":     func(c *Config) Admin { return c.Edge.Admin },
		"examples/gslb.yaml":     func(c *Config) Admin { return c.GSLB.Admin },
	} {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := Parse(file, withSecrets(t, data))
		if err != nil {
			t.Fatalf("%s:\n%v", file, err)
		}
		if a := admin(cfg); a.TokenFile == "" {
			t.Errorf("%s: admin %s has no token_file: any local process may change the node", file, a.Listen)
		}
	}
}

// Nothing leaves a ringlb pod unless a policy lets it, and what is let is
// what the role talks to: gossip between ringlb's pods, the cluster's DNS
// for the gossip seeds' names, an edge's data port from balancers and
// edges, its admin port from balancers, a gslb's admin port from gslbs
// (their views of the members) and balancers (their dashboard's view of
// the pools), and from the gslb the members its
// monitors check, each on the monitor's port (taken from the ConfigMap, so
// that a member added without its rule fails here). Every egress rule names
// its peers: ringlb's pods, kube-dns, or one address.
func TestKubernetesEgressConfined(t *testing.T) {
	type need struct {
		from, to string // pod name label ("" any ringlb pod); peer: a pod name label, "kube-dns", or an address
		port     int
		proto    string
	}
	needs := map[need]bool{
		{"", "", 7946, "TCP"}: false, {"", "", 7946, "UDP"}: false,
		{"", "kube-dns", 53, "UDP"}: false, {"", "kube-dns", 53, "TCP"}: false,
		{"ringlb-balancer", "ringlb-edge", 7101, "TCP"}: false, {"ringlb-balancer", "ringlb-edge", 9101, "TCP"}: false,
		{"ringlb-edge", "ringlb-edge", 7101, "TCP"}: false,
		{"ringlb-gslb", "ringlb-gslb", 9053, "TCP"}: false, {"ringlb-balancer", "ringlb-gslb", 9053, "TCP"}: false,
	}
	denyAll := false
	type rule struct {
		from  string
		peers []any
		ports []any
	}
	var rules []rule
	for _, doc := range manifestDocuments(t) {
		switch doc["kind"] {
		case "ConfigMap":
			cfg := manifestConfig(t, doc)
			if cfg == nil {
				continue
			}
			for _, n := range cfg.GSLB.Names {
				for _, r := range n.Regions {
					m, ok := cfg.GSLB.Monitors[r.Monitor]
					if !ok {
						continue
					}
					for _, mem := range r.Members {
						needs[need{"ringlb-gslb", mem.Address, m.Port, "TCP"}] = false
					}
				}
			}
		case "NetworkPolicy":
			spec := at(doc, "spec")
			sel, _ := at(spec, "podSelector", "matchLabels").(map[string]any)
			egress := slices.Contains(list(at(spec, "policyTypes")), any("Egress"))
			if len(sel) == 0 && egress && at(spec, "egress") == nil {
				denyAll = true
			}
			from, _ := sel["app.kubernetes.io/name"].(string)
			for _, r := range list(at(spec, "egress")) {
				rules = append(rules, rule{from, list(at(r, "to")), list(at(r, "ports"))})
			}
		}
	}
	if !denyAll {
		t.Error("no NetworkPolicy denies egress by default (podSelector {}, policyTypes [Egress], no rule)")
	}
	for _, r := range rules {
		if len(r.peers) == 0 || len(r.ports) == 0 {
			t.Errorf("an egress rule of %q pods opens every peer or every port: %v to %v", r.from, r.ports, r.peers)
		}
		for _, peer := range r.peers {
			var to string
			switch sel, _ := at(peer, "podSelector", "matchLabels").(map[string]any); {
			case at(peer, "ipBlock") != nil:
				cidr, _ := at(peer, "ipBlock", "cidr").(string)
				p, err := netip.ParsePrefix(cidr)
				if err != nil || !p.IsSingleIP() {
					t.Errorf("an egress rule of %q pods opens %q: name one address", r.from, cidr)
					continue
				}
				to = p.Addr().String()
			case sel["k8s-app"] == "kube-dns" && at(peer, "namespaceSelector", "matchLabels", "kubernetes.io/metadata.name") == "kube-system":
				to = "kube-dns"
			case at(peer, "namespaceSelector") == nil && sel["app.kubernetes.io/part-of"] == "ringlb":
				to = ""
			case at(peer, "namespaceSelector") == nil && strings.HasPrefix(fmt.Sprint(sel["app.kubernetes.io/name"]), "ringlb-"):
				to = sel["app.kubernetes.io/name"].(string)
			default:
				t.Errorf("an egress rule of %q pods opens %v, beyond ringlb's pods, kube-dns and named addresses", r.from, peer)
				continue
			}
			for _, p := range r.ports {
				port, _ := at(p, "port").(int)
				proto, _ := at(p, "protocol").(string)
				for n := range needs {
					if n.to == to && n.port == port && n.proto == proto && (r.from == "" || r.from == n.from) {
						needs[n] = true
					}
				}
			}
		}
	}
	for n, met := range needs {
		if !met {
			from := n.from
			if from == "" {
				from = "ringlb"
			}
			t.Errorf("no NetworkPolicy lets %s pods reach %q on %s %d", from, n.to, n.proto, n.port)
		}
	}
}

// manifestConfig parses the ringlb config a ConfigMap carries (nil: none).
func manifestConfig(t *testing.T, doc map[string]any) *Config {
	t.Helper()
	raw, ok := at(doc, "data", "ringlb.yaml").(string)
	if !ok {
		return nil
	}
	cfg, err := Parse("ConfigMap ringlb.yaml", withSecrets(t, []byte(raw)))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// The gslb of the manifests checks the balancers where clients reach them:
// on a port their Service answers on (the pods' own port is not open on the
// Service's address, so a monitor there would mark every member down), and
// a policy lets the gslb reach both that Service port and, for a cluster
// whose proxy answers the Service's address with its pods directly, the
// pods' port behind it.
func TestKubernetesGSLBMonitorsTheBalancersService(t *testing.T) {
	var cfg *Config
	servicePorts := map[int]string{} // the balancers' Service port -> its targetPort
	containerPorts := map[string]int{}
	egress := map[string]bool{} // "peer port" the gslb's pods may reach
	for _, doc := range manifestDocuments(t) {
		switch name := at(doc, "metadata", "name"); {
		case doc["kind"] == "ConfigMap":
			if c := manifestConfig(t, doc); c != nil {
				cfg = c
			}
		case doc["kind"] == "Service" && name == "ringlb-balancer":
			for _, p := range list(at(doc, "spec", "ports")) {
				port, _ := at(p, "port").(int)
				servicePorts[port] = fmt.Sprint(at(p, "targetPort"))
			}
		case doc["kind"] == "Deployment" && name == "ringlb-balancer":
			for _, c := range list(at(doc, "spec", "template", "spec", "containers")) {
				for _, p := range list(at(c, "ports")) {
					port, _ := at(p, "containerPort").(int)
					containerPorts[fmt.Sprint(at(p, "name"))] = port
				}
			}
		case doc["kind"] == "NetworkPolicy" && at(doc, "spec", "podSelector", "matchLabels", "app.kubernetes.io/name") == "ringlb-gslb":
			for _, r := range list(at(doc, "spec", "egress")) {
				for _, peer := range list(at(r, "to")) {
					to, _ := at(peer, "ipBlock", "cidr").(string)
					if pod := at(peer, "podSelector", "matchLabels", "app.kubernetes.io/name"); pod != nil {
						to = fmt.Sprint(pod)
					}
					for _, p := range list(at(r, "ports")) {
						egress[fmt.Sprintf("%s %v", to, at(p, "port"))] = true
					}
				}
			}
		}
	}
	if cfg == nil || len(servicePorts) == 0 {
		t.Fatal("no ConfigMap or no ringlb-balancer Service among the manifests")
	}
	monitored := 0
	for _, n := range cfg.GSLB.Names {
		for region, r := range n.Regions {
			m, ok := cfg.GSLB.Monitors[r.Monitor]
			if !ok {
				continue
			}
			monitored++
			target, ok := servicePorts[m.Port]
			if !ok {
				t.Errorf("gslb name %s region %s: monitor %s probes port %d, which the ringlb-balancer Service does not answer on (%v): every member would be down", n.Name, region, r.Monitor, m.Port, servicePorts)
				continue
			}
			pod, ok := containerPorts[target]
			if !ok {
				pod, _ = strconv.Atoi(target)
			}
			for _, mem := range r.Members {
				if !egress[fmt.Sprintf("%s/32 %d", mem.Address, m.Port)] {
					t.Errorf("no NetworkPolicy lets the gslb reach %s (%s) on %d", mem.Address, mem.Name, m.Port)
				}
			}
			if !egress[fmt.Sprintf("ringlb-balancer %d", pod)] {
				t.Errorf("no NetworkPolicy lets the gslb reach the balancer pods on %d, behind the Service's %d", pod, m.Port)
			}
		}
	}
	if monitored == 0 {
		t.Error("the manifests' gslb monitors no region")
	}
}

// A node drained for maintenance (kubectl drain, a cluster autoscaler, a
// node upgrade) takes one pod of each role at a time, never all: every
// workload of more than one replica has a PodDisruptionBudget over its pods
// that leaves all but one running (and lets a pod that is not ready go, or
// a region without edges would hold every drain), and spreads its pods over
// nodes, so one node lost is not a region's every balancer or every edge.
func TestKubernetesWorkloadsSurviveANodeDrain(t *testing.T) {
	budgets := map[string]any{} // pod name label -> maxUnavailable
	type workload struct {
		kind, name string
		pod        map[string]any
	}
	var workloads []workload
	for _, doc := range manifestDocuments(t) {
		switch doc["kind"] {
		case "PodDisruptionBudget":
			label, _ := at(doc, "spec", "selector", "matchLabels", "app.kubernetes.io/name").(string)
			if at(doc, "spec", "minAvailable") != nil {
				t.Errorf("PodDisruptionBudget %v: minAvailable counts pods, and a scale-up leaves it behind; give maxUnavailable", at(doc, "metadata", "name"))
			}
			budgets[label] = at(doc, "spec", "maxUnavailable")
			if at(doc, "spec", "unhealthyPodEvictionPolicy") != "AlwaysAllow" {
				t.Errorf("PodDisruptionBudget %v: unhealthyPodEvictionPolicy %v: a pod not ready (no edge to route to) would hold a node drain while it stays so; want AlwaysAllow", at(doc, "metadata", "name"), at(doc, "spec", "unhealthyPodEvictionPolicy"))
			}
		case "Deployment", "StatefulSet":
			if replicas, _ := at(doc, "spec", "replicas").(int); replicas < 2 {
				continue
			}
			pod, _ := at(doc, "spec", "template").(map[string]any)
			workloads = append(workloads, workload{doc["kind"].(string), fmt.Sprint(at(doc, "metadata", "name")), pod})
		}
	}
	if len(workloads) < 3 {
		t.Fatalf("%d workloads of several replicas, want the edge, balancer and gslb", len(workloads))
	}
	for _, w := range workloads {
		label, _ := at(w.pod, "metadata", "labels", "app.kubernetes.io/name").(string)
		if budget, ok := budgets[label]; !ok || budget != 1 {
			t.Errorf("%s %s: PodDisruptionBudget maxUnavailable %v, want 1: a node drain may evict every pod at once", w.kind, w.name, budget)
		}
		spread := false
		for _, c := range list(at(w.pod, "spec", "topologySpreadConstraints")) {
			if at(c, "topologyKey") == "kubernetes.io/hostname" && at(c, "labelSelector", "matchLabels", "app.kubernetes.io/name") == label {
				spread = true
			}
		}
		if !spread {
			t.Errorf("%s %s: no topologySpreadConstraints over kubernetes.io/hostname for its pods: they may all share one node", w.kind, w.name)
		}
	}
}

// The manifests' gslb nodes agree on member health, as the nameservers of
// one domain must (gslb/README.md: each reads the others' probe views on
// the admin URL they announce): with more than one gslb replica, its admin
// port listens where the other pods reach it (a loopback URL a peer
// announces is refused as the receiver's own host, and every node decided
// alone: two pods behind one Service could answer differently), behind the
// token, and a policy lets gslb pods, and only them, reach it.
func TestKubernetesGSLBNodesAgree(t *testing.T) {
	var cfg *Config
	replicas := 0
	gslbPods := func(v any) bool {
		return at(v, "podSelector", "matchLabels", "app.kubernetes.io/name") == "ringlb-gslb"
	}
	reach := map[string]bool{} // "from PORT", "to PORT": gslb pods to gslb pods
	for _, doc := range manifestDocuments(t) {
		switch doc["kind"] {
		case "ConfigMap":
			if c := manifestConfig(t, doc); c != nil {
				cfg = c
			}
		case "Deployment":
			if at(doc, "metadata", "name") == "ringlb-gslb" {
				replicas, _ = at(doc, "spec", "replicas").(int)
			}
		case "NetworkPolicy":
			if !gslbPods(at(doc, "spec")) {
				continue
			}
			for dir, rules := range map[string][]any{"from": list(at(doc, "spec", "ingress")), "to": list(at(doc, "spec", "egress"))} {
				for _, r := range rules {
					if !slices.ContainsFunc(list(at(r, dir)), gslbPods) {
						continue
					}
					for _, p := range list(at(r, "ports")) {
						reach[fmt.Sprint(dir, " ", at(p, "port"))] = true
					}
				}
			}
		}
	}
	if cfg == nil || replicas < 2 {
		t.Fatalf("no ConfigMap, or a gslb of %d replicas: nothing to agree", replicas)
	}
	a := cfg.GSLB.Admin
	if isLoopback(a.Listen) {
		t.Errorf("gslb.admin.listen %s with %d gslb replicas: each peer announces a loopback admin URL, which the others refuse, and every node decides member health alone", a.Listen, replicas)
	}
	_, port, _ := net.SplitHostPort(a.Listen)
	if !reach["from "+port] || !reach["to "+port] {
		t.Errorf("no NetworkPolicy lets the gslb pods reach each other's admin port %s (ingress %v, egress %v): no peer view is heard", port, reach["from "+port], reach["to "+port])
	}
}

// A pod behind a LoadBalancer Service keeps serving after it is deleted
// until the Service has moved away from it: endpoints, kube-proxy and the
// cloud's health checks of externalTrafficPolicy Local learn of the
// deletion seconds after it, and a pod that stopped accepting at once
// (SIGTERM right after a preStop that returns in a millisecond) had them
// send new connections, for those seconds, to a closed port. So its
// preStop waits (sleep), without failing its readiness first: kube-proxy
// sends a Local Service's traffic to a terminating pod only while it is
// ready, so a pod put in maintenance while the node still receives
// traffic for it drops that traffic. The grace period holds the wait and
// -shutdown-timeout (the tunnels' and queries' last moments) both.
func TestKubernetesServicePodsStopAfterTheServiceMoved(t *testing.T) {
	served := map[string]bool{} // pod name label behind a LoadBalancer Service
	docs := manifestDocuments(t)
	for _, doc := range docs {
		if doc["kind"] == "Service" && at(doc, "spec", "type") == "LoadBalancer" {
			label, _ := at(doc, "spec", "selector", "app.kubernetes.io/name").(string)
			served[label] = true
		}
	}
	checked := 0
	for _, doc := range docs {
		if doc["kind"] != "Deployment" && doc["kind"] != "StatefulSet" {
			continue
		}
		pod := at(doc, "spec", "template")
		if !served[fmt.Sprint(at(pod, "metadata", "labels", "app.kubernetes.io/name"))] {
			continue
		}
		checked++
		w := fmt.Sprintf("%s %v", doc["kind"], at(doc, "metadata", "name"))
		grace, _ := at(pod, "spec", "terminationGracePeriodSeconds").(int)
		for _, c := range list(at(pod, "spec", "containers")) {
			preStop := at(c, "lifecycle", "preStop")
			wait, _ := at(preStop, "sleep", "seconds").(int)
			if wait < 5 {
				t.Errorf("%s: preStop %v: the pod stops accepting as soon as it is deleted, while the Service still sends it connections; want a preStop sleep of some seconds", w, preStop)
			}
			if strings.Contains(fmt.Sprint(preStop), "maintenance") {
				t.Errorf("%s: preStop %v fails the pod's readiness while the Service still sends it traffic, which kube-proxy then drops", w, preStop)
			}
			args := list(at(c, "args"))
			i := slices.Index(args, any("-shutdown-timeout"))
			if i < 0 || i+1 == len(args) {
				t.Errorf("%s: args %v carry no -shutdown-timeout: the grace period cannot be seen to hold it", w, args)
				continue
			}
			stop, err := time.ParseDuration(fmt.Sprint(args[i+1]))
			if err != nil {
				t.Fatal(err)
			}
			if need := wait + int(stop.Seconds()); grace <= need {
				t.Errorf("%s: terminationGracePeriodSeconds %d: the preStop's %ds and -shutdown-timeout %s need more; the kubelet kills the pod with its tunnels", w, grace, wait, stop)
			}
		}
	}
	if checked < 2 {
		t.Fatalf("%d workloads behind a LoadBalancer Service, want the balancer and the gslb", checked)
	}
}

// The image's build context is an allow-list: every directory holding the
// module's Go code is in it (else the image does not build), and key,
// token and password files made in the checkout are not (else `docker
// build` copies them into the build stage and its cache).
func TestDockerBuildContextHoldsTheCodeAndNoSecret(t *testing.T) {
	data, err := os.ReadFile("../.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, line := range strings.Split(string(data), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			lines = append(lines, line)
		}
	}
	if len(lines) == 0 || lines[0] != "*" {
		t.Fatalf(".dockerignore does not start by leaving everything out: %q", lines)
	}
	entries, err := os.ReadDir("..")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		code := false
		_ = filepath.WalkDir(filepath.Join("..", e.Name()), func(path string, d os.DirEntry, err error) error {
			code = code || err == nil && strings.HasSuffix(path, ".go")
			return nil
		})
		if code && !slices.Contains(lines, "!"+e.Name()) {
			t.Errorf(".dockerignore leaves out %s/, which holds the module's code", e.Name())
		}
	}
	for _, secret := range []string{"**/*.key", "**/*.token", "**/*.htpasswd", "**/*.pem"} {
		if !slices.Contains(lines, secret) {
			t.Errorf(".dockerignore lets %s into the build context", secret)
		}
	}
}
