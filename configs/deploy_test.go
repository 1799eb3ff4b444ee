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
