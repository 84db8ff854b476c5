package topology

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// maxName is the longest name, description or other free text accepted (as in Neutron).
const maxName = 255

// CheckHost reports whether s may be used as a host name: 1-64 characters of
// [A-Za-z0-9_-]. Host names become NATS subject tokens, so a `.`, `*`, `>`, whitespace or
// anything non-ASCII must never pass.
func CheckHost(s string) error {
	return checkToken("host name", s, 64, "_-")
}

// CheckID reports whether s is a UUID in canonical form: 8-4-4-4-12 lower-case hex digits.
// Ids become NATS subject tokens and device-name suffixes, so upper case (which would name a
// second subject for the same object) and the braced or URN forms are rejected.
func CheckID(s string) error {
	if s == "" {
		return errors.New("empty id (want a UUID)")
	}
	if len(s) != 36 {
		return fmt.Errorf("%s is not a UUID (want 8-4-4-4-12 hex digits)", quote(s))
	}
	upper := false
	for i := range len(s) {
		c := s[i]
		switch {
		case i == 8 || i == 13 || i == 18 || i == 23:
			if c != '-' {
				return fmt.Errorf("%s is not a UUID (want 8-4-4-4-12 hex digits)", quote(s))
			}
		case '0' <= c && c <= '9', 'a' <= c && c <= 'f':
		case 'A' <= c && c <= 'F':
			upper = true
		default:
			return fmt.Errorf("%s is not a UUID (want 8-4-4-4-12 hex digits)", quote(s))
		}
	}
	if upper {
		return fmt.Errorf("%s is not a canonical UUID (use lower-case hex digits)", quote(s))
	}
	return nil
}

// checkToken accepts 1-max characters of ASCII letters, digits and the extra characters.
func checkToken(what, s string, max int, extra string) error {
	if s == "" {
		return fmt.Errorf("empty %s", what)
	}
	want := fmt.Sprintf("use 1-%d of A-Z a-z 0-9 %s", max, strings.Join(strings.Split(extra, ""), " "))
	if len(s) > max {
		return fmt.Errorf("%s is too long for a %s (%d bytes; %s)", quote(s), what, len(s), want)
	}
	for i, r := range s {
		if !isAlnum(r) && !strings.ContainsRune(extra, r) {
			_, size := utf8.DecodeRuneInString(s[i:])
			return fmt.Errorf("%s is not a valid %s: %s is not allowed (%s)", quote(s), what, strconv.Quote(s[i:i+size]), want)
		}
	}
	return nil
}

func isAlnum(r rune) bool {
	return 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9'
}

