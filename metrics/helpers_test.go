package metrics

import (
	"fmt"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// Series is one gathered series: a counter's or gauge's value, or a
// histogram's sample count (Sum holds its sum).
type Series struct {
	Name   string
	Type   string // "counter", "gauge", "histogram"
	Labels map[string]string
	Value  float64
	Sum    float64
}

// Key formats s as name{k="v",...} with the labels sorted.
func (s Series) Key() string { return SeriesKey(s.Name, s.Labels) }

// SeriesKey formats a series key as Series.Key does.
func SeriesKey(name string, labels map[string]string) string {
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString(name)
	b.WriteByte('{')
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%s=%q", k, labels[k])
	}
	b.WriteByte('}')
	return b.String()
}

// Gather returns every series g holds, keyed by Series.Key. It fails the
// test if gathering fails (inconsistent or duplicate series).
func Gather(t testing.TB, g prometheus.Gatherer) map[string]Series {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	out := map[string]Series{}
	for _, mf := range mfs {
		for _, mt := range mf.GetMetric() {
			s := Series{Name: mf.GetName(), Labels: map[string]string{}}
			for _, lp := range mt.GetLabel() {
				s.Labels[lp.GetName()] = lp.GetValue()
			}
			switch {
			case mt.Counter != nil:
				s.Type, s.Value = "counter", mt.GetCounter().GetValue()
			case mt.Gauge != nil:
				s.Type, s.Value = "gauge", mt.GetGauge().GetValue()
			case mt.Histogram != nil:
				s.Type = "histogram"
				s.Value, s.Sum = float64(mt.GetHistogram().GetSampleCount()), mt.GetHistogram().GetSampleSum()
			default:
				s.Type = strings.ToLower(mf.GetType().String())
			}
			out[s.Key()] = s
		}
	}
	return out
}

// Families returns the names of the families in a Gather result, with
// their type and label names (beyond none).
func Families(series map[string]Series) map[string]Series {
	out := map[string]Series{}
	for _, s := range series {
		f, ok := out[s.Name]
		if !ok {
			f = Series{Name: s.Name, Type: s.Type, Labels: map[string]string{}}
		}
		for k := range s.Labels {
			f.Labels[k] = ""
		}
		out[s.Name] = f
	}
	return out
}

// Sum adds the values of the series named name whose labels include match.
func Sum(series map[string]Series, name string, match map[string]string) float64 {
	total := 0.0
outer:
	for _, s := range series {
		if s.Name != name {
			continue
		}
		for k, v := range match {
			if s.Labels[k] != v {
				continue outer
			}
		}
		total += s.Value
	}
	return total
}

// Count returns how many series named name have labels including match.
func Count(series map[string]Series, name string, match map[string]string) int {
	n := 0
outer:
	for _, s := range series {
		if s.Name != name {
			continue
		}
		for k, v := range match {
			if s.Labels[k] != v {
				continue outer
			}
		}
		n++
	}
	return n
}
