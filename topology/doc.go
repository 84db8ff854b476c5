// Package topology reads and checks netsource topology files, the YAML or JSON documents
// that `netsource apply -f` publishes (see "Topology file" in DESIGN.md). The file holds up
// to seven lists — networks, security_groups, ports, tap_services, tap_flows, trunks and
// loadbalancers — whose field names follow the Neutron API and the proto names of
// netsourcev1.Topology.
//
// # Decoding
//
// Decode converts YAML to JSON (JSON passes through unchanged), then walks the tree against
// the protobuf descriptors before handing each top-level object to protojson. The walk makes
// decoding strict and exact about where a problem is:
//
//   - an unknown field is an error with its full path, e.g. `ports[2].binding.nets: unknown
//     field (did you mean "netns"?)`; proto (snake_case) names are the contract, JSON
//     camelCase names are tolerated because protojson accepts them;
//   - a duplicate key is an error (YAML strict mode);
//   - a value of the wrong type is an error at its path, e.g. `networks[0].mtu: want an
//     integer, got string "big"`; a number is accepted where a string is expected, so
//     `protocol: 6` and `expected_codes: 200` need no quotes;
//   - null means left out (`session_persistence: null` is no persistence); an empty file or
//     an empty list is fine; the top level must be a mapping.
//
// # Validation
//
// Validate checks a decoded topology as a whole before anything is published: every object
// on its own (values that reach NATS subjects, device names, nftables and haproxy
// configuration) and the references between objects, resolved in the file first and then in
// the objects already in the desired stream. It fills the host of tap services, tap flows and
// trunks that leave it out from the referenced port. The agent re-checks every event it
// receives with the per-object functions (ValidateNetwork, ValidatePort, ...), which need no
// other object.
//
// CheckHost and CheckID guard the two values that become subject tokens: host names
// (1-64 of [A-Za-z0-9_-]) and ids (canonical lower-case UUIDs).
//
// # Errors
//
// Every check collects all problems rather than stopping at the first. Decode (for field
// problems), Validate and the Validate* functions return nil or an *Errors: a list of
// *FieldError, one per problem, ordered as the objects appear in the file. Each prints as one
// line, the path first, the offending value quoted, and the object named when its id is
// valid:
//
//	ports[3].mac_address: "zz:00" is not a MAC address (want six colon-separated hex octets, e.g. fa:16:3e:00:00:01) (port 3d4e5f60-7182-4394-a5b6-c7d8e9f0a101)
//	networks[0].segmentation_id: VNI 16777216 is out of range (want 1-16777215) (network 6a0e4b8e-1c7d-4a55-9b3f-2f1f4c1e0a01)
//
// Use errors.As with a *Errors (or Errors) target to get the list, or with a *FieldError
// target to get the first problem.
package topology
