package firewall

import (
	"fmt"
	"hash/fnv"
	"maps"
	"slices"
	"strings"
)

// Families of netsource's tables, in the order they are written.
const (
	familyBridge = "bridge"
	familyInet   = "inet"
)

var families = []string{familyBridge, familyInet}

// model is the compiled form of a Ruleset: netsource's two tables object by object.
type model struct {
	tables map[string]*table // by family; both are always present
	// marks are the port indexes by device (1..MaxPorts): the low 16 bits of the packet
	// mark say which port a packet came from, the high 16 bits which port it goes to.
	marks map[string]uint32
}

type table struct {
	family string
	chains map[string]*chain
	sets   map[string]*set
}

// hook makes a chain a base chain.
type hook struct {
	name     string // prerouting | forward | input
	priority int32
}

type chain struct {
	name  string
	hook  *hook
	rules []rule
	texts []string // rules as text, for comparison
	sum   uint64   // content hash, computed once the chain is complete
}

func (c *chain) add(stmts ...stmt) {
	r := rule(stmts)
	c.rules = append(c.rules, r)
	c.texts = append(c.texts, r.text())
}

func (c *chain) sameRules(o *chain) bool { return slices.Equal(c.texts, o.texts) }

func (c *chain) sameHook(o *chain) bool {
	if c.hook == nil || o.hook == nil {
		return c.hook == nil && o.hook == nil
	}
	return *c.hook == *o.hook
}

// set is a named set, or with verdict a verdict map.
type set struct {
	name    string
	key     keyType
	verdict bool
	elems   map[string]elem // by key text
}

type elem struct {
	key  []byte
	text string
	// verdict maps: what the key maps to.
	verdict verdict
}

func (e elem) String() string {
	if e.verdict.kind != "" {
		return e.text + " : " + e.verdict.text()
	}
	return e.text
}

// newModel returns empty tables sized for ports and groups.
func newModel(ports, groups int) *model {
	m := &model{tables: map[string]*table{}, marks: make(map[string]uint32, ports)}
	for _, f := range families {
		m.tables[f] = &table{family: f, chains: make(map[string]*chain, 2*ports+2*groups+8), sets: map[string]*set{}}
	}
	return m
}

func (t *table) chain(name string, h *hook) *chain {
	c := t.chains[name]
	if c == nil {
		c = &chain{name: name, hook: h}
		t.chains[name] = c
	}
	return c
}

func (t *table) set(name string, key keyType, verdictMap bool) *set {
	s := t.sets[name]
	if s == nil {
		s = &set{name: name, key: key, verdict: verdictMap, elems: map[string]elem{}}
		t.sets[name] = s
	}
	return s
}

func (s *set) add(e elem) { s.elems[e.text] = e }

// hash identifies the model's content: a sum of FNV-1a hashes of every chain (name, hook,
// rules) and set element, so it does not depend on the order objects were created in. The
// real firewall keeps it in the kernel to recognise, after a restart, tables it wrote.
func (m *model) hash() uint64 {
	var sum uint64
	for _, f := range families {
		t := m.tables[f]
		for _, c := range t.chains {
			sum += c.hash(f)
		}
		for _, s := range t.sets {
			sum += fnv64(f, "set", s.name, s.typeText())
			for _, e := range s.elems {
				sum += fnv64(f, s.name, e.String())
			}
		}
	}
	return sum
}

func (c *chain) hash(family string) uint64 {
	if c.sum == 0 {
		parts := append([]string{family, "chain", c.name}, c.texts...)
		if c.hook != nil {
			parts = append(parts, c.hook.text())
		}
		c.sum = fnv64(parts...)
	}
	return c.sum
}

func fnv64(parts ...string) uint64 {
	h := fnv.New64a()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return h.Sum64()
}

func (s *set) sortedElems() []elem {
	keys := slices.Sorted(maps.Keys(s.elems))
	out := make([]elem, len(keys))
	for i, k := range keys {
		out[i] = s.elems[k]
	}
	return out
}

func (s *set) kind() string {
	if s.verdict {
		return "map"
	}
	return "set"
}

func (s *set) typeText() string {
	if s.verdict {
		return "type " + string(s.key) + " : verdict"
	}
	return "type " + string(s.key)
}

func (h *hook) text() string {
	prio := fmt.Sprint(h.priority)
	return fmt.Sprintf("type filter hook %s priority %s; policy accept;", h.name, prio)
}