// checkName accepts free text that may reach haproxy configuration, nft comments or device
// names: valid UTF-8 of at most 255 bytes without control characters, line separators, `#`,
// quotes or backslashes. Empty is fine.
func checkName(s string) error {
	if len(s) > maxName {
		return fmt.Errorf("%s is too long (%d bytes, at most %d)", quote(s), len(s), maxName)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("%s is not valid UTF-8", quote(s))
	}
	for _, r := range s {
		if unicode.IsControl(r) || unicode.In(r, unicode.Zl, unicode.Zp) || strings.ContainsRune(`#"'\`, r) {
			return fmt.Errorf("%s contains %s, which is not allowed (no control characters, '#', quotes or backslashes)", quote(s), strconv.QuoteRune(r))
		}
	}
	return nil
}

// checkNetns accepts a network namespace name: 1-64 of [A-Za-z0-9_.-], not "." or "..".
func checkNetns(s string) error {
	if s == "." || s == ".." {
		return fmt.Errorf("%s is not a valid namespace name", quote(s))
	}
	return checkToken("namespace name", s, 64, "_.-")
}

// oneOf accepts v when it is one of want; the message names the field and the choices.
func oneOf(field, v string, want ...string) error {
	if slices.Contains(want, v) {
		return nil
	}
	choices := want[len(want)-1]
	if len(want) > 1 {
		choices = strings.Join(want[:len(want)-1], ", ") + " or " + choices
	}
	if v == "" {
		return fmt.Errorf("%s is required (want %s)", field, choices)
	}
	return fmt.Errorf("unknown %s %s (want %s)", field, quote(v), choices)
}

// inRange accepts lo <= v <= hi; what names the value, e.g. "VLAN" or "port".
func inRange[T int32 | uint32](what string, v, lo, hi T) error {
	if v < lo || v > hi {
		return fmt.Errorf("%s %d is out of range (want %d-%d)", what, v, lo, hi)
	}
	return nil
}

// checkMAC accepts a unicast MAC address written as six colon-separated hex octets.
func checkMAC(s string) error {
	hw, err := parseMAC(s)
	if err != nil {
		return err
	}
	switch {
	case hw == [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}:
		return fmt.Errorf("%s is the broadcast MAC address (want a unicast one)", quote(s))
	case hw[0]&1 == 1:
		return fmt.Errorf("%s is a multicast MAC address (want a unicast one)", quote(s))
	case hw == [6]byte{}:
		return fmt.Errorf("%s is the all-zero MAC address (want a unicast one)", quote(s))
	}
	return nil
}

// parseMAC parses six colon-separated pairs of hex digits, in either case.
func parseMAC(s string) ([6]byte, error) {
	var hw [6]byte
	bad := fmt.Errorf("%s is not a MAC address (want six colon-separated hex octets, e.g. fa:16:3e:00:00:01)", quote(s))
	if len(s) != 17 {
		return hw, bad
	}
	for i := range hw {
		if i > 0 && s[3*i-1] != ':' {
			return hw, bad
		}
		b, err := strconv.ParseUint(s[3*i:3*i+2], 16, 8)
		if err != nil {
			return hw, bad
		}
		hw[i] = byte(b)
	}
	return hw, nil
}

// normMAC is the form MACs are compared in.
func normMAC(s string) string { return strings.ToLower(s) }

// parseIP parses an IPv4 or IPv6 address without zone.
func parseIP(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("%s is not an IP address", quote(s))
	}
	return a, nil
}

// parseCIDR parses a CIDR that must be a network address (no host bits set).
func parseCIDR(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%s is not a CIDR (want e.g. 192.0.2.0/24 or 2001:db8::/64)", quote(s))
	}
	if m := p.Masked(); m != p {
		return netip.Prefix{}, fmt.Errorf("%s is not a network address, did you mean %s", quote(s), m)
	}
	return p, nil
}

// parseIPOrCIDR accepts an address (taken as a host prefix) or a CIDR.
func parseIPOrCIDR(s string) (netip.Prefix, error) {
	if !strings.Contains(s, "/") {
		a, err := parseIP(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%s is not an IP address or CIDR", quote(s))
		}
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	return parseCIDR(s)
}

// family names an address family as ethertype does.
func family(a netip.Addr) string {
	if a.Is4() {
		return "IPv4"
	}
	return "IPv6"
}

// ipVersion returns 4 or 6.
func ipVersion(a netip.Addr) uint32 {
	if a.Is4() {
		return 4
	}
	return 6
}

// wantFamily accepts an address (or prefix address) a, written as v, of family want
// ("IPv4" or "IPv6"); whose names what sets the family, e.g. "the subnet".
func wantFamily(v string, a netip.Addr, want, whose string) error {
	if got := family(a); got != want {
		return fmt.Errorf("%s is %s but %s is %s", quote(v), got, whose, want)
	}
	return nil
}

// checkHostAddr accepts an address usable by a host in p: inside it, not the network address
// and, for IPv4, not the broadcast address (point-to-point /31, /32, /127 and /128 excepted).
func checkHostAddr(a netip.Addr, p netip.Prefix) error {
	if !p.Contains(a) {
		return fmt.Errorf("%s is outside %s", a, p)
	}
	if a.BitLen()-p.Bits() < 2 {
		return nil
	}
	if a == p.Addr() {
		return fmt.Errorf("%s is the network address of %s", a, p)
	}
	if a.Is4() && a == lastAddr(p) {
		return fmt.Errorf("%s is the broadcast address of %s", a, p)
	}
	return nil
}

// lastAddr returns the highest address of an IPv4 prefix.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v |= host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// httpMethods are the methods a health monitor may use.
var httpMethods = []string{"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "CONNECT"}

// checkURLPath accepts an absolute path without whitespace that is safe in haproxy config.
func checkURLPath(s string) error {
	if !strings.HasPrefix(s, "/") {
		return fmt.Errorf("%s does not start with \"/\"", quote(s))
	}
	if strings.ContainsFunc(s, unicode.IsSpace) {
		return fmt.Errorf("%s contains whitespace", quote(s))
	}
	return checkName(s)
}

// checkExpectedCodes accepts HTTP status codes 100-599 as "200", "200,202" or "200-204".
func checkExpectedCodes(s string) error {
	err := checkRanges(s, 100, 599, 3)
	if err != nil {
		return fmt.Errorf("%s is not a list of HTTP status codes (want e.g. 200, 200,202 or 200-204): %w", quote(s), err)
	}
	return nil
}

// checkVLANFilter accepts VLAN ids 1-4094 as "10", "10,20" or "20-30" and combinations.
func checkVLANFilter(s string) error {
	err := checkRanges(s, 1, 4094, 0)
	if err != nil {
		return fmt.Errorf("%s is not a VLAN filter (want e.g. 10,20-30 with VLANs 1-4094): %w", quote(s), err)
	}
	return nil
}

// checkRanges accepts a comma-separated list of N or N-M with lo <= N <= M <= hi. digits,
// when not 0, is the exact number of digits each number must have.
func checkRanges(s string, lo, hi, digits int) error {
	for item := range strings.SplitSeq(s, ",") {
		first, last, isRange := strings.Cut(item, "-")
		a, err := rangeNumber(first, lo, hi, digits)
		if err != nil {
			return err
		}
		b := a
		if isRange {
			if b, err = rangeNumber(last, lo, hi, digits); err != nil {
				return err
			}
		}
		if a > b {
			return fmt.Errorf("range %s is reversed", quote(item))
		}
	}
	return nil
}

func rangeNumber(s string, lo, hi, digits int) (int, error) {
	if s == "" || len(s) > 5 || strings.ContainsFunc(s, func(r rune) bool { return r < '0' || r > '9' }) {
		return 0, fmt.Errorf("%s is not a number", quote(s))
	}
	if digits != 0 && len(s) != digits {
		return 0, fmt.Errorf("%s is not a %d-digit number", quote(s), digits)
	}
	n, _ := strconv.Atoi(s)
	if n < lo || n > hi {
		return 0, fmt.Errorf("%d is out of range %d-%d", n, lo, hi)
	}
	return n, nil
}
