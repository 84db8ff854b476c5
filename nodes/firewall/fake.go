package firewall

import (
	"context"
	"fmt"
	"sync"
)

// Fake is a Firewall over a simulated kernel with the real implementation's semantics: the
// same compiler and diff, so the same transactions; a first Apply (and one after Flush,
// Restart or an injected failure) replaces the tables whole. Dump prints the simulated
// kernel; Scripts are the transactions applied, as nft scripts.
type Fake struct {
	// FailOn, if set, is called with each transaction's script before it is applied; an
	// error fails the Apply as a kernel refusal would (nothing of it is applied).
	FailOn func(script string) error

	mu       sync.Mutex
	compiler *compiler
	kernel   *model // nil: no netsource tables
	applied  *model // what this instance last applied; nil: next Apply is full
	scripts  []string
}

var _ Firewall = (*Fake)(nil)

// NewFake returns a Fake with no tables.
func NewFake() *Fake { return &Fake{compiler: newCompiler()} }

// Apply implements Firewall.
func (f *Fake) Apply(_ context.Context, rs *Ruleset) (Change, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	marks := map[string]uint32{}
	if f.applied != nil {
		marks = f.applied.marks
	} else if f.kernel != nil {
		marks = f.kernel.marks // as the real one reads them back from the kernel
	}
	m, problems := f.compiler.compile(rs, marks)
	ch := Change{Problems: problems}
	var ops []op
	ok := false
	if f.applied != nil {
		ops, ok = diff(f.applied, m)
	}
	if !ok {
		ops, ch.Full = fullOps(m), true
	}
	if len(ops) == 0 {
		return ch, nil
	}
	ch.Ops, ch.Script = len(ops), script(ops)
	if f.FailOn != nil {
		if err := f.FailOn(ch.Script); err != nil {
			f.applied = nil
			return ch, fmt.Errorf("apply firewall transaction: %w", err)
		}
	}
	f.kernel, f.applied = m, m
	f.scripts = append(f.scripts, ch.Script)
	return ch, nil
}

// Verify implements Firewall: drift is anything that changed the simulated kernel behind
// this instance's back (Tamper, another instance).
func (f *Fake) Verify(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.applied != nil && f.kernel != f.applied {
		f.applied = nil
		return fmt.Errorf("%w: tables changed outside netsource", ErrDrift)
	}
	return nil
}

// Flush implements Firewall.
func (f *Fake) Flush(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.kernel != nil {
		f.scripts = append(f.scripts, "delete table bridge netsource\ndelete table inet netsource\n")
	}
	f.kernel, f.applied = nil, nil
	return nil
}

// Dump implements Firewall: the simulated kernel's tables, "" when there are none.
func (f *Fake) Dump(context.Context) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.kernel == nil {
		return "", nil
	}
	return f.kernel.dump(), nil
}

// Close implements Firewall.
func (f *Fake) Close() error { return nil }

// Scripts returns the transactions applied so far.
func (f *Fake) Scripts() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.scripts...)
}

// Restart forgets what was applied but keeps the simulated kernel, like a new agent process
// over the same namespace.
func (f *Fake) Restart() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.applied = nil
}

// Tamper simulates an operator deleting netsource's tables by hand.
func (f *Fake) Tamper() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.kernel = nil
}
