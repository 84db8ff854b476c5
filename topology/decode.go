package topology

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoreflect"
	"sigs.k8s.io/yaml"

	netsourcev1 "github.com/netsource/netsource/proto/netsource/v1"
)

// Decode parses a YAML or JSON topology file strictly: duplicate keys, unknown fields and
// values of the wrong type are errors, each reported with its full path (e.g.
// `ports[2].binding.nets: unknown field`). Field names are the proto (snake_case) names of
// the file contract; the JSON camelCase names are accepted too. null means left out. A
// number is accepted where a string is expected (`protocol: 6`, `expected_codes: 200`).
// An empty file is an empty topology. Syntax errors are returned as they are; problems with
// fields as *Errors.
func Decode(data []byte) (*netsourcev1.Topology, error) {
	js, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return nil, fmt.Errorf("decode topology: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.UseNumber()
	var root any
	if err := dec.Decode(&root); err != nil {
		return nil, fmt.Errorf("decode topology: %w", err)
	}
	t := &netsourcev1.Topology{}
	if root == nil {
		return t, nil
	}
	var errs Errors
	obj, ok := root.(map[string]any)
	if !ok {
		errs = append(errs, &FieldError{Msg: "the top level must be a mapping of lists (networks, ports, ...), got " + describe(root)})
		return nil, errs.err()
	}
	tree := walkMessage(&errs, "", obj, t.ProtoReflect().Descriptor())
	if len(errs) > 0 {
		return nil, errs.err()
	}
	unmarshalLists(&errs, t.ProtoReflect(), tree)
	if len(errs) > 0 {
		return nil, errs.err()
	}
	return t, nil
}

// unmarshalLists fills the top-level lists of t from the checked tree, one object at a time
// so that an error carries the object's path.
func unmarshalLists(errs *Errors, t protoreflect.Message, tree map[string]any) {
	fields := t.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		items, _ := tree[string(fd.Name())].([]any)
		list := t.Mutable(fd).List()
		for j, item := range items {
			path := fmt.Sprintf("%s[%d]", fd.Name(), j)
			b, err := json.Marshal(item)
			elem := list.NewElement()
			if err == nil {
				err = protojson.Unmarshal(b, elem.Message().Interface())
			}
			if err != nil {
				*errs = append(*errs, &FieldError{Path: path, Msg: err.Error()})
				continue
			}
			list.Append(elem)
		}
	}
}

// walkMessage checks a JSON object against a message descriptor and returns it with proto
// field names, nulls dropped and scalars normalised for protojson.
func walkMessage(errs *Errors, path string, obj map[string]any, md protoreflect.MessageDescriptor) map[string]any {
	out := map[string]any{}
	seen := map[protoreflect.FieldNumber]string{}
	for _, key := range sortedKeys(obj, md) {
		p := keyPath(path, key)
		fd := fieldByName(md, key)
		if fd == nil {
			*errs = append(*errs, &FieldError{Path: p, Msg: "unknown field" + suggest(key, md)})
			continue
		}
		if prev, dup := seen[fd.Number()]; dup {
			*errs = append(*errs, &FieldError{Path: p, Msg: fmt.Sprintf("the same field as %s", join(path, prev))})
			continue
		}
		seen[fd.Number()] = key
		if v, ok := walkField(errs, p, obj[key], fd); ok && v != nil {
			out[string(fd.Name())] = v
		}
	}
	return out
}

// keyPath appends a key to a path; a key that is not a plain name (it may hold a newline or
// be huge) is quoted, so every problem stays one short line.
func keyPath(path, key string) string {
	if checkToken("key", key, 64, "_-") == nil {
		return join(path, key)
	}
	return path + "[" + quote(key) + "]"
}

// fieldByName finds a field by proto name or JSON name.
func fieldByName(md protoreflect.MessageDescriptor, key string) protoreflect.FieldDescriptor {
	if fd := md.Fields().ByName(protoreflect.Name(key)); fd != nil {
		return fd
	}
	return md.Fields().ByJSONName(key)
}

// sortedKeys orders keys as the message declares its fields, unknown keys last, so errors
// come out in a stable order.
func sortedKeys(obj map[string]any, md protoreflect.MessageDescriptor) []string {
	rank := func(k string) int {
		fd := fieldByName(md, k)
		switch {
		case fd == nil:
			return math.MaxInt
		case string(fd.Name()) != k:
			return 2*int(fd.Number()) + 1 // the JSON name after the proto name
		}
		return 2 * int(fd.Number())
	}
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int {
		if ra, rb := rank(a), rank(b); ra != rb {
			return ra - rb
		}
		return strings.Compare(a, b)
	})
	return keys
}

