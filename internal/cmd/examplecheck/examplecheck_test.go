package examplecheck

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// copyable are the example programs users are told to copy.
var copyable = []string{"examples/consumer"}

// Each copyable example, copied alone into a fresh module that requires
// this one (replaced by the working tree), builds: it imports nothing from
// internal/ and nothing else of this module's tree.
func TestExamplesCompileInAFreshModule(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a module: skipped with -short")
	}
	root := moduleRoot(t)
	for _, ex := range copyable {
		t.Run(filepath.Base(ex), func(t *testing.T) {
			dir := t.TempDir()
			files, err := filepath.Glob(filepath.Join(root, ex, "*.go"))
			if err != nil || len(files) == 0 {
				t.Fatalf("%s: no Go files (%v)", ex, err)
			}
			for _, f := range files {
				if strings.HasSuffix(f, "_test.go") {
					continue
				}
				copyFile(t, f, filepath.Join(dir, filepath.Base(f)))
			}
			// go.sum of this module has every checksum the copy needs.
			copyFile(t, filepath.Join(root, "go.sum"), filepath.Join(dir, "go.sum"))
			mod := "module example.com/copied\n\ngo 1.26.0\n\n" +
				"require github.com/shardline/shardline v0.0.0\n\n" +
				"replace github.com/shardline/shardline => " + root + "\n"
			if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte(mod), 0o644); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(goTool(t), "build", "-o", filepath.Join(dir, "bin"), ".")
			cmd.Dir = dir
			cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOWORK=off")
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("%s copied into a fresh module does not build: %v\n%s", ex, err, out)
			}
		})
	}
}

func goTool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go tool on PATH")
	}
	return p
}

// moduleRoot is the directory of this module's go.mod.
func moduleRoot(t *testing.T) string {
	t.Helper()
	out, err := exec.Command(goTool(t), "env", "GOMOD").Output()
	if err != nil {
		t.Fatal(err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		t.Fatal("not inside a module")
	}
	return filepath.Dir(gomod)
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
