package configs

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"strconv"
	"strings"
	"testing"
)

// Every name of the wire contract defined in contract.go is described in
// docs/CONTRACT.md, the page clients and operators read.
func TestContractIsDocumented(t *testing.T) {
	doc, err := os.ReadFile("../docs/CONTRACT.md")
	if err != nil {
		t.Fatal(err)
	}
	file, err := parser.ParseFile(token.NewFileSet(), "contract.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	ast.Inspect(file, func(node ast.Node) bool {
		lit, ok := node.(*ast.BasicLit)
		if !ok {
			return true
		}
		value := lit.Value
		if lit.Kind == token.STRING {
			value, _ = strconv.Unquote(lit.Value)
		}
		n++
		if !strings.Contains(string(doc), value) {
			t.Errorf("docs/CONTRACT.md does not describe %s", lit.Value)
		}
		return true
	})
	if n < 15 {
		t.Fatalf("read %d names from contract.go; the test lost track of it", n)
	}
}
