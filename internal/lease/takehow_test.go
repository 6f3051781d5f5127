package lease

import "testing"

func TestTakeHow(t *testing.T) {
	for _, c := range []struct {
		l    Lease
		want string
	}{
		{Lease{Key: "new"}, "take"},
		{Lease{Key: "expired", Owner: "w1", Counter: 7}, "take"},
		{Lease{Key: "released", Counter: 7}, "take-released"},
	} {
		if got := takeHow(c.l); got != c.want {
			t.Errorf("%s: %q, want %q", c.l.Key, got, c.want)
		}
	}
}
