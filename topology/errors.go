package topology

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// FieldError is one problem in a topology, at one field.
type FieldError struct {
	// Path of the field, e.g. `ports[3].mac_address`; empty for the file as a whole.
	Path string
	// Kind of the top-level object the field belongs to ("network", "port", ...), when known.
	Kind string
	// ID of that object, when it is a valid UUID.
	ID string
	// Msg says what is wrong, with the offending value quoted.
	Msg string
}

// Error returns `path: message`, followed by ` (kind id)` when the object's id is known.
func (e *FieldError) Error() string {
	var b strings.Builder
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	if e.ID != "" {
		kind := e.Kind
		if kind == "" {
			kind = "id"
		}
		fmt.Fprintf(&b, " (%s %s)", kind, e.ID)
	}
	return b.String()
}

// Errors lists every problem found, in the order of the fields in the topology.
// Decode, Validate and the Validate* functions return it as *Errors; errors.As
// accepts both a *Errors and an Errors target.
type Errors []*FieldError

// Error returns one line per problem.
func (e Errors) Error() string {
	lines := make([]string, len(e))
	for i, fe := range e {
		lines[i] = fe.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap returns the problems, so errors.As finds the first *FieldError.
func (e Errors) Unwrap() []error {
	errs := make([]error, len(e))
	for i, fe := range e {
		errs[i] = fe
	}
	return errs
}

// As lets errors.As fill an Errors or *Errors target whichever form was returned.
func (e Errors) As(target any) bool {
	switch t := target.(type) {
	case *Errors:
		*t = e
		return true
	case **Errors:
		c := e
		*t = &c
		return true
	}
	return false
}

// err returns nil when there is no problem, so callers never see a typed nil.
func (e *Errors) err() error {
	if len(*e) == 0 {
		return nil
	}
	e.sort()
	return e
}

// sort orders the problems by top-level list (in Topology field order) and index,
// keeping the order of discovery within one object.
func (e *Errors) sort() {
	slices.SortStableFunc(*e, func(a, b *FieldError) int {
		ka, ia := topKey(a.Path)
		kb, ib := topKey(b.Path)
		if ka != kb {
			return ka - kb
		}
		return ia - ib
	})
}

// topOrder ranks the top-level lists as Topology declares them.
var topOrder = []string{"networks", "security_groups", "ports", "tap_services", "tap_flows", "trunks", "loadbalancers"}

// topKey returns the rank of a path's top-level list and its index there. Other first
// segments (unknown fields, a per-object prefix such as "port") rank after the lists, and
// the empty path (the file as a whole) first.
func topKey(path string) (rank, index int) {
	if path == "" {
		return -1, 0
	}
	end := strings.IndexAny(path, "[.")
	if end < 0 {
		end = len(path)
	}
	rank = slices.Index(topOrder, path[:end])
	if rank < 0 {
		rank = len(topOrder)
	}
	if path[end:] != "" && path[end] == '[' {
		num, _, _ := strings.Cut(path[end+1:], "]")
		index, _ = strconv.Atoi(num)
	}
	return rank, index
}
