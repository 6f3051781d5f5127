package shardproc

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strings"
	"testing"
)

// TestOnlyTheMachineCallsProcessors keeps one lifecycle: the worker and the
// test kit must reach a processor only through a Machine. Their non-test
// files may not name the optional processor interfaces, build a
// ProcessorPanicError or call ProcessRecords themselves.
func TestOnlyTheMachineCallsProcessors(t *testing.T) {
	forbidden := map[string]bool{
		"Initializer": true, "LeaseLostHandler": true, "ShardEndedHandler": true, "ShutdownRequestedHandler": true,
		"ProcessorPanicError": true, "ProcessRecords": true,
	}
	for _, dir := range []string{"../../worker", "../../kcltest"} {
		files, err := filepath.Glob(filepath.Join(dir, "*.go"))
		if err != nil || len(files) == 0 {
			t.Fatalf("no Go files in %s: %v", dir, err)
		}
		for _, path := range files {
			if strings.HasSuffix(path, "_test.go") {
				continue
			}
			fset := token.NewFileSet()
			f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
			if err != nil {
				t.Fatal(err)
			}
			ast.Inspect(f, func(n ast.Node) bool {
				if sel, ok := n.(*ast.SelectorExpr); ok && forbidden[sel.Sel.Name] {
					t.Errorf("%s: %s is the lifecycle's business: go through shardproc.Machine", fset.Position(sel.Pos()), sel.Sel.Name)
				}
				return true
			})
		}
	}
}
