package firewall

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"os/exec"
	"slices"
	"strings"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Netlink is the Firewall of a network namespace, through nftables netlink messages
// (github.com/google/nftables): a transaction is one netlink batch, which the kernel commits
// atomically or not at all. The socket is opened in the namespace (WithNetNSFd), so no
// thread ever switches namespace for it.
type Netlink struct {
	netns string
	ns    netns.NsHandle // -1 for the agent's own namespace

	mu       sync.Mutex
	compiler *compiler
	applied  *model // nil: the next Apply replaces the tables whole
	// stateValid: the kernel's netsource-state element holds applied's hash. Incremental
	// transactions empty the set once (deleting an element costs an RCU grace period, so
	// not in every transaction); Verify (every resync) and Close write it again.
	stateValid bool
}

var _ Firewall = (*Netlink)(nil)

// batchBuffer is the socket buffer for a transaction: the kernel takes a batch in one
// sendmsg, and the acknowledgements of a large one must fit too. 1000 ports with five rules
// each make a batch of about 3 MB; nft sizes its buffer the same way.
const batchBuffer = 256 << 20

// New opens the firewall of the named network namespace ("" for the agent's own) and makes
// sure br_netfilter hands bridged IPv4 and IPv6 traffic to the inet table there
// (net.bridge.bridge-nf-call-iptables and -ip6tables, which are per namespace). It returns
// an error when the kernel lacks br_netfilter or nftables.
func New(netnsName string) (*Netlink, error) {
	n := &Netlink{netns: netnsName, ns: -1, compiler: newCompiler()}
	if netnsName != "" {
		h, err := netns.GetFromName(netnsName)
		if err != nil {
			return nil, fmt.Errorf("open network namespace %q: %w", netnsName, err)
		}
		n.ns = h
	}
	if _, err := EnsureBridgeNetfilter(netnsName); err != nil {
		n.Close()
		return nil, err
	}
	c, err := n.conn()
	if err != nil {
		n.Close()
		return nil, err
	}
	if _, err := c.ListTablesOfFamily(nftables.TableFamilyINet); err != nil {
		n.Close()
		return nil, fmt.Errorf("nftables in network namespace %q: %w", netnsName, err)
	}
	return n, nil
}

// Close implements Firewall. The tables stay: the firewall keeps filtering while the agent
// is down or restarting; their hash is saved so that the next agent recognises them.
func (n *Netlink) Close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	serr := n.saveState()
	if n.ns >= 0 {
		err := n.ns.Close()
		n.ns = -1
		return errors.Join(serr, err)
	}
	return serr
}

func (n *Netlink) conn() (*nftables.Conn, error) {
	opts := []nftables.ConnOption{nftables.WithSockOptions(func(c *netlink.Conn) error {
		rc, err := c.SyscallConn()
		if err != nil {
			return err
		}
		var serr error
		err = rc.Control(func(fd uintptr) {
			// FORCE variants exceed net.core.[rw]mem_max (the agent runs as root).
			if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, batchBuffer); serr == nil {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, batchBuffer)
			}
		})
		return errors.Join(err, serr)
	})}
	if n.ns >= 0 {
		opts = append(opts, nftables.WithNetNSFd(int(n.ns)))
	}
	return nftables.New(opts...)
}