// dump prints the model as nft syntax in a canonical order: tables bridge then inet, sets and
// maps by name, then chains by name, rules in order, elements sorted. `nft -f` loads it.
func (m *model) dump() string {
	var b strings.Builder
	for _, f := range families {
		t := m.tables[f]
		fmt.Fprintf(&b, "table %s %s {\n", f, TableName)
		for _, name := range slices.Sorted(maps.Keys(t.sets)) {
			s := t.sets[name]
			fmt.Fprintf(&b, "\t%s %s {\n\t\t%s\n", s.kind(), s.name, s.typeText())
			if len(s.elems) > 0 {
				b.WriteString("\t\telements = {\n")
				for _, e := range s.sortedElems() {
					fmt.Fprintf(&b, "\t\t\t%s,\n", e)
				}
				b.WriteString("\t\t}\n")
			}
			b.WriteString("\t}\n")
		}
		for _, name := range slices.Sorted(maps.Keys(t.chains)) {
			c := t.chains[name]
			fmt.Fprintf(&b, "\tchain %s {\n", c.name)
			if c.hook != nil {
				fmt.Fprintf(&b, "\t\t%s\n", c.hook.text())
			}
			for _, r := range c.texts {
				fmt.Fprintf(&b, "\t\t%s\n", r)
			}
			b.WriteString("\t}\n")
		}
		b.WriteString("}\n")
	}
	return b.String()
}

// opKind is one kind of change in a transaction.
type opKind int

const (
	opAddTable opKind = iota
	opDelTable
	opAddSet
	opDelSet
	opAddChain
	opFlushChain
	opDelChain
	opAddRule
	opAddElems
	opDelElems
)

// op is one change in a transaction.
type op struct {
	kind   opKind
	family string
	chain  *chain // add (definition), flush, delete, add rule (target)
	rule   rule
	set    *set // add (definition), delete, elements (target)
	elems  []elem
}

func (o op) text() string {
	obj := func(kind, name string) string { return fmt.Sprintf("%s %s %s %s", kind, o.family, TableName, name) }
	switch o.kind {
	case opAddTable:
		return fmt.Sprintf("add table %s %s", o.family, TableName)
	case opDelTable:
		return fmt.Sprintf("delete table %s %s", o.family, TableName)
	case opAddSet:
		return fmt.Sprintf("add %s { %s; }", obj(o.set.kind(), o.set.name), o.set.typeText())
	case opDelSet:
		return "delete " + obj(o.set.kind(), o.set.name)
	case opAddChain:
		if o.chain.hook != nil {
			return fmt.Sprintf("add %s { %s }", obj("chain", o.chain.name), o.chain.hook.text())
		}
		return "add " + obj("chain", o.chain.name)
	case opFlushChain:
		return "flush " + obj("chain", o.chain.name)
	case opDelChain:
		return "delete " + obj("chain", o.chain.name)
	case opAddRule:
		return "add " + obj("rule", o.chain.name) + " " + o.rule.text()
	case opAddElems, opDelElems:
		verb := "add"
		if o.kind == opDelElems {
			verb = "delete"
		}
		items := make([]string, len(o.elems))
		for i, e := range o.elems {
			if o.kind == opDelElems {
				items[i] = e.text
			} else {
				items[i] = e.String()
			}
		}
		return fmt.Sprintf("%s %s { %s }", verb, obj("element", o.set.name), strings.Join(items, ", "))
	}
	return "?"
}

// script prints a transaction as an nft script (one command per line).
func script(ops []op) string {
	var b strings.Builder
	for _, o := range ops {
		b.WriteString(o.text())
		b.WriteByte('\n')
	}
	return b.String()
}

// fullOps replaces both tables whole: `add table` (so that the delete finds one), `delete
// table`, then everything. Objects come before what refers to them: sets and chains, set
// elements, rules, then verdict-map elements.
func fullOps(m *model) []op {
	var ops []op
	for _, f := range families {
		ops = append(ops, op{kind: opAddTable, family: f}, op{kind: opDelTable, family: f}, op{kind: opAddTable, family: f})
	}
	empty := newModel(0, 0)
	for _, f := range families {
		ops = append(ops, diffTable(empty.tables[f], m.tables[f])...)
	}
	return ops
}

// diff returns the changes that turn old into new, or ok false when only a full replace
// can (a base chain's definition changed).
func diff(old, new *model) (ops []op, ok bool) {
	for _, f := range families {
		o, n := old.tables[f], new.tables[f]
		for name, nc := range n.chains {
			if oc := o.chains[name]; oc != nil && !oc.sameHook(nc) {
				return nil, false
			}
		}
		for name, ns := range n.sets {
			if os := o.sets[name]; os != nil && (os.key != ns.key || os.verdict != ns.verdict) {
				return nil, false
			}
		}
	}
	for _, f := range families {
		ops = append(ops, diffTable(old.tables[f], new.tables[f])...)
	}
	return ops, true
}

