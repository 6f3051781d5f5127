package kcl_test

import (
	"errors"
	"testing"
	"time"

	"github.com/shardline/shardline/kcl"
)

func seq(s string, sub int64) kcl.ExtendedSequenceNumber {
	return kcl.ExtendedSequenceNumber{SequenceNumber: s, SubSequenceNumber: sub}
}

func TestCompare(t *testing.T) {
	big1 := "49650000000000000000000000000000000000000000000000000001"
	big2 := "49650000000000000000000000000000000000000000000000000002"
	cases := []struct {
		a, b kcl.ExtendedSequenceNumber
		want int
	}{
		{seq("1", 0), seq("2", 0), -1},
		{seq("10", 0), seq("9", 0), 1}, // numeric, not lexical
		{seq("007", 0), seq("7", 0), 0},
		{seq(big1, 0), seq(big2, 0), -1},
		{seq(big2, 0), seq(big1, 5), 1},
		{seq("5", 1), seq("5", 2), -1},
		{seq("5", 3), seq("5", 3), 0},
		{kcl.TrimHorizon, seq("1", 0), -1},
		{kcl.Latest, seq("1", 0), -1},
		{kcl.AtTimestamp, kcl.TrimHorizon, 0},
		{kcl.ShardEnd, seq(big2, 99), 1},
		{seq("1", 0), kcl.ShardEnd, -1},
		{kcl.ShardEnd, kcl.ShardEnd, 0},
		{kcl.ExtendedSequenceNumber{}, kcl.TrimHorizon, -1},
	}
	for _, c := range cases {
		if got := c.a.Compare(c.b); got != c.want {
			t.Errorf("%v.Compare(%v) = %d, want %d", c.a, c.b, got, c.want)
		}
		if got := c.b.Compare(c.a); got != -c.want {
			t.Errorf("%v.Compare(%v) = %d, want %d (antisymmetry)", c.b, c.a, got, -c.want)
		}
	}
}

func TestValidate(t *testing.T) {
	for _, ok := range []kcl.ExtendedSequenceNumber{seq("123", 0), seq("1", 4), seq("1", -1), kcl.TrimHorizon, kcl.ShardEnd, kcl.Latest, kcl.AtTimestamp} {
		if err := ok.Validate(); err != nil {
			t.Errorf("%v: unexpected error %v", ok, err)
		}
	}
	for _, bad := range []kcl.ExtendedSequenceNumber{seq("", 0), seq("12a", 0), seq("1", -2), seq("-1", 0), seq(kcl.TrimHorizon.SequenceNumber, -1)} {
		if err := bad.Validate(); err == nil {
			t.Errorf("%q/%d: no error", bad.SequenceNumber, bad.SubSequenceNumber)
		}
	}
}

func TestStringAndPosition(t *testing.T) {
	if got := seq("42", 3).String(); got != "42/3" {
		t.Errorf("String = %q", got)
	}
	if got := seq("42", 0).String(); got != "42" {
		t.Errorf("String = %q", got)
	}
	r := kcl.Record{SequenceNumber: "42", SubSequenceNumber: 3}
	if r.Position() != seq("42", 3) {
		t.Errorf("Position = %v", r.Position())
	}
}

func TestInitialPosition(t *testing.T) {
	if err := kcl.StartAtTimestamp(time.Time{}).Validate(); !errors.Is(err, kcl.ErrInvalidConfig) {
		t.Errorf("AT_TIMESTAMP without time: %v", err)
	}
	if (kcl.InitialPosition{}) != kcl.StartAtLatest() || kcl.StartAtLatest().Validate() != nil || kcl.StartAtTrimHorizon().Validate() != nil {
		t.Error("the zero value is not a valid LATEST")
	}
	ts := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	p := kcl.StartAtTimestamp(ts)
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	if p.Sequence() != kcl.AtTimestamp || kcl.StartAtTrimHorizon().Sequence() != kcl.TrimHorizon || kcl.StartAtLatest().Sequence() != kcl.Latest {
		t.Error("Sequence does not map to the sentinels")
	}
	if !p.Timestamp().Equal(ts) || !kcl.StartAtTrimHorizon().Timestamp().IsZero() {
		t.Errorf("Timestamp = %v", p.Timestamp())
	}
	if got := p.String(); got != "AT_TIMESTAMP(2026-01-02T03:04:05Z)" || kcl.StartAtTrimHorizon().String() != "TRIM_HORIZON" {
		t.Errorf("String = %q", got)
	}
}

func TestErrors(t *testing.T) {
	var pe *kcl.ProcessorPanicError
	if !errors.As(error(&kcl.ProcessorPanicError{Value: "boom"}), &pe) || pe.Error() != "shardline: processor panicked: boom" {
		t.Error("ProcessorPanicError")
	}
}

func FuzzCompare(f *testing.F) {
	f.Add("1", int64(0), "2", int64(0))
	f.Add("0010", int64(1), "10", int64(0))
	f.Fuzz(func(t *testing.T, a string, as int64, b string, bs int64) {
		x, y := seq(a, as), seq(b, bs)
		if x.Validate() != nil || y.Validate() != nil {
			return
		}
		if x.Compare(y) != -y.Compare(x) {
			t.Fatalf("antisymmetry broken for %v %v", x, y)
		}
		if x.Compare(x) != 0 {
			t.Fatalf("reflexivity broken for %v", x)
		}
	})
}

func TestBefore(t *testing.T) {
	cases := []struct{ in, want kcl.ExtendedSequenceNumber }{
		{seq("42", 0), seq("42", -1)},
		{seq("42", 3), seq("42", 2)},
		{seq("42", -1), seq("42", -1)},
		{kcl.TrimHorizon, kcl.TrimHorizon},
		{kcl.ShardEnd, kcl.ShardEnd},
		{kcl.ExtendedSequenceNumber{}, kcl.ExtendedSequenceNumber{}},
	}
	for _, c := range cases {
		if got := c.in.Before(); got != c.want {
			t.Errorf("%v.Before() = %v, want %v", c.in, got, c.want)
		}
	}
	// (S, -1) sorts after every record of an earlier sequence number and
	// before S itself, so a reader filtering "at or before the checkpoint"
	// delivers S.
	b := seq("42", 0).Before()
	if b.Compare(seq("41", 99)) <= 0 || b.Compare(seq("42", 0)) >= 0 {
		t.Errorf("%v is not between 41/99 and 42", b)
	}
}
