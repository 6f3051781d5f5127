package dashtest

import (
	"bufio"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// documented is a metric as a document describes it.
type documented struct {
	typ    string // empty where the document does not say
	labels []string
}

var docEntry = regexp.MustCompile(`^//\s+- (shardline_\w+) \((counter|gauge|histogram); ([^)]*)\)`)

// parseDoc reads the metric list of metrics/doc.go: entries
// "- name (type; labels)", labels "-" for none.
func parseDoc(t *testing.T, path string) map[string]documented {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]documented{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		m := docEntry.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		d := documented{typ: m[2]}
		if m[3] != "-" {
			for _, l := range strings.Split(m[3], ",") {
				d.labels = append(d.labels, strings.TrimSpace(l))
			}
		}
		if _, dup := out[m[1]]; dup {
			t.Errorf("%s: %s listed twice", path, m[1])
		}
		out[m[1]] = d
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(out) < 20 {
		t.Fatalf("%s: only %d metrics found; the list's format may have changed", path, len(out))
	}
	return out
}

var readmeName = regexp.MustCompile("`(shardline_\\w+)(?:\\{([^}]*)\\})?`")

// parseReadme reads the README's metrics table: in its first column, every
// `name` or `name{labels}` (the labels beyond stream and worker; none
// without braces).
func parseReadme(t *testing.T, path string) map[string]documented {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]documented{}
	in := false
	for line := range strings.SplitSeq(string(raw), "\n") {
		switch {
		case strings.HasPrefix(line, "| Metric |"):
			in = true
			continue
		case in && !strings.HasPrefix(line, "|"):
			in = false
		}
		if !in || strings.HasPrefix(line, "| ---") {
			continue
		}
		cells := strings.Split(line, "|")
		if len(cells) < 3 {
			continue
		}
		for _, m := range readmeName.FindAllStringSubmatch(cells[1], -1) {
			var d documented
			if m[2] != "" {
				for _, l := range strings.Split(m[2], ",") {
					d.labels = append(d.labels, strings.TrimSpace(l))
				}
			}
			out[m[1]] = d
		}
	}
	if len(out) < 10 {
		t.Fatalf("%s: only %d metrics found in the metrics table", path, len(out))
	}
	return out
}

func emittedLabels(f *family) []string {
	var ls []string
	for l := range f.labels {
		ls = append(ls, l)
	}
	slices.Sort(ls)
	return ls
}

// compareDoc checks that metrics/doc.go lists exactly the metrics emitted,
// with their types and labels.
func compareDoc(t *testing.T, doc map[string]documented, emitted map[string]*family) {
	for name, f := range emitted {
		d, ok := doc[name]
		if !ok {
			t.Errorf("%s (%s; %v) is emitted but not in metrics/doc.go", name, f.typ, emittedLabels(f))
			continue
		}
		if d.typ != f.typ {
			t.Errorf("%s: metrics/doc.go says %s, emitted as %s", name, d.typ, f.typ)
		}
		want := slices.Sorted(slices.Values(d.labels))
		if got := emittedLabels(f); !slices.Equal(got, want) {
			t.Errorf("%s: metrics/doc.go gives labels %v, emitted with %v (beyond stream and worker)", name, want, got)
		}
	}
	for name := range doc {
		if _, ok := emitted[name]; !ok {
			t.Errorf("%s is in metrics/doc.go but was never emitted", name)
		}
	}
}

// compareReadme checks that every metric of the README's table is emitted
// with the labels the table gives it.
func compareReadme(t *testing.T, readme map[string]documented, emitted map[string]*family) {
	for name, d := range readme {
		f, ok := emitted[name]
		if !ok {
			t.Errorf("README's metrics table names %s, which is never emitted", name)
			continue
		}
		want := slices.Sorted(slices.Values(d.labels))
		if got := emittedLabels(f); !slices.Equal(got, want) {
			t.Errorf("README's metrics table gives %s the labels %v; emitted with %v (beyond stream and worker)", name, want, got)
		}
	}
}