// diffTable orders the changes of one table so that every intermediate reference is valid:
// new sets and chains first, then new set elements, new and changed chains' rules, verdict
// map elements (removals before additions), removed set elements, and last the removed
// chains (flushed first, so that no jump or set reference is left), sets and chains.
// Chains shared with the old model (the compiler reuses unchanged ones) are skipped at
// once; only the changes are sorted.
func diffTable(o, n *table) []op {
	f := n.family
	var ops []op
	var newSets, maps_, sets, newChains, changed, gone, goneSets []string
	for name, s := range n.sets {
		if o.sets[name] == nil {
			newSets = append(newSets, name)
		}
		if s.verdict {
			maps_ = append(maps_, name)
		} else {
			sets = append(sets, name)
		}
	}
	for name, nc := range n.chains {
		oc := o.chains[name]
		switch {
		case oc == nil:
			newChains = append(newChains, name)
			if len(nc.rules) > 0 {
				changed = append(changed, name)
			}
		case oc != nc && !oc.sameRules(nc):
			changed = append(changed, name)
		}
	}
	for name := range o.chains {
		if n.chains[name] == nil {
			gone = append(gone, name)
		}
	}
	for name := range o.sets {
		if n.sets[name] == nil {
			goneSets = append(goneSets, name)
		}
	}
	for _, l := range [][]string{newSets, maps_, sets, newChains, changed, gone, goneSets} {
		slices.Sort(l)
	}
	for _, name := range newSets {
		ops = append(ops, op{kind: opAddSet, family: f, set: n.sets[name]})
	}
	for _, name := range newChains {
		ops = append(ops, op{kind: opAddChain, family: f, chain: n.chains[name]})
	}
	var delElems []op
	for _, name := range sets {
		add, del := diffElems(o.sets[name], n.sets[name])
		if len(add) > 0 {
			ops = append(ops, op{kind: opAddElems, family: f, set: n.sets[name], elems: add})
		}
		if len(del) > 0 {
			delElems = append(delElems, op{kind: opDelElems, family: f, set: n.sets[name], elems: del})
		}
	}
	for _, name := range changed {
		nc := n.chains[name]
		if oc := o.chains[name]; oc != nil && len(oc.rules) > 0 {
			ops = append(ops, op{kind: opFlushChain, family: f, chain: nc})
		}
		for _, r := range nc.rules {
			ops = append(ops, op{kind: opAddRule, family: f, chain: nc, rule: r})
		}
	}
	for _, name := range maps_ {
		add, del := diffElems(o.sets[name], n.sets[name])
		if len(del) > 0 {
			ops = append(ops, op{kind: opDelElems, family: f, set: n.sets[name], elems: del})
		}
		if len(add) > 0 {
			ops = append(ops, op{kind: opAddElems, family: f, set: n.sets[name], elems: add})
		}
	}
	ops = append(ops, delElems...)
	for _, name := range gone {
		if c := o.chains[name]; len(c.rules) > 0 {
			ops = append(ops, op{kind: opFlushChain, family: f, chain: c})
		}
	}
	for _, name := range goneSets {
		ops = append(ops, op{kind: opDelSet, family: f, set: o.sets[name]})
	}
	for _, name := range gone {
		ops = append(ops, op{kind: opDelChain, family: f, chain: o.chains[name]})
	}
	return ops
}

// diffElems returns the elements to add to old (nil: a new set) and to delete from it to
// get new, sorted. An element whose verdict changed is deleted and added again.
func diffElems(old, new *set) (add, del []elem) {
	if old != nil && sameElems(old.elems, new.elems) {
		return nil, nil
	}
	for k, e := range new.elems {
		if old == nil || !hasElem(old, e) {
			add = append(add, e)
			if old != nil {
				if prev, ok := old.elems[k]; ok {
					del = append(del, prev)
				}
			}
		}
	}
	if old != nil {
		for k, e := range old.elems {
			if _, ok := new.elems[k]; !ok {
				del = append(del, e)
			}
		}
	}
	byText := func(a, b elem) int { return strings.Compare(a.text, b.text) }
	slices.SortFunc(add, byText)
	slices.SortFunc(del, byText)
	return add, del
}

// sameElems is true for the very same element map (the compiler reuses unchanged ones).
func sameElems(a, b map[string]elem) bool {
	if len(a) != len(b) {
		return false
	}
	if len(a) == 0 {
		return true
	}
	return fmt.Sprintf("%p", a) == fmt.Sprintf("%p", b)
}

func hasElem(s *set, e elem) bool {
	old, ok := s.elems[e.text]
	return ok && old.verdict == e.verdict
}
