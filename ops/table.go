package ops

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/netsource/netsource/streams"
)

// Filter selects hosts and objects; empty fields match anything.
type Filter struct {
	Host  string
	Kind  streams.Kind
	Phase string // PENDING, BUILD, ACTIVE, DOWN, ERROR or DELETED
}

// Objects returns the objects the filter selects.
func (f Filter) Objects(objs []ObjectView) []ObjectView {
	var out []ObjectView
	for _, o := range objs {
		if (f.Host == "" || o.Host == f.Host) && (f.Kind == "" || o.Kind == string(f.Kind)) && (f.Phase == "" || o.Phase == f.Phase) {
			out = append(out, o)
		}
	}
	return out
}

// Hosts returns the hosts the filter selects.
func (f Filter) Hosts(hosts []HostView) []HostView {
	var out []HostView
	for _, h := range hosts {
		if f.Host == "" || h.Host == f.Host {
			out = append(out, h)
		}
	}
	return out
}

// TableOptions configures RenderTable.
type TableOptions struct {
	// Width and Height of the terminal; 0 means unlimited.
	Width, Height int
	// Color uses ANSI colours for phases and host states.
	Color bool
	// Source names where the data comes from (the NATS URL) in the title line.
	Source string
	Filter Filter
}

// wideTerminal is the width from which object ids are shown whole.
const wideTerminal = 130

// phaseRank orders object rows: what needs attention first.
var phaseRank = map[string]int{"ERROR": 0, "DEGRADED": 1, "DOWN": 2, "BUILD": 3, "PENDING": 4, "ACTIVE": 5, "DELETED": 6}

var phaseColor = map[string]string{
	"ERROR": "\x1b[1;31m", "DEGRADED": "\x1b[1;33m", "DOWN": "\x1b[33m", "BUILD": "\x1b[36m", "PENDING": "\x1b[35m", "ACTIVE": "\x1b[32m", "DELETED": "\x1b[2m",
	"down": "\x1b[1;31m", "starting": "\x1b[36m", "up": "\x1b[32m",
}

