package configs

import (
	"bytes"
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

// The configuration reference (docs/CONFIG.md) is generated from the
// schema: every field of Config, by its YAML path, with the doc comment of
// its Go field. This test regenerates it and fails when the committed file
// differs, so a field cannot be added, renamed or re-documented without the
// reference following:
//
//	go test ./configs -run TestConfigReference -update
var update = flag.Bool("update", false, "rewrite docs/CONFIG.md from the schema")

const referencePath = "../docs/CONFIG.md"

func TestConfigReference(t *testing.T) {
	got := configReference(t)
	if *update {
		if err := os.WriteFile(referencePath, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(referencePath)
	if err != nil {
		t.Fatalf("%v (generate it: go test ./configs -run TestConfigReference -update)", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s is stale: a field or its comment changed; regenerate it with\n  go test ./configs -run TestConfigReference -update", referencePath)
	}
	// Every field reachable from Config is in it.
	for _, path := range fieldPaths(reflect.TypeOf(Config{}), "") {
		if !bytes.Contains(got, []byte("`"+path+"`")) {
			t.Errorf("%s is not documented", path)
		}
	}
}

// fieldDocs reads the doc (or line) comment of every struct field in this
// package's source, by "Type.Field".
func fieldDocs(t *testing.T) map[string]string {
	t.Helper()
	fset := token.NewFileSet()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	docs := map[string]string{}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		file, err := parser.ParseFile(fset, f, nil, parser.ParseComments)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(file, func(n ast.Node) bool {
			ts, ok := n.(*ast.TypeSpec)
			if !ok {
				return true
			}
			st, ok := ts.Type.(*ast.StructType)
			if !ok {
				return true
			}
			for _, field := range st.Fields.List {
				text := field.Doc.Text()
				if text == "" {
					text = field.Comment.Text()
				}
				for _, name := range field.Names {
					docs[ts.Name.Name+"."+name.Name] = strings.Join(strings.Fields(text), " ")
				}
			}
			return false
		})
	}
	return docs
}

// fieldPaths lists the YAML paths of every field below t: maps as
// NAME.*, lists as NAME[].
func fieldPaths(t reflect.Type, prefix string) []string {
	var out []string
	walkFields(t, prefix, func(path string, _ reflect.StructField, _ reflect.Type) { out = append(out, path) })
	return out
}

func walkFields(t reflect.Type, prefix string, visit func(path string, f reflect.StructField, owner reflect.Type)) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	for i := range t.NumField() {
		f := t.Field(i)
		tag := strings.Split(f.Tag.Get("yaml"), ",")[0]
		if tag == "" || tag == "-" {
			continue
		}
		path := tag
		if prefix != "" {
			path = prefix + "." + tag
		}
		visit(path, f, t)
		ft := f.Type
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		switch {
		case ft.Kind() == reflect.Struct && ft != durationType:
			walkFields(ft, path, visit)
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
			walkFields(ft.Elem(), path+"[]", visit)
		case ft.Kind() == reflect.Map && ft.Elem().Kind() == reflect.Struct:
			walkFields(ft.Elem(), path+".*", visit)
		}
	}
}

func typeName(t reflect.Type) string {
	switch {
	case t == durationType:
		return "duration"
	case t.Kind() == reflect.Pointer:
		return typeName(t.Elem())
	case t.Kind() == reflect.Slice:
		return "list of " + typeName(t.Elem())
	case t.Kind() == reflect.Map:
		return "map of " + typeName(t.Elem())
	case t.Kind() == reflect.Struct:
		return "section"
	case t.Kind() == reflect.Bool:
		return "bool"
	case t.Kind() == reflect.Float64:
		return "number"
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Uint64:
		return "integer"
	}
	return "string"
}

func configReference(t *testing.T) []byte {
	docs := fieldDocs(t)
	var b bytes.Buffer
	b.WriteString(`# Configuration reference

Generated from the schema (` + "`configs/*.go`" + `) by ` + "`go test ./configs -run TestConfigReference -update`" + `;
the test fails when this file and the schema disagree. One YAML file configures a node (or,
for the demo, a whole cluster); each role reads its own sections: every node ` + "`cluster`" + `, an
edge ` + "`edge`" + `, a balancer ` + "`balancer`" + `, a gslb ` + "`gslb`" + `. Decoding is strict (an unknown field
is an error naming its file, line and path) and ` + "`ringlb check -config FILE`" + ` reports every
problem at once. Durations are written like ` + "`500ms`, `5s`, `2m`" + ` (at most ` + "`87600h`" + `, ten
years); relative file names are relative to the config file's directory. A field left out takes the default its description
gives; a number set to 0 that the default would replace is refused (a node would run with a
value its file does not say), unless its description gives 0 a meaning. Annotated examples: ` + "[`configs/examples/`](../configs/examples)" + `.

A file a field names for a secret (the keyring, the admin and metrics tokens, the users file,
the join-token and TSIG secrets, a DNSSEC key's ` + "`.private`" + `, a TLS ` + "`key_file`" + `) is refused
when others may read, write or run it, or its group may write it; its group may read it (0640,
0440), with a warning unless root owns it ([SECURITY.md](SECURITY.md#secret-files)). The
config file itself is refused when others may write it (its group may: the config API
replaces it as the node's user).
`)
	section := ""
	walkFields(reflect.TypeOf(Config{}), "", func(path string, f reflect.StructField, owner reflect.Type) {
		top, _, _ := strings.Cut(path, ".")
		if top != section {
			section = top
			fmt.Fprintf(&b, "\n## `%s`\n\n| field | type | meaning |\n| --- | --- | --- |\n", top)
			if path == top {
				if doc := docs[owner.Name()+"."+f.Name]; doc != "" {
					// The section's own comment introduces it.
					b.Truncate(b.Len() - len("| field | type | meaning |\n| --- | --- | --- |\n"))
					fmt.Fprintf(&b, "%s\n\n| field | type | meaning |\n| --- | --- | --- |\n", doc)
				}
				return
			}
		}
		doc := docs[owner.Name()+"."+f.Name]
		fmt.Fprintf(&b, "| `%s` | %s | %s |\n", path, typeName(f.Type), strings.ReplaceAll(doc, "|", `\|`))
	})
	return b.Bytes()
}

// Every field of the schema has a doc comment: the reference says what it
// is for, its unit, its default.
func TestEveryFieldIsDocumented(t *testing.T) {
	docs := fieldDocs(t)
	walkFields(reflect.TypeOf(Config{}), "", func(path string, f reflect.StructField, owner reflect.Type) {
		if docs[owner.Name()+"."+f.Name] == "" {
			t.Errorf("%s (%s.%s) has no doc comment", path, owner.Name(), f.Name)
		}
	})
}

// The reference is for operators: a description names what a file says
// or a node shows, not the Go behind it. The Go names of this package's
// exported constants, variables and functions (NoKeyReject for
// no_key: reject, DefaultEdgeMaxConnections for a derived limit) and the Go
// names of fields whose YAML spelling differs by more than case
// (HMACSecretFile for hmac_secret_file) mean nothing in a file, and
// `ringlb check` refuses them as values. A description may open with its
// own field's Go name, as a Go doc comment does.
func TestReferenceNamesNoGoIdentifier(t *testing.T) {
	goNames := map[string]string{} // Go name → what to write instead
	fset := token.NewFileSet()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		file, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range file.Decls {
			switch d := d.(type) {
			case *ast.GenDecl:
				for _, s := range d.Specs {
					if vs, ok := s.(*ast.ValueSpec); ok {
						for _, n := range vs.Names {
							if n.IsExported() {
								goNames[n.Name] = "its value, as a file spells it or a node shows it"
							}
						}
					}
				}
			case *ast.FuncDecl:
				if d.Recv == nil && d.Name.IsExported() {
					goNames[d.Name.Name] = "what it gives, in words or numbers"
				}
			}
		}
	}
	walkFields(reflect.TypeOf(Config{}), "", func(path string, f reflect.StructField, _ reflect.Type) {
		yamlName := strings.Split(f.Tag.Get("yaml"), ",")[0]
		if !strings.EqualFold(f.Name, yamlName) {
			goNames[f.Name] = yamlName
		}
	})
	docs := fieldDocs(t)
	word := regexp.MustCompile(`[A-Za-z_][A-Za-z0-9_]*`)
	walkFields(reflect.TypeOf(Config{}), "", func(path string, f reflect.StructField, owner reflect.Type) {
		for _, w := range word.FindAllString(docs[owner.Name()+"."+f.Name], -1) {
			if instead, ok := goNames[w]; ok && w != f.Name {
				t.Errorf("%s (%s.%s): its description names the Go identifier %s; write %s", path, owner.Name(), f.Name, w, instead)
			}
		}
	})
}

// cluster.allowed_networks' description lists its default networks: the
// reference cannot name DefaultAllowedNetworks, so the two are held
// together here.
func TestAllowedNetworksDocumented(t *testing.T) {
	doc := fieldDocs(t)["Cluster.AllowedNetworks"]
	for _, n := range DefaultAllowedNetworks {
		if !strings.Contains(doc, n+" ") && !strings.Contains(doc, n+",") && !strings.Contains(doc, n+")") {
			t.Errorf("cluster.allowed_networks' description does not list the default %s", n)
		}
	}
}
