package main

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Sample is the values of one figure over several runs.
type Sample []float64

// Median returns the median (the mean of the middle two for an even count).
func (s Sample) Median() float64 {
	if len(s) == 0 {
		return math.NaN()
	}
	c := slices.Clone(s)
	slices.Sort(c)
	if n := len(c); n%2 == 1 {
		return c[n/2]
	} else {
		return (c[n/2-1] + c[n/2]) / 2
	}
}

// Min and Max return the extremes.
func (s Sample) Min() float64 { return slices.Min(s) }

// Max returns the largest value.
func (s Sample) Max() float64 { return slices.Max(s) }

// Unit says how a figure's values are formatted.
type Unit int

// Units of the figures.
const (
	UnitCount   Unit = iota // plain number, thousands as "k"
	UnitRatio               // two decimals
	UnitSeconds             // values in seconds
	UnitMB                  // MB/s or MiB, one decimal
	UnitPercent             // percent of one core
)

// Row is one line of the table.
type Row struct {
	// Section groups rows: "1 overhead", "2 leases", ...
	Section string
	// Figure says what was measured, with its unit.
	Figure string
	Unit   Unit
	// Value is the measured figure; Baseline, if any, the same figure of
	// the baseline (BaselineName) measured in the same run.
	Value, Baseline Sample
	BaselineName    string
	// Note qualifies the figure (emulator-bound, settings, ...).
	Note string
}

func format(u Unit, v float64) string {
	switch u {
	case UnitRatio:
		return fmt.Sprintf("%.2f", v)
	case UnitSeconds:
		d := time.Duration(v * float64(time.Second))
		switch {
		case d < time.Second:
			return fmt.Sprintf("%dms", d.Milliseconds())
		case d < time.Minute:
			return fmt.Sprintf("%.2fs", v)
		default:
			return d.Round(time.Second).String()
		}
	case UnitMB:
		return fmt.Sprintf("%.1f", v)
	case UnitPercent:
		return fmt.Sprintf("%.1f%%", v)
	}
	switch a := math.Abs(v); {
	case a >= 1e6:
		return fmt.Sprintf("%.2fM", v/1e6)
	case a >= 1e4:
		return fmt.Sprintf("%.1fk", v/1e3)
	case a >= 100 || v == math.Trunc(v):
		return fmt.Sprintf("%.0f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

// cell formats a sample as "median (min–max, n runs)".
func cell(u Unit, s Sample) string {
	if len(s) == 0 {
		return "-"
	}
	if len(s) == 1 {
		return format(u, s[0])
	}
	return fmt.Sprintf("%s (%s–%s)", format(u, s.Median()), format(u, s.Min()), format(u, s.Max()))
}

func (r Row) cells() (value, baseline, ratio string) {
	value = cell(r.Unit, r.Value)
	baseline, ratio = "-", "-"
	if len(r.Baseline) > 0 {
		baseline = cell(r.Unit, r.Baseline) + " " + r.BaselineName
		if b := r.Baseline.Median(); b != 0 && len(r.Value) > 0 {
			ratio = fmt.Sprintf("%.2f", r.Value.Median()/b)
		}
	}
	return value, baseline, ratio
}

// printTable writes the rows as an aligned text table.
func printTable(w io.Writer, rows []Row) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "FIGURE\tVALUE median (min–max)\tBASELINE, same run\tRATIO\tNOTE")
	section := ""
	for _, r := range rows {
		if r.Section != section {
			section = r.Section
			fmt.Fprintf(tw, "[%s]\t\t\t\t\n", section)
		}
		v, b, ratio := r.cells()
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Figure, v, b, ratio, r.Note)
	}
	_ = tw.Flush()
}

// markdownTable writes the rows as a Markdown table.
func markdownTable(w io.Writer, rows []Row) {
	fmt.Fprintln(w, "| Figure | Value: median (min–max) | Baseline, same run | Ratio | Note |")
	fmt.Fprintln(w, "|---|---|---|---|---|")
	section := ""
	for _, r := range rows {
		if r.Section != section {
			section = r.Section
			fmt.Fprintf(w, "| **%s** | | | | |\n", section)
		}
		v, b, ratio := r.cells()
		esc := func(s string) string { return strings.ReplaceAll(s, "|", "\\|") }
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s |\n", esc(r.Figure), v, esc(b), ratio, esc(r.Note))
	}
}
