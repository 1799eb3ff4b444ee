package configs

import (
	"errors"
	"strings"
	"testing"
)

// A file with problems is refused with every one of them, and with the
// warnings it has besides: an operator fixing the problems learns of the
// warnings in the same pass, not in the next check.
func TestWarningsAreSaidWithProblems(t *testing.T) {
	src := strings.Replace(goodGSLB, "bal: { type: http, port: 8080, interval: 500ms, timeout: 250ms }", "bal: { type: https }", 1)
	src = strings.Replace(src, "gslb:\n", "gslb:\n  nope: 1\n", 1)
	_, err := Parse("g.yaml", []byte(src))
	var errs Errors
	if !errors.As(err, &errs) || len(errs) != 1 || errs[0].Path != "gslb.nope" {
		t.Fatalf("want the one problem gslb.nope, got %v", err)
	}
	var refused *Refused
	if !errors.As(err, &refused) {
		t.Fatalf("a refused file says nothing but its problems: %T %v", err, err)
	}
	t.Logf("problems: %v; warnings: %v; roles %v", refused.Errors, refused.Warnings, refused.Roles)
	if len(refused.Warnings) != 1 || !strings.Contains(refused.Warnings[0].Error(), "gslb.monitors.bal.type: https verifies nothing without tls.server_name") {
		t.Errorf("warnings of the refused file: %v", refused.Warnings)
	}
	if strings.Contains(err.Error(), "verifies nothing") {
		t.Errorf("a warning is said as a problem: %v", err)
	}
	if strings.Join(refused.Roles, ",") != "gslb" {
		t.Errorf("roles of a gslb file: %v", refused.Roles)
	}
}
