package gslb

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ringlb/ringlb/configs"
)

// A zone file's problem keeps its file, what is wrong and where, and never
// the token it stopped at: the file may be one that is not a zone (the
// config names it), whose tokens are secrets.
func TestZoneProblemsQuoteNoToken(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ name, content, want string }{
		{"a keyring", "c2VjcmV0LWdvc3NpcC1rZXktMDEyMzQ1Njc4OWFiY2RlZg==\n", `dns: not a TTL at line: 1:`},
		{"a token with quotes", "@ 3600 IN SOA ns1 hostmaster 1 7200 3600 1209600 60\nx 60 IN A \"s3cr3t: \\\"quoted\\\"\"\n", `dns: bad A A at line: 2:`},
		{"a users line", "admin:$2y$10$s3cr3tHashPart0123456789\n", `dns: not a TTL at line: 1:`},
	} {
		file := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-"))
		if err := os.WriteFile(file, []byte(tc.content), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := loadZone(configs.Zone{Origin: "ringlb.test", File: file}, configs.RateLimit{})
		t.Logf("%s: %v", tc.name, err)
		if err == nil || !strings.Contains(err.Error(), file+": "+tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
		if err != nil && (strings.Contains(err.Error(), "s3cr3t") || strings.Contains(err.Error(), "c2VjcmV0")) {
			t.Errorf("%s: the problem quotes the file: %v", tc.name, err)
		}
	}
}
