package ovs

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// What netsource reads from the Open_vSwitch database, in one ovs-vsctl call:
//
//	ovs-vsctl -f json --columns=... list Bridge -- --columns=... list Port -- ... list Interface
//
// prints one JSON document per command: {"headings": [...], "data": [[...], ...]}, where a
// map is ["map", [[k, v], ...]], a set ["set", [...]] (an empty optional value is
// ["set", []]) and a UUID ["uuid", "..."].

// dbSnapshot is the part of the database the OVS dataplane works with.
type dbSnapshot struct {
	Bridges    map[string]*dbBridge    // by name
	Ports      map[string]*dbPort      // by name
	Interfaces map[string]*dbInterface // by name
}

type dbBridge struct {
	Name         string
	Ports        []string // port names
	ExternalIDs  map[string]string
	DatapathType string
	FailMode     string
}

type dbPort struct {
	UUID   string
	Name   string
	Tag    int // 0: none
	Bridge string
}

type dbInterface struct {
	Name        string
	Type        string
	OFPort      int // -1: not opened (device missing), 0: not assigned yet
	Options     map[string]string
	ExternalIDs map[string]string
}

// snapshotArgs are the ovs-vsctl arguments whose output parseSnapshot reads.
var snapshotArgs = []string{
	"-f", "json",
	"--", "--columns=name,ports,external_ids,datapath_type,fail_mode", "list", "Bridge",
	"--", "--columns=_uuid,name,tag", "list", "Port",
	"--", "--columns=name,type,ofport,options,external_ids", "list", "Interface",
}

type table struct {
	Headings []string            `json:"headings"`
	Data     [][]json.RawMessage `json:"data"`
}

func parseSnapshot(out string) (*dbSnapshot, error) {
	dec := json.NewDecoder(bytes.NewReader([]byte(out)))
	var tables []table
	for {
		var t table
		if err := dec.Decode(&t); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, fmt.Errorf("ovs-vsctl json: %w", err)
		}
		tables = append(tables, t)
	}
	if len(tables) != 3 {
		return nil, fmt.Errorf("ovs-vsctl json: %d tables, want Bridge, Port and Interface", len(tables))
	}
	s := &dbSnapshot{Bridges: map[string]*dbBridge{}, Ports: map[string]*dbPort{}, Interfaces: map[string]*dbInterface{}}
	portByUUID := map[string]*dbPort{}
	if err := eachRow(tables[1], func(r row) error {
		p := &dbPort{UUID: r.uuid("_uuid"), Name: r.str("name"), Tag: r.int("tag")}
		s.Ports[p.Name] = p
		portByUUID[p.UUID] = p
		return nil
	}); err != nil {
		return nil, err
	}
	if err := eachRow(tables[0], func(r row) error {
		b := &dbBridge{Name: r.str("name"), ExternalIDs: r.strMap("external_ids"), DatapathType: r.str("datapath_type"),
			FailMode: r.str("fail_mode")}
		for _, u := range r.uuids("ports") {
			if p := portByUUID[u]; p != nil {
				b.Ports = append(b.Ports, p.Name)
				p.Bridge = b.Name
			}
		}
		s.Bridges[b.Name] = b
		return nil
	}); err != nil {
		return nil, err
	}
	if err := eachRow(tables[2], func(r row) error {
		i := &dbInterface{Name: r.str("name"), Type: r.str("type"), OFPort: r.int("ofport"),
			Options: r.strMap("options"), ExternalIDs: r.strMap("external_ids")}
		s.Interfaces[i.Name] = i
		return nil
	}); err != nil {
		return nil, err
	}
	return s, nil
}

type row map[string]json.RawMessage

func eachRow(t table, fn func(row) error) error {
	for _, d := range t.Data {
		if len(d) != len(t.Headings) {
			return fmt.Errorf("ovs-vsctl json: row of %d columns under %d headings", len(d), len(t.Headings))
		}
		r := row{}
		for i, h := range t.Headings {
			r[h] = d[i]
		}
		if err := fn(r); err != nil {
			return err
		}
	}
	return nil
}

func (r row) str(col string) string {
	var s string
	if json.Unmarshal(r[col], &s) == nil {
		return s
	}
	return "" // an empty optional value (["set", []])
}

func (r row) int(col string) int {
	var n json.Number
	if json.Unmarshal(r[col], &n) == nil {
		v, _ := strconv.Atoi(n.String())
		return v
	}
	return 0
}

// tagged decodes ["<tag>", value].
func tagged(raw json.RawMessage) (string, json.RawMessage) {
	var pair []json.RawMessage
	if json.Unmarshal(raw, &pair) != nil || len(pair) != 2 {
		return "", nil
	}
	var tag string
	_ = json.Unmarshal(pair[0], &tag)
	return tag, pair[1]
}

func (r row) uuid(col string) string {
	if tag, v := tagged(r[col]); tag == "uuid" {
		var s string
		_ = json.Unmarshal(v, &s)
		return s
	}
	return ""
}

// uuids reads a set of UUIDs (a single UUID is printed without the set).
func (r row) uuids(col string) []string {
	tag, v := tagged(r[col])
	switch tag {
	case "uuid":
		var s string
		_ = json.Unmarshal(v, &s)
		return []string{s}
	case "set":
		var items []json.RawMessage
		_ = json.Unmarshal(v, &items)
		var out []string
		for _, it := range items {
			if t, u := tagged(it); t == "uuid" {
				var s string
				_ = json.Unmarshal(u, &s)
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

func (r row) strMap(col string) map[string]string {
	out := map[string]string{}
	tag, v := tagged(r[col])
	if tag != "map" {
		return out
	}
	var pairs [][]string
	_ = json.Unmarshal(v, &pairs)
	for _, p := range pairs {
		if len(p) == 2 {
			out[p[0]] = p[1]
		}
	}
	return out
}

// portOf returns the interface of a port name when it is attached to bridge.
func (s *dbSnapshot) portOn(bridge, name string) (*dbPort, *dbInterface) {
	p := s.Ports[name]
	if p == nil || p.Bridge != bridge {
		return nil, nil
	}
	return p, s.Interfaces[name]
}

// ofport returns the OpenFlow port number of an interface on bridge, or 0 when it has none
// (missing, on another bridge, or not opened).
func (s *dbSnapshot) ofport(bridge, name string) int {
	_, i := s.portOn(bridge, name)
	if i == nil || i.OFPort <= 0 {
		return 0
	}
	return i.OFPort
}
