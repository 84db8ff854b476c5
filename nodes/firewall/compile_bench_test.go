package firewall

import "testing"

// BenchmarkCompileChange is the Go side of one rule change at 1000 ports: compile with a
// warm compiler and diff against the previous model.
func BenchmarkCompileChange(b *testing.B) {
	rs := [2]*Ruleset{benchRuleset(1000, 0), benchRuleset(1000, 1)}
	c := newCompiler()
	prev, _ := c.compile(rs[0], nil)
	i := 0
	for b.Loop() {
		i++
		m, _ := c.compile(rs[i%2], prev.marks)
		ops, _ := diff(prev, m)
		if len(ops) != 5 {
			b.Fatalf("%d ops", len(ops))
		}
		prev = m
	}
}