// Apply implements Firewall.
func (n *Netlink) Apply(ctx context.Context, rs *Ruleset) (Change, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return Change{}, err
	}
	c, err := n.conn()
	if err != nil {
		return Change{}, err
	}
	marks := map[string]uint32{}
	if n.applied != nil {
		marks = n.applied.marks
	} else if marks, err = readMarks(c); err != nil {
		return Change{}, fmt.Errorf("read port marks from the kernel: %w", err)
	}
	m, problems := n.compiler.compile(rs, marks)
	ch := Change{Problems: problems}
	if n.applied == nil {
		// A restarted agent finds the tables it wrote: same content hash, same structure.
		// Then it changes nothing, not even the order nft lists the chains in.
		if kernelSum, err := readState(c); err == nil && kernelSum == m.hash() && verify(c, m) == nil {
			n.applied, n.stateValid = m, true
			return ch, nil
		}
	}
	var ops []op
	ok := false
	if n.applied != nil {
		ops, ok = diff(n.applied, m)
	}
	if !ok {
		ops, ch.Full = fullOps(m), true
	}
	if len(ops) == 0 {
		return ch, nil
	}
	ch.Ops, ch.Script = len(ops), script(ops)
	b := newBatchBuilder()
	if err := encode(b.Conn, ops); err != nil {
		n.applied = nil
		return ch, fmt.Errorf("encode firewall transaction: %w", err)
	}
	switch {
	case ch.Full:
		if err := writeState(b.Conn, m.hash(), true); err != nil {
			n.applied = nil
			return ch, fmt.Errorf("encode firewall state: %w", err)
		}
	case n.stateValid:
		clearState(b.Conn)
	}
	if err := n.send(b); err != nil {
		n.applied = nil
		return ch, fmt.Errorf("apply firewall transaction (%d operations) in netns %q: %w", len(ops), n.netns, err)
	}
	n.applied, n.stateValid = m, ch.Full
	return ch, nil
}

// saveState writes the applied tables' hash into the kernel if it is not there.
func (n *Netlink) saveState() error {
	if n.applied == nil || n.stateValid {
		return nil
	}
	b := newBatchBuilder()
	if err := writeState(b.Conn, n.applied.hash(), false); err != nil {
		return err
	}
	if err := n.send(b); err != nil {
		return fmt.Errorf("write firewall state in netns %q: %w", n.netns, err)
	}
	n.stateValid = true
	return nil
}

// Flush implements Firewall: `add table` then `delete table` of both, in one batch, so a
// missing table is no error and nothing else is touched.
func (n *Netlink) Flush(ctx context.Context) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	c, err := n.conn()
	if err != nil {
		return err
	}
	for _, f := range families {
		t := nfTable(f)
		c.AddTable(t)
		c.DelTable(t)
	}
	n.applied, n.stateValid = nil, false
	if err := c.Flush(); err != nil {
		return fmt.Errorf("delete netsource tables in netns %q: %w", n.netns, err)
	}
	return nil
}

// Verify implements Firewall. It compares chain and set names, set and map elements and the
// rules of the base chains (a `nft flush table` empties them) with the last Apply, and the
// br_netfilter sysctls, which it turns back on.
func (n *Netlink) Verify(ctx context.Context) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	changed, err := EnsureBridgeNetfilter(n.netns)
	if err != nil {
		return err
	}
	if len(changed) > 0 {
		return fmt.Errorf("%w: %s was off; turned on", ErrDrift, strings.Join(changed, ", "))
	}
	if n.applied == nil {
		return nil
	}
	c, err := n.conn()
	if err != nil {
		return err
	}
	if err := verify(c, n.applied); err != nil {
		n.applied = nil
		return fmt.Errorf("%w: %v", ErrDrift, err)
	}
	if n.stateValid {
		if sum, err := readState(c); err != nil || sum != n.applied.hash() {
			n.applied = nil
			return fmt.Errorf("%w: the tables were rewritten by someone else (state %x: %v)", ErrDrift, sum, err)
		}
		return nil
	}
	return n.saveState()
}

