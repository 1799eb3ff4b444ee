package configs

import (
	"errors"
	"testing"
)

// FuzzParse: no input makes the loader panic, and every failure is a located
// Errors list, never a bare error.
func FuzzParse(f *testing.F) {
	f.Add(DemoFile)
	f.Add([]byte("cluster: { name: a, join: [x] }\nedge: { listen: ':1' }"))
	f.Add([]byte("balancer: { edges: [ { name: e, url: 'http://h:1', weight: 2 } ], ring: { load: 1.5 } }"))
	f.Add([]byte("a: &x [*x]"))
	f.Add([]byte("edge:\n  history: {messages: 1e9}\n  idle_grace: 1h\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse("fuzz.yaml", data)
		if err == nil {
			if cfg == nil {
				t.Fatal("nil config without error")
			}
			return
		}
		var errs Errors
		if !errors.As(err, &errs) || len(errs) == 0 {
			t.Fatalf("error is not a located Errors list: %v", err)
		}
	})
}