// walkField checks the value of one field; null means left out.
func walkField(errs *Errors, path string, v any, fd protoreflect.FieldDescriptor) (any, bool) {
	if v == nil {
		return nil, true
	}
	if fd.IsMap() {
		*errs = append(*errs, &FieldError{Path: path, Msg: "map fields are not supported"})
		return nil, false
	}
	if !fd.IsList() {
		return walkValue(errs, path, v, fd)
	}
	items, ok := v.([]any)
	if !ok {
		*errs = append(*errs, &FieldError{Path: path, Msg: "want a list, got " + describe(v)})
		return nil, false
	}
	out := make([]any, 0, len(items))
	for i, item := range items {
		p := fmt.Sprintf("%s[%d]", path, i)
		if item == nil {
			*errs = append(*errs, &FieldError{Path: p, Msg: "null is not allowed in a list"})
			continue
		}
		if w, ok := walkValue(errs, p, item, fd); ok {
			out = append(out, w)
		}
	}
	return out, true
}

// walkValue checks one value against the kind of fd.
func walkValue(errs *Errors, path string, v any, fd protoreflect.FieldDescriptor) (any, bool) {
	if fd.Message() != nil {
		if obj, ok := v.(map[string]any); ok {
			return walkMessage(errs, path, obj, fd.Message()), true
		}
		*errs = append(*errs, &FieldError{Path: path, Msg: "want a mapping, got " + describe(v)})
		return nil, false
	}
	w, msg := scalar(v, fd.Kind())
	if msg != "" {
		*errs = append(*errs, &FieldError{Path: path, Msg: msg})
		return nil, false
	}
	return w, true
}

// scalar checks and normalises a scalar value; it returns a message when v does not fit.
func scalar(v any, kind protoreflect.Kind) (any, string) {
	num, isNum := v.(json.Number)
	_, isStr := v.(string)
	switch kind {
	case protoreflect.StringKind:
		if isNum {
			return num.String(), ""
		}
		if isStr {
			return v, ""
		}
		if _, isBool := v.(bool); isBool {
			return nil, "want a string, got " + describe(v) + " (quote it: YAML reads yes, no, on, off, y and n as booleans)"
		}
		return nil, "want a string, got " + describe(v)
	case protoreflect.BytesKind:
		if isStr {
			return v, ""
		}
		return nil, "want a base64 string, got " + describe(v)
	case protoreflect.BoolKind:
		if _, ok := v.(bool); ok {
			return v, ""
		}
		return nil, "want true or false, got " + describe(v)
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		if isNum {
			return v, ""
		}
		return nil, "want a number, got " + describe(v)
	case protoreflect.EnumKind:
		if isNum || isStr {
			return v, ""
		}
		return nil, "want an enum name, got " + describe(v)
	}
	if !isNum {
		return nil, "want an integer, got " + describe(v)
	}
	return integer(num.String(), kind)
}

// integer checks that the number s is an integer in the range of kind and returns it in
// plain digits (YAML may have turned 1000 into 1e+03).
func integer(s string, kind protoreflect.Kind) (any, string) {
	lo, hi := intRange(kind)
	outOfRange := fmt.Sprintf("%s is out of range (want %d to %d)", s, lo, hi)
	fromInt := func(i int64) (any, string) {
		if i < lo || i > 0 && uint64(i) > hi {
			return nil, outOfRange
		}
		return json.Number(strconv.FormatInt(i, 10)), ""
	}
	if i, err := strconv.ParseInt(s, 10, 64); err == nil {
		return fromInt(i)
	}
	if u, err := strconv.ParseUint(s, 10, 64); err == nil {
		if u > hi {
			return nil, outOfRange
		}
		return json.Number(strconv.FormatUint(u, 10)), ""
	}
	f, err := strconv.ParseFloat(s, 64)
	switch {
	case err != nil && !errors.Is(err, strconv.ErrRange), f != math.Trunc(f):
		return nil, "want an integer, got number " + s
	case f < math.MinInt64 || f >= math.MaxInt64:
		return nil, outOfRange
	}
	return fromInt(int64(f))
}

// intRange returns the bounds of an integer kind.
func intRange(kind protoreflect.Kind) (lo int64, hi uint64) {
	switch kind {
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return math.MinInt32, math.MaxInt32
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return 0, math.MaxUint32
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return 0, math.MaxUint64
	}
	return math.MinInt64, math.MaxInt64
}

// describe names the JSON type of v (and its value, for scalars) for a message.
func describe(v any) string {
	switch v := v.(type) {
	case nil:
		return "null"
	case string:
		return "string " + quote(v)
	case json.Number:
		return "number " + v.String()
	case bool:
		return "boolean " + strconv.FormatBool(v)
	case []any:
		return "a list"
	case map[string]any:
		return "a mapping"
	}
	return fmt.Sprintf("%T", v)
}

// suggest proposes the field a misspelt key probably meant.
func suggest(key string, md protoreflect.MessageDescriptor) string {
	fields := md.Fields()
	best, bestDist := "", 3
	for i := range fields.Len() {
		name := string(fields.Get(i).Name())
		if d := editDistance(normKey(key), normKey(name)); d < bestDist {
			best, bestDist = name, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

// normKey folds case and separators, so MAC-Address and mac_address compare equal.
func normKey(s string) string {
	return strings.NewReplacer("_", "", "-", "", " ", "").Replace(strings.ToLower(s))
}

// editDistance is the Levenshtein distance between a and b, capped for long keys.
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return math.MaxInt
	}
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}