func verify(c *nftables.Conn, m *model) error {
	for _, f := range families {
		want := m.tables[f]
		t := nfTable(f)
		chains, err := c.ListChainsOfTableFamily(t.Family)
		if err != nil {
			return fmt.Errorf("list %s chains: %w", f, err)
		}
		var got []string
		for _, ch := range chains {
			if ch.Table.Name == TableName {
				got = append(got, ch.Name)
			}
		}
		slices.Sort(got)
		if wantNames := slices.Sorted(maps.Keys(want.chains)); !slices.Equal(got, wantNames) {
			return fmt.Errorf("table %s %s has chains %d, want %d", f, TableName, len(got), len(wantNames))
		}
		for _, name := range slices.Sorted(maps.Keys(want.chains)) {
			wc := want.chains[name]
			if wc.hook == nil {
				continue
			}
			rules, err := c.GetRules(t, &nftables.Chain{Name: name, Table: t})
			if err != nil {
				return fmt.Errorf("list rules of %s: %w", name, err)
			}
			if len(rules) != len(wc.rules) {
				return fmt.Errorf("chain %s has %d rules, want %d", name, len(rules), len(wc.rules))
			}
		}
		for _, name := range slices.Sorted(maps.Keys(want.sets)) {
			s, err := c.GetSetByName(t, name)
			if err != nil {
				return fmt.Errorf("set %s: %w", name, err)
			}
			elems, err := c.GetSetElements(s)
			if err != nil {
				return fmt.Errorf("elements of %s: %w", name, err)
			}
			if len(elems) != len(want.sets[name].elems) {
				return fmt.Errorf("set %s has %d elements, want %d", name, len(elems), len(want.sets[name].elems))
			}
		}
	}
	return nil
}

// Dump implements Firewall with `nft list table` of both tables, run in the namespace.
func (n *Netlink) Dump(ctx context.Context) (string, error) {
	var out bytes.Buffer
	for _, f := range families {
		args := []string{"nft", "list", "table", f, TableName}
		if n.netns != "" {
			args = append([]string{"ip", "netns", "exec", n.netns}, args...)
		}
		cmd := exec.CommandContext(ctx, args[0], args[1:]...)
		var stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &stderr
		if err := cmd.Run(); err != nil {
			if strings.Contains(stderr.String(), "No such file or directory") {
				continue
			}
			return "", fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
		}
	}
	return out.String(), nil
}

// stateSet holds one element whose comment is the content hash of the tables netsource
// last applied (model.hash), or none while it is being changed (see Netlink.stateValid).
// Set elements, unlike a rule, cost the kernel no validation of the table's chains.
const stateSet = "netsource-state"

const statePrefix = "netsource tables "

func writeState(c *nftables.Conn, sum uint64, full bool) error {
	s := &nftables.Set{Table: nfTable(familyInet), Name: stateSet, KeyType: nftables.TypeMark, KeyByteOrder: binaryutil.NativeEndian, ID: 1 << 30}
	el := []nftables.SetElement{{Key: native32(0), Comment: fmt.Sprintf("%s%016x", statePrefix, sum)}}
	if full {
		return c.AddSet(s, el)
	}
	return c.SetAddElements(s, el)
}

func clearState(c *nftables.Conn) {
	c.FlushSet(&nftables.Set{Table: nfTable(familyInet), Name: stateSet, KeyType: nftables.TypeMark})
}

func readState(c *nftables.Conn) (uint64, error) {
	s, err := c.GetSetByName(nfTable(familyInet), stateSet)
	if err != nil {
		return 0, err
	}
	elems, err := c.GetSetElements(s)
	if err != nil {
		return 0, err
	}
	if len(elems) != 1 || !strings.HasPrefix(elems[0].Comment, statePrefix) {
		return 0, fmt.Errorf("set %s has no state element", stateSet)
	}
	var sum uint64
	_, err = fmt.Sscanf(strings.TrimPrefix(elems[0].Comment, statePrefix), "%x", &sum)
	return sum, err
}

// readMarks recovers the port indexes from the kernel's egress-ports map, so that a
// restarted agent writes the same marks (and thus the same tables) as before.
func readMarks(c *nftables.Conn) (map[string]uint32, error) {
	marks := map[string]uint32{}
	t := nfTable(familyInet)
	s, err := c.GetSetByName(t, mapEgressPorts)
	if err != nil {
		if errors.Is(err, unix.ENOENT) || strings.Contains(err.Error(), "no such file") {
			return marks, nil
		}
		return nil, err
	}
	elems, err := c.GetSetElements(s)
	if err != nil {
		return nil, err
	}
	for _, e := range elems {
		if len(e.Key) != 4 {
			continue
		}
		if dev, ok := strings.CutPrefix(verdictChain(e), "egress-"); ok {
			marks[dev] = binary.NativeEndian.Uint32(e.Key)
		}
	}
	return marks, nil
}

