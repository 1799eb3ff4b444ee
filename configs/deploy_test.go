package configs

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
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
