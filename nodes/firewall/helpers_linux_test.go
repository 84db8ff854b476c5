package firewall

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/netsource/netsource/nodes/links/linkstest"
)

// requireRoot skips kernel tests for non-root users.
func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces and nftables tables in them")
	}
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("needs the nft binary (Debian package nftables) to compare with")
	}
}

// testNetns creates network namespaces named <prefix>-<name> for one test and deletes them
// at the end, also when the test fails.
func testNetns(t testing.TB, names ...string) []string {
	t.Helper()
	requireRoot(t)
	prefix := fmt.Sprintf("nsfw%04x", rand.IntN(0xffff))
	linkstest.RemoveNetnsOnCleanup(t, prefix)
	var out []string
	for _, n := range names {
		ns := prefix + "-" + n
		run(t, "ip", "netns", "add", ns)
		run(t, "ip", "-n", ns, "link", "set", "lo", "up")
		out = append(out, ns)
	}
	return out
}

func run(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// nftIn runs nft in a namespace with a script on stdin.
func nftIn(ns, script string, args ...string) (string, error) {
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns, "nft"}, args...)...)
	cmd.Stdin = strings.NewReader(script)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func listRuleset(t testing.TB, ns string) string {
	t.Helper()
	out, err := nftIn(ns, "", "list", "ruleset")
	if err != nil {
		t.Fatalf("nft list ruleset in %s: %v\n%s", ns, err, out)
	}
	return out
}

// normalize makes `nft list ruleset` output comparable between two namespaces that reached
// the same tables by different transactions: objects are listed in creation order and set
// elements in hash order, so objects and elements are sorted.
func normalize(listing string) string {
	var out []string
	var objects []string
	var cur []string
	flushTable := func() {
		slices.Sort(objects)
		out = append(out, objects...)
		objects = nil
	}
	skip := false
	for _, line := range strings.Split(listing, "\n") {
		trimmed := strings.TrimSpace(line)
		switch {
		case skip:
			skip = line != "\t}"
			continue
		case line == "\tset "+stateSet+" {":
			skip = true // the hash of what was applied; the text load has none
			continue
		case trimmed == "":
			continue
		case strings.HasPrefix(line, "table "):
			out = append(out, line)
		case line == "}":
			flushTable()
			out = append(out, line)
		case strings.HasPrefix(line, "\t") && !strings.HasPrefix(line, "\t\t") && strings.HasSuffix(trimmed, "{"):
			cur = []string{trimmed}
		case strings.HasPrefix(line, "\t") && !strings.HasPrefix(line, "\t\t") && trimmed == "}":
			objects = append(objects, sortElements(strings.Join(cur, "\n")))
			cur = nil
		default:
			cur = append(cur, trimmed)
		}
	}
	return strings.Join(out, "\n")
}

// sortElements sorts the comma-separated items of an `elements = { ... }` list.
func sortElements(obj string) string {
	start := strings.Index(obj, "elements = {")
	if start < 0 {
		return obj
	}
	end := strings.Index(obj[start:], "}")
	body := obj[start+len("elements = {") : start+end]
	var items []string
	for _, it := range strings.Split(strings.ReplaceAll(body, "\n", " "), ",") {
		items = append(items, strings.TrimSpace(it))
	}
	slices.Sort(items)
	return obj[:start] + "elements = { " + strings.Join(items, ", ") + " }" + obj[start+end+1:]
}