// verdictChain is the chain a verdict map element jumps to. google/nftables leaves the
// verdict undecoded in Val: NFTA_VERDICT_CODE (1) and NFTA_VERDICT_CHAIN (2) attributes.
func verdictChain(e nftables.SetElement) string {
	if e.VerdictData != nil {
		return e.VerdictData.Chain
	}
	ad, err := netlink.NewAttributeDecoder(e.Val)
	if err != nil {
		return ""
	}
	for ad.Next() {
		if ad.Type() == unix.NFTA_VERDICT_CHAIN {
			return ad.String()
		}
	}
	return ""
}

func nfTable(family string) *nftables.Table {
	f := nftables.TableFamilyINet
	if family == familyBridge {
		f = nftables.TableFamilyBridge
	}
	return &nftables.Table{Name: TableName, Family: f}
}

// encoder turns ops into nftables messages on a Conn.
type encoder struct {
	c      *nftables.Conn
	tables map[string]*nftables.Table
	sets   map[string]*nftables.Set // named sets created in this batch, by family/name
	nextID uint32
}

func encode(c *nftables.Conn, ops []op) error {
	e := &encoder{c: c, tables: map[string]*nftables.Table{}, sets: map[string]*nftables.Set{}}
	for _, f := range families {
		e.tables[f] = nfTable(f)
	}
	for _, o := range ops {
		if err := e.op(o); err != nil {
			return fmt.Errorf("%s: %w", o.text(), err)
		}
	}
	return nil
}

func (e *encoder) id() uint32 {
	e.nextID++
	return e.nextID
}

func (e *encoder) op(o op) error {
	t := e.tables[o.family]
	switch o.kind {
	case opAddTable:
		e.c.AddTable(t)
	case opDelTable:
		e.c.DelTable(t)
	case opAddSet:
		s := e.namedSet(o.family, o.set)
		s.ID = e.id()
		e.sets[o.family+"/"+o.set.name] = s
		return e.c.AddSet(s, nil)
	case opDelSet:
		e.c.DelSet(e.namedSet(o.family, o.set))
	case opAddChain:
		ch := &nftables.Chain{Name: o.chain.name, Table: t}
		if h := o.chain.hook; h != nil {
			policy := nftables.ChainPolicyAccept
			prio := nftables.ChainPriority(h.priority)
			ch.Type, ch.Policy, ch.Priority = nftables.ChainTypeFilter, &policy, &prio
			switch h.name {
			case "prerouting":
				ch.Hooknum = nftables.ChainHookPrerouting
			case "forward":
				ch.Hooknum = nftables.ChainHookForward
			case "input":
				ch.Hooknum = nftables.ChainHookInput
			default:
				return fmt.Errorf("unknown hook %q", h.name)
			}
		}
		e.c.AddChain(ch)
	case opFlushChain:
		e.c.FlushChain(&nftables.Chain{Name: o.chain.name, Table: t})
	case opDelChain:
		e.c.DelChain(&nftables.Chain{Name: o.chain.name, Table: t})
	case opAddRule:
		exprs, err := e.rule(t, o.rule)
		if err != nil {
			return err
		}
		e.c.AddRule(&nftables.Rule{Table: t, Chain: &nftables.Chain{Name: o.chain.name, Table: t}, Exprs: exprs})
	case opAddElems, opDelElems:
		s := e.sets[o.family+"/"+o.set.name]
		if s == nil {
			s = e.namedSet(o.family, o.set)
		}
		elems := make([]nftables.SetElement, len(o.elems))
		for i, el := range o.elems {
			elems[i] = nftables.SetElement{Key: el.key}
			if o.set.verdict {
				v, err := nfVerdict(el.verdict)
				if err != nil {
					return err
				}
				elems[i].VerdictData = v
			}
		}
		if o.kind == opAddElems {
			return e.c.SetAddElements(s, elems)
		}
		return e.c.SetDeleteElements(s, elems)
	default:
		return fmt.Errorf("unknown operation %d", o.kind)
	}
	return nil
}

