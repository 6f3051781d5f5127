// Package archtest checks the module's package arrows: every import of a
// module package points at a package on a lower layer, never sideways or up.
package archtest

import (
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/shardline/shardline"

// layers gives each library package its layer. A package may import only
// packages on lower layers (and anything outside the module). Programs and
// test harnesses (cmd/, examples/, integration/, bench/, internal/cmd/ and the
// test helpers below) sit on top and may import anything.
var layers = map[string]int{
	// Vocabulary and leaf machinery.
	"kcl":                0,
	"internal/kpl/kplpb": 0,
	"internal/hashkey":   0,
	"internal/awsx":      1,
	"internal/ddbcost":   1,
	"internal/kpl":       1,
	"kpl":                2,
	// The lease protocol and the AWS-facing public packages.
	"internal/lease": 2,
	"fanout":         2,
	"producer":       2,
	// Checkpoints, the operator's lease table, the shard reader.
	"internal/checkpoint": 3,
	"checkpoint":          3,
	"lease":               3,
	"internal/reader":     3,
	// The per-shard lifecycle and the delivery policies around it.
	"internal/shardproc": 4,
	"internal/delivery":  5,
	// What users run and test with.
	"worker":  6,
	"kcltest": 6,
	"metrics": 7,
}

// top are packages that may import any library package.
var top = []string{"cmd/", "examples/", "integration", "bench", "internal/cmd/", "internal/fleet", "internal/faults",
	"internal/efotest", "internal/testenv", "internal/javakcl", "internal/lease/storetest", "internal/benchkinesis", "internal/archtest", "internal/multilang", "internal/costsim", "dashtest"}

func isTop(pkg string) bool {
	for _, p := range top {
		if pkg == strings.TrimSuffix(p, "/") || strings.HasPrefix(pkg, p) {
			return true
		}
	}
	return false
}

func TestPackageArrowsPointDown(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	imports := map[string]map[string]bool{} // package dir -> module packages it imports (non-test files)
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if n := d.Name(); path != root && (strings.HasPrefix(n, ".") || n == "node_modules" || n == "testdata") {
				return filepath.SkipDir
			}
			if path != root {
				if _, err := os.Stat(filepath.Join(path, "go.mod")); err == nil {
					return filepath.SkipDir // another module (bench/, dashtest/)
				}
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, filepath.Dir(path))
		rel = filepath.ToSlash(rel)
		if imports[rel] == nil {
			imports[rel] = map[string]bool{}
		}
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			if strings.HasPrefix(p, module+"/") {
				imports[rel][strings.TrimPrefix(p, module+"/")] = true
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(imports) < len(layers) {
		t.Fatalf("found %d packages, fewer than the %d with layers: wrong root %s?", len(imports), len(layers), root)
	}
	for pkg, imps := range imports {
		if isTop(pkg) {
			continue
		}
		lp, ok := layers[pkg]
		if !ok {
			t.Errorf("package %s has no layer: add it to layers in %s", pkg, "internal/archtest/arch_test.go")
			continue
		}
		for imp := range imps {
			li, ok := layers[imp]
			switch {
			case !ok:
				t.Errorf("%s (layer %d) imports %s, which is not a library package", pkg, lp, imp)
			case li >= lp:
				t.Errorf("%s (layer %d) imports %s (layer %d): arrows must point down", pkg, lp, imp, li)
			}
		}
	}
}