// RenderTable writes the hosts and objects of v as two tables under a title line: hosts
// with heartbeat age and state, then objects with what needs attention (ERROR, DEGRADED,
// DOWN, BUILD, PENDING) first. Rows that do not fit the height are counted in a last line.
func RenderTable(w io.Writer, v View, o TableOptions) error {
	hosts := o.Filter.Hosts(v.Hosts)
	objs := o.Filter.Objects(v.Objects)
	sort.SliceStable(objs, func(i, j int) bool {
		a, b := objs[i], objs[j]
		if ra, rb := phaseRank[a.Phase], phaseRank[b.Phase]; ra != rb {
			return ra < rb
		}
		if a.Host != b.Host {
			return a.Host < b.Host
		}
		if a.Kind != b.Kind {
			return a.Kind < b.Kind
		}
		if a.Name != b.Name {
			return a.Name < b.Name
		}
		return a.ID < b.ID
	})
	var b strings.Builder
	b.WriteString(titleLine(v, hosts, objs, o))
	b.WriteString("\n\n")

	hostRows := [][]string{{"HOST", "STATE", "HEARTBEAT", "INTERVAL", "APPLIED", "LAG", "OBJECTS"}}
	for _, h := range hosts {
		hostRows = append(hostRows, []string{h.Host, h.State, FormatAge(time.Duration(h.AgeMs)*time.Millisecond) + " ago",
			FormatAge(time.Duration(h.ReportIntervalMs) * time.Millisecond), fmt.Sprint(h.AppliedSeq), fmt.Sprint(h.Lag), countsText(h.Counts)})
	}
	if len(hosts) == 0 {
		hostRows = append(hostRows, []string{"(no heartbeat yet)", "", "", "", "", "", ""})
	}
	lines := 2 + len(hostRows) + 1 // title, blank line, hosts, blank line
	writeRows(&b, hostRows, o, 1)
	b.WriteString("\n")

	objRows := [][]string{{"KIND", "NAME", "ID", "HOST", "PHASE", "AGE", "REASON"}}
	for _, ob := range objs {
		id := ob.ID
		if o.Width > 0 && o.Width < wideTerminal && len(id) > 9 {
			id = id[:8] + "…" // a UUID's first 8 digits tell objects apart in practice
		}
		objRows = append(objRows, []string{ob.Kind, ob.Name, id, ob.Host, ob.Phase, FormatAge(v.Now.Sub(ob.Time)), oneLine(ob.Reason)})
	}
	more := 0
	if o.Height > 0 {
		room := o.Height - lines - 1 // the header row
		if room < 1 {
			room = 1
		}
		if len(objRows)-1 > room {
			more = len(objRows) - 1 - (room - 1)
			objRows = objRows[:room]
		}
	}
	writeRows(&b, objRows, o, 4)
	if more > 0 {
		fmt.Fprintf(&b, "… %d more objects (narrow with --host, --kind, --phase)\n", more)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func titleLine(v View, hosts []HostView, objs []ObjectView, o TableOptions) string {
	down := 0
	for _, h := range hosts {
		if h.Down() {
			down++
		}
	}
	byPhase := map[string]int{}
	for _, ob := range objs {
		byPhase[ob.Phase]++
	}
	var phases []string
	for _, p := range []string{"ERROR", "DEGRADED", "DOWN", "BUILD", "PENDING", "ACTIVE", "DELETED"} {
		if n := byPhase[p]; n > 0 {
			phases = append(phases, fmt.Sprintf("%d %s", n, p))
		}
	}
	parts := []string{"netsource watch"}
	if o.Source != "" {
		parts = append(parts, o.Source)
	}
	parts = append(parts, v.Now.Format("15:04:05"))
	hostPart := fmt.Sprintf("%d hosts", len(hosts))
	if down > 0 {
		hostPart += fmt.Sprintf(" (%d down)", down)
	}
	parts = append(parts, hostPart)
	objPart := fmt.Sprintf("%d objects", len(objs))
	if len(phases) > 0 {
		objPart += ": " + strings.Join(phases, ", ")
	}
	parts = append(parts, objPart)
	if !v.Ready {
		parts = append(parts, "loading…")
	}
	if v.Notice != "" {
		parts = append(parts, v.Notice)
	}
	return clip(strings.Join(parts, " · "), o.Width)
}

// writeRows pads columns to their widest cell; the last column takes what is left of the
// width. colorCol is the column whose value picks the row's colour.
func writeRows(b *strings.Builder, rows [][]string, o TableOptions, colorCol int) {
	if len(rows) == 0 {
		return
	}
	n := len(rows[0])
	widths := make([]int, n)
	for _, r := range rows {
		for i, c := range r[:n-1] {
			widths[i] = max(widths[i], utf8.RuneCountInString(c))
		}
	}
	for ri, r := range rows {
		var line strings.Builder
		for i, c := range r {
			cell := c
			if i < n-1 {
				cell += strings.Repeat(" ", widths[i]-utf8.RuneCountInString(c)+2)
			}
			line.WriteString(cell)
		}
		text := clip(strings.TrimRight(line.String(), " "), o.Width)
		if o.Color {
			switch {
			case ri == 0:
				text = "\x1b[1m" + text + "\x1b[0m"
			case phaseColor[r[colorCol]] != "":
				// Colour only the state/phase cell: find its offset in the clipped text.
				off := 0
				for i := range colorCol {
					off += widths[i] + 2
				}
				if runes := []rune(text); len(runes) > off {
					end := min(off+utf8.RuneCountInString(r[colorCol]), len(runes))
					text = string(runes[:off]) + phaseColor[r[colorCol]] + string(runes[off:end]) + "\x1b[0m" + string(runes[end:])
				}
			}
		}
		b.WriteString(text)
		b.WriteString("\n")
	}
}

// clip shortens s to width runes, marking the cut with an ellipsis.
func clip(s string, width int) string {
	if width <= 0 || utf8.RuneCountInString(s) <= width {
		return s
	}
	r := []rune(s)
	return string(r[:width-1]) + "…"
}

func countsText(counts map[string]uint32) string {
	var parts []string
	for k, n := range counts {
		if k == "kernel_mutations" || n == 0 {
			continue
		}
		parts = append(parts, fmt.Sprintf("%s %d", k, n))
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

func oneLine(s string) string { return strings.ReplaceAll(s, "\n", " ") }

// FormatAge prints a duration the way the tables show ages: 850ms, 12s, 5m, 3h, 2d.
func FormatAge(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d < time.Second:
		return fmt.Sprintf("%dms", d.Milliseconds())
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}