var nfKeyTypes = map[keyType]nftables.SetDatatype{
	keyEther: nftables.TypeEtherAddr, keyIPv4: nftables.TypeIPAddr, keyIPv6: nftables.TypeIP6Addr,
	keyService: nftables.TypeInetService, keyICMP: nftables.TypeICMPType, keyICMPv6: nftables.TypeICMP6Type,
	keyICMPCd: nftables.TypeICMPCode, keyICMP6Cd: nftables.TypeICMPV6Code, keyIfname: nftables.TypeIFName, keyMark: nftables.TypeMark,
}

// hostOrder are the key types nft stores in host byte order.
var hostOrder = map[keyType]bool{keyMark: true, keyIfname: true}

func (e *encoder) namedSet(family string, s *set) *nftables.Set {
	out := &nftables.Set{Table: e.tables[family], Name: s.name, KeyType: nfKeyTypes[s.key], KeyByteOrder: binaryutil.BigEndian}
	if hostOrder[s.key] {
		out.KeyByteOrder = binaryutil.NativeEndian
	}
	if s.verdict {
		out.IsMap, out.DataType = true, nftables.TypeVerdict
	}
	return out
}

func nfVerdict(v verdict) (*expr.Verdict, error) {
	switch v.kind {
	case "accept":
		return &expr.Verdict{Kind: expr.VerdictAccept}, nil
	case "drop":
		return &expr.Verdict{Kind: expr.VerdictDrop}, nil
	case "return":
		return &expr.Verdict{Kind: expr.VerdictReturn}, nil
	case "jump":
		return &expr.Verdict{Kind: expr.VerdictJump, Chain: v.chain}, nil
	}
	return nil, fmt.Errorf("unknown verdict %q", v.kind)
}

// ruleCtx tracks the protocols a rule has established so far, so that dependencies are
// added once and where nft adds them.
type ruleCtx struct {
	l3 l3
	l4 uint8
}

var etherTypes = map[l3]uint16{l3ARP: 0x0806, l3IPv4: 0x0800, l3IPv6: 0x86dd}

func native32(v uint32) []byte { return binaryutil.NativeEndian.PutUint32(v) }

// rule encodes one rule as nft would compile its text: the protocol dependencies nft adds
// implicitly (meta nfproto in inet; meta protocol or ether type in bridge; meta l4proto)
// come before the first field that needs them.
func (e *encoder) rule(t *nftables.Table, r rule) ([]expr.Any, error) {
	var out []expr.Any
	var ctx ruleCtx
	bridge := t.Family == nftables.TableFamilyBridge
	for _, s := range r {
		switch s := s.(type) {
		case metaMatch:
			out = append(out, &expr.Meta{Key: nfMetaKey(s.key), Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: s.val})
			switch s.key {
			case metaNFProto:
				ctx.l3 = map[byte]l3{2: l3IPv4, 10: l3IPv6}[s.val[0]]
			case metaProtocol:
				ctx.l3 = map[uint16]l3{0x0800: l3IPv4, 0x86dd: l3IPv6, 0x0806: l3ARP}[binary.BigEndian.Uint16(s.val)]
			case metaL4Proto:
				ctx.l4 = s.val[0]
			}
		case match:
			f := s.f
			if f.l3 != l3None && ctx.l3 != f.l3 {
				ethertype := binary.BigEndian.AppendUint16(nil, etherTypes[f.l3])
				switch {
				case !bridge:
					out = append(out, &expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
						&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{map[l3]byte{l3IPv4: unix.NFPROTO_IPV4, l3IPv6: unix.NFPROTO_IPV6}[f.l3]}})
				case f.base == baseNetwork && f.l3 != l3ARP:
					out = append(out, &expr.Meta{Key: expr.MetaKeyPROTOCOL, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ethertype})
				default:
					out = append(out, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseLLHeader, Offset: 12, Len: 2},
						&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ethertype})
				}
				ctx.l3 = f.l3
			}
			if f.l4 != 0 && ctx.l4 != f.l4 {
				out = append(out, &expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{f.l4}})
				ctx.l4 = f.l4
			}
			m, err := e.match(t, s)
			if err != nil {
				return nil, err
			}
			out = append(out, m...)
		case ctState:
			out = append(out, &expr.Ct{Register: 1, Key: expr.CtKeySTATE},
				&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: native32(s.bits), Xor: native32(0)},
				&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: native32(0)})
		case markSet:
			if s.mask == 0 {
				out = append(out, &expr.Immediate{Register: 1, Data: native32(s.val)})
			} else {
				out = append(out, &expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
					&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: native32(s.mask), Xor: native32(s.val)})
			}
			out = append(out, &expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1})
		case vmap:
			out = append(out, &expr.Meta{Key: nfMetaKey(s.key), Register: 1})
			if s.mask != 0 {
				out = append(out, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: native32(s.mask), Xor: native32(0)})
			}
			out = append(out, &expr.Lookup{SourceRegister: 1, SetName: s.set, SetID: e.setID(t, s.set), IsDestRegSet: true, DestRegister: 0})
		case verdict:
			v, err := nfVerdict(s)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		default:
			return nil, fmt.Errorf("unknown statement %T", s)
		}
	}
	return out, nil
}

