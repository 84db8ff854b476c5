package topology

import (
	"fmt"
	"net/netip"
	"strconv"

	"google.golang.org/protobuf/proto"
)

// scope reports problems of one object (or a part of it) under a path.
type scope struct {
	root string // path of the top-level object, e.g. "ports[3]"
	errs *Errors
	path string
	kind string
	id   string
}

// newScope starts reporting for the object kind with the given id at path.
func newScope(errs *Errors, path, kind, id string) scope {
	if CheckID(id) != nil {
		id = "" // never print a malformed id: it may hold a newline
	}
	return scope{root: path, errs: errs, path: path, kind: kind, id: id}
}

// join appends a field name to a path.
func join(path, field string) string {
	switch {
	case field == "":
		return path
	case path == "":
		return field
	}
	return path + "." + field
}

// at descends into a field.
func (s scope) at(field string) scope {
	s.path = join(s.path, field)
	return s
}

// item descends into element i of a list field.
func (s scope) item(field string, i int) scope {
	s.path = fmt.Sprintf("%s[%d]", join(s.path, field), i)
	return s
}

// errorf reports a problem at field (empty: at the scope itself).
func (s scope) errorf(field, format string, args ...any) {
	*s.errs = append(*s.errs, &FieldError{
		Path: join(s.path, field),
		Kind: s.kind,
		ID:   s.id,
		Msg:  fmt.Sprintf(format, args...),
	})
}

// check reports err, if any, at field.
func (s scope) check(field string, err error) bool {
	if err != nil {
		s.errorf(field, "%s", err.Error())
	}
	return err == nil
}

// quote quotes a user value for a message, shortened so one huge value cannot flood the output.
func quote(v string) string {
	const max = 80
	if len(v) > max {
		return strconv.Quote(v[:max]) + "..."
	}
	return strconv.Quote(v)
}

// object is what every top-level kind has in common.
type object interface {
	proto.Message
	GetId() string
}

// validateOne runs a per-object check and returns nil or *Errors.
func validateOne[T object](path, kind string, obj T, check func(scope, T)) error {
	var errs Errors
	s := newScope(&errs, path, kind, obj.GetId())
	if s.present(obj) {
		check(s, obj)
	}
	return errs.err()
}

// present reports a nil object.
func (s scope) present(obj proto.Message) bool {
	if !obj.ProtoReflect().IsValid() {
		s.errorf("", "missing %s", s.kind)
		return false
	}
	return true
}

// meta checks the id and name that every object has.
func (s scope) meta(id, name string) {
	s.requireID("id", id)
	s.check("name", checkName(name))
}

// requireID checks a mandatory UUID.
func (s scope) requireID(field, v string) bool {
	if v == "" {
		s.errorf(field, "required (a UUID)")
		return false
	}
	return s.check(field, CheckID(v))
}

// optionalID checks a UUID that may be left out.
func (s scope) optionalID(field, v string) {
	if v != "" {
		s.check(field, CheckID(v))
	}
}

// requireHost checks a mandatory host name.
func (s scope) requireHost(field, v string) {
	if v == "" {
		s.errorf(field, "required (the agent's host name)")
		return
	}
	s.check(field, CheckHost(v))
}

// requireIP checks a mandatory IP address and returns it.
func (s scope) requireIP(field, v string) (netip.Addr, bool) {
	if v == "" {
		s.errorf(field, "required (an IP address)")
		return netip.Addr{}, false
	}
	a, err := parseIP(v)
	return a, s.check(field, err)
}

// firstSeen remembers where each key was first seen and reports later duplicates.
type firstSeen map[string]string

// add records key for the object at s; desc, when set, names the value in the message.
func (f firstSeen) add(s scope, field, key, desc string) {
	if key == "" {
		return
	}
	prev, dup := f[key]
	switch {
	case !dup:
		f[key] = s.path
	case desc == "":
		s.errorf(field, "duplicate of %s", prev)
	default:
		s.errorf(field, "%s is already used by %s", desc, prev)
	}
}

// withHost adds the host check to the check of a kind whose host Validate derives from a
// port (Validate checks the host itself, so that it can say why it could not derive one).
func withHost[T interface {
	object
	GetHost() string
}](check func(scope, T)) func(scope, T) {
	return func(s scope, o T) {
		check(s, o)
		s.requireHost("host", o.GetHost())
	}
}
