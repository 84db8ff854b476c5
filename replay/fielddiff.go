package replay

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// FieldChange is one field that differs between two versions of an aggregate.
type FieldChange struct {
	// Path names the field as the topology file does: fixed_ips[0].ip_address,
	// details["device"].
	Path string `json:"path"`
	// Old and New are the values, formatted compactly ("192.0.2.11", 1450, true,
	// {subnet_id: "...", ip_address: "..."}); <none> for a missing element or message,
	// <unset> for an optional field left out.
	Old string `json:"old"`
	New string `json:"new"`
}

func (c FieldChange) String() string { return c.Path + ": " + c.Old + " → " + c.New }

// Placeholders for values that are not there.
const (
	noneValue  = "<none>"
	unsetValue = "<unset>"
)

// DiffMessages compares two messages of the same type field by field (in declaration
// order, list elements by index, map entries by key) and returns what changed. A nil a is
// an empty message: every set field of b is a change.
func DiffMessages(a, b proto.Message) []FieldChange {
	if b == nil {
		return nil
	}
	mb := b.ProtoReflect()
	ma := mb.Type().Zero()
	if a != nil {
		ma = a.ProtoReflect()
	}
	if ma.Descriptor().FullName() != mb.Descriptor().FullName() {
		return []FieldChange{{Path: ".", Old: string(ma.Descriptor().FullName()), New: string(mb.Descriptor().FullName())}}
	}
	var out []FieldChange
	diffMessage("", ma, mb, &out)
	return out
}

func join(prefix, name string) string {
	if prefix == "" {
		return name
	}
	return prefix + "." + name
}

func diffMessage(prefix string, a, b protoreflect.Message, out *[]FieldChange) {
	fields := b.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		path := join(prefix, string(fd.Name()))
		switch {
		case fd.IsList():
			diffList(path, fd, a.Get(fd).List(), b.Get(fd).List(), out)
		case fd.IsMap():
			diffMap(path, fd, a.Get(fd).Map(), b.Get(fd).Map(), out)
		case fd.Message() != nil:
			ha, hb := a.Has(fd), b.Has(fd)
			switch {
			case !ha && !hb:
			case !ha:
				*out = append(*out, FieldChange{Path: path, Old: noneValue, New: formatValue(fd, b.Get(fd))})
			case !hb:
				*out = append(*out, FieldChange{Path: path, Old: formatValue(fd, a.Get(fd)), New: noneValue})
			default:
				diffMessage(path, a.Get(fd).Message(), b.Get(fd).Message(), out)
			}
		default:
			diffScalar(path, fd, a, b, out)
		}
	}
}

func diffScalar(path string, fd protoreflect.FieldDescriptor, a, b protoreflect.Message, out *[]FieldChange) {
	if fd.HasPresence() {
		ha, hb := a.Has(fd), b.Has(fd)
		switch {
		case !ha && !hb:
			return
		case !ha:
			*out = append(*out, FieldChange{Path: path, Old: unsetValue, New: formatValue(fd, b.Get(fd))})
			return
		case !hb:
			*out = append(*out, FieldChange{Path: path, Old: formatValue(fd, a.Get(fd)), New: unsetValue})
			return
		}
	}
	va, vb := a.Get(fd), b.Get(fd)
	if !va.Equal(vb) {
		*out = append(*out, FieldChange{Path: path, Old: formatValue(fd, va), New: formatValue(fd, vb)})
	}
}

func diffList(path string, fd protoreflect.FieldDescriptor, a, b protoreflect.List, out *[]FieldChange) {
	for i := range max(a.Len(), b.Len()) {
		p := fmt.Sprintf("%s[%d]", path, i)
		switch {
		case i >= a.Len():
			*out = append(*out, FieldChange{Path: p, Old: noneValue, New: formatValue(fd, b.Get(i))})
		case i >= b.Len():
			*out = append(*out, FieldChange{Path: p, Old: formatValue(fd, a.Get(i)), New: noneValue})
		case fd.Message() != nil:
			diffMessage(p, a.Get(i).Message(), b.Get(i).Message(), out)
		case !a.Get(i).Equal(b.Get(i)):
			*out = append(*out, FieldChange{Path: p, Old: formatValue(fd, a.Get(i)), New: formatValue(fd, b.Get(i))})
		}
	}
}

func diffMap(path string, fd protoreflect.FieldDescriptor, a, b protoreflect.Map, out *[]FieldChange) {
	keys := map[string]protoreflect.MapKey{}
	collect := func(m protoreflect.Map) {
		m.Range(func(k protoreflect.MapKey, _ protoreflect.Value) bool {
			keys[formatScalar(fd.MapKey(), k.Value())] = k
			return true
		})
	}
	collect(a)
	collect(b)
	names := make([]string, 0, len(keys))
	for name := range keys {
		names = append(names, name)
	}
	slices.Sort(names)
	vd := fd.MapValue()
	for _, name := range names {
		k := keys[name]
		p := path + "[" + name + "]"
		ha, hb := a.Has(k), b.Has(k)
		switch {
		case !ha:
			*out = append(*out, FieldChange{Path: p, Old: noneValue, New: formatValue(vd, b.Get(k))})
		case !hb:
			*out = append(*out, FieldChange{Path: p, Old: formatValue(vd, a.Get(k)), New: noneValue})
		case vd.Message() != nil:
			diffMessage(p, a.Get(k).Message(), b.Get(k).Message(), out)
		case !a.Get(k).Equal(b.Get(k)):
			*out = append(*out, FieldChange{Path: p, Old: formatValue(vd, a.Get(k)), New: formatValue(vd, b.Get(k))})
		}
	}
}

// formatValue formats one value of a field (one element, for lists).
func formatValue(fd protoreflect.FieldDescriptor, v protoreflect.Value) string {
	if fd.Message() != nil {
		return formatMessage(v.Message())
	}
	return formatScalar(fd, v)
}

func formatScalar(fd protoreflect.FieldDescriptor, v protoreflect.Value) string {
	switch fd.Kind() {
	case protoreflect.StringKind:
		return strconv.Quote(v.String())
	case protoreflect.BytesKind:
		return fmt.Sprintf("%q", v.Bytes())
	case protoreflect.EnumKind:
		if ev := fd.Enum().Values().ByNumber(v.Enum()); ev != nil {
			return string(ev.Name())
		}
		return strconv.Itoa(int(v.Enum()))
	}
	return fmt.Sprint(v.Interface())
}

// formatMessage prints the set fields of a message on one line: {type: "veth", netns: "vm1"}.
// (prototext is not used: its output is deliberately unstable.)
func formatMessage(m protoreflect.Message) string {
	var parts []string
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if !m.Has(fd) {
			continue
		}
		v := m.Get(fd)
		var s string
		switch {
		case fd.IsList():
			items := make([]string, v.List().Len())
			for j := range items {
				items[j] = formatValue(fd, v.List().Get(j))
			}
			s = "[" + strings.Join(items, ", ") + "]"
		case fd.IsMap():
			var items []string
			v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				items = append(items, formatScalar(fd.MapKey(), k.Value())+": "+formatValue(fd.MapValue(), mv))
				return true
			})
			slices.Sort(items)
			s = "{" + strings.Join(items, ", ") + "}"
		default:
			s = formatValue(fd, v)
		}
		parts = append(parts, string(fd.Name())+": "+s)
	}
	return "{" + strings.Join(parts, ", ") + "}"
}