func (e *encoder) setID(t *nftables.Table, name string) uint32 {
	family := familyInet
	if t.Family == nftables.TableFamilyBridge {
		family = familyBridge
	}
	if s := e.sets[family+"/"+name]; s != nil {
		return s.ID
	}
	return 0
}

func nfMetaKey(k metaKey) expr.MetaKey {
	return map[metaKey]expr.MetaKey{metaNFProto: expr.MetaKeyNFPROTO, metaL4Proto: expr.MetaKeyL4PROTO, metaProtocol: expr.MetaKeyPROTOCOL,
		metaIIFName: expr.MetaKeyIIFNAME, metaOIFName: expr.MetaKeyOIFNAME, metaMark: expr.MetaKeyMARK}[k]
}

var payloadBases = map[base]expr.PayloadBase{baseLink: expr.PayloadBaseLLHeader, baseNetwork: expr.PayloadBaseNetworkHeader, baseTransport: expr.PayloadBaseTransportHeader}

// match encodes a field comparison: a named or anonymous set lookup, a prefix (a shorter
// load when it ends on a byte, else a mask), a range (two comparisons), or an equality.
func (e *encoder) match(t *nftables.Table, m match) ([]expr.Any, error) {
	f := m.f
	load := &expr.Payload{DestRegister: 1, Base: payloadBases[f.base], Offset: f.offset, Len: f.length}
	op := expr.CmpOpEq
	if m.neg {
		op = expr.CmpOpNeq
	}
	switch {
	case m.set != "":
		return []expr.Any{load, &expr.Lookup{SourceRegister: 1, SetName: m.set, SetID: e.setID(t, m.set), Invert: m.neg}}, nil
	case len(m.vals) == 0:
		return nil, fmt.Errorf("%s: no values", f.name)
	case len(m.vals) > 1:
		s, err := e.anonSet(t, f, m.vals)
		if err != nil {
			return nil, err
		}
		return []expr.Any{load, &expr.Lookup{SourceRegister: 1, SetName: s.Name, SetID: s.ID, Invert: m.neg}}, nil
	}
	v := m.vals[0]
	switch {
	case v.prefix >= 0 && v.prefix%8 == 0:
		load.Len = uint32(v.prefix / 8)
		return []expr.Any{load, &expr.Cmp{Op: op, Register: 1, Data: v.lo[:v.prefix/8]}}, nil
	case v.prefix >= 0:
		mask := make([]byte, len(v.lo))
		for bit := 0; bit < v.prefix; bit++ {
			mask[bit/8] |= 0x80 >> (bit % 8)
		}
		return []expr.Any{load, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: f.length, Mask: mask, Xor: make([]byte, len(mask))},
			&expr.Cmp{Op: op, Register: 1, Data: v.lo}}, nil
	case !v.single():
		if m.neg {
			return nil, fmt.Errorf("%s: negated ranges are not used", f.name)
		}
		return []expr.Any{load, &expr.Cmp{Op: expr.CmpOpGte, Register: 1, Data: v.lo}, &expr.Cmp{Op: expr.CmpOpLte, Register: 1, Data: v.hi}}, nil
	default:
		return []expr.Any{load, &expr.Cmp{Op: op, Register: 1, Data: v.lo}}, nil
	}
}

