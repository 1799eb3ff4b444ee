package configs

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// A file of a megabyte (the config API's bound on a body) with a problem
// every few bytes: its first MaxProblems problems are said, the rest
// counted in one more. Before, all 170,000 were: 35 MB of messages from
// `ringlb check`, twice that in a POST /api/config/check answer, held by
// the node that checked it.
func TestProblemsAreBounded(t *testing.T) {
	const fields = 170_000
	var b strings.Builder
	b.WriteString("cluster: { name: e1, bind: 127.0.0.1:7946 }\nedge:\n  admin: {")
	for i := range fields {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("z: 1")
	}
	b.WriteString("}\n")
	_, err := Parse("big.yaml", []byte(b.String()))
	var refused *Refused
	if !errors.As(err, &refused) {
		t.Fatalf("a file of %d unknown fields: %T %v", fields, err, err)
	}
	t.Logf("%d bytes of file: %d problems said, %d counted, %d bytes of messages", b.Len(), len(refused.Errors), refused.Unsaid, len(err.Error()))
	if len(refused.Errors) != MaxProblems+1 {
		t.Fatalf("%d problems said, want %d and one counting the rest", len(refused.Errors), MaxProblems)
	}
	if !strings.HasPrefix(refused.Errors[0].Error(), "big.yaml:3: edge.admin.z: unknown field") {
		t.Errorf("first problem: %v", refused.Errors[0])
	}
	last := refused.Errors[MaxProblems].Error()
	if want := fmt.Sprintf("big.yaml: and %d more problems, not said (the first %d are)", refused.Unsaid, MaxProblems); last != want {
		t.Errorf("last problem %q, want %q", last, want)
	}
	if refused.Unsaid+MaxProblems < fields {
		t.Errorf("%d problems said and counted, want at least the %d unknown fields", refused.Unsaid+MaxProblems, fields)
	}
}