// anonSet adds the constant anonymous set of a rule (`{ a, b }`), an interval set when a
// value is a prefix or range. Interval sets hold [start, end+1) pairs, the end flagged,
// after a leading end at zero when the first interval does not start there, as nft writes
// them.
func (e *encoder) anonSet(t *nftables.Table, f *field, vals []value) (*nftables.Set, error) {
	s := &nftables.Set{Table: t, Name: "__set%d", ID: e.id(), Anonymous: true, Constant: true, KeyType: nfKeyTypes[f.key]}
	for _, v := range vals {
		if !v.single() {
			s.Interval = true
		}
	}
	var elems []nftables.SetElement
	if !s.Interval {
		for _, v := range vals {
			elems = append(elems, nftables.SetElement{Key: v.lo})
		}
	} else {
		sorted := mergeIntervals(vals)
		if !allZero(sorted[0].lo) {
			elems = append(elems, nftables.SetElement{Key: make([]byte, len(sorted[0].lo)), IntervalEnd: true})
		}
		for _, v := range sorted {
			elems = append(elems, nftables.SetElement{Key: v.lo})
			if end, ok := increment(v.hi); ok {
				elems = append(elems, nftables.SetElement{Key: end, IntervalEnd: true})
			}
		}
	}
	if err := e.c.AddSet(s, elems); err != nil {
		return nil, err
	}
	return s, nil
}

// mergeIntervals sorts values and joins overlapping and adjacent ones, as nft does for the
// anonymous interval sets it builds from text.
func mergeIntervals(vals []value) []value {
	sorted := slices.Clone(vals)
	slices.SortFunc(sorted, func(a, b value) int { return bytes.Compare(a.lo, b.lo) })
	out := []value{sorted[0]}
	for _, v := range sorted[1:] {
		last := &out[len(out)-1]
		next, ok := increment(last.hi)
		if !ok || bytes.Compare(v.lo, next) <= 0 {
			if bytes.Compare(v.hi, last.hi) > 0 {
				last.hi = v.hi
			}
			continue
		}
		out = append(out, v)
	}
	return out
}

func allZero(b []byte) bool { return !slices.ContainsFunc(b, func(x byte) bool { return x != 0 }) }

// increment returns b+1 (big-endian), false when b is all ones.
func increment(b []byte) ([]byte, bool) {
	out := slices.Clone(b)
	for i := len(out) - 1; i >= 0; i-- {
		out[i]++
		if out[i] != 0 {
			return out, true
		}
	}
	return nil, false
}

// RemoveTables deletes netsource's tables in the named namespace if they exist, and nothing
// else; it reports whether there were any. An agent whose firewall driver is noop calls it
// at start, so that tables left by an earlier nftables agent (whose catch-all drop would
// close every new port) do not outlive the setting.
func RemoveTables(netnsName string) (bool, error) {
	n := &Netlink{netns: netnsName, ns: -1}
	if netnsName != "" {
		h, err := netns.GetFromName(netnsName)
		if err != nil {
			return false, fmt.Errorf("open network namespace %q: %w", netnsName, err)
		}
		n.ns = h
		defer n.Close()
	}
	c, err := n.conn()
	if err != nil {
		return false, err
	}
	found := false
	for _, f := range families {
		t := nfTable(f)
		tables, err := c.ListTablesOfFamily(t.Family)
		if err != nil {
			return false, fmt.Errorf("list %s tables in netns %q: %w", f, netnsName, err)
		}
		for _, got := range tables {
			if got.Name == TableName {
				c.DelTable(t)
				found = true
			}
		}
	}
	if !found {
		return false, nil
	}
	if err := c.Flush(); err != nil {
		return true, fmt.Errorf("delete netsource tables in netns %q: %w", netnsName, err)
	}
	return true, nil
}
