package replay

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"

	nsv1 "github.com/netsource/netsource/proto/netsource/v1"
)

// timeText prints a time in UTC with fixed millisecond width.
func timeText(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

// WriteTopology prints a topology as YAML (format "yaml") or JSON with the topology file's
// field names: what `netsource apply -f` accepts (as `netsource get -o yaml` does).
func WriteTopology(w io.Writer, format string, t *nsv1.Topology) error {
	data, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(t)
	if err != nil {
		return err
	}
	if format == "yaml" {
		if data, err = yaml.JSONToYAML(data); err != nil {
			return err
		}
	} else {
		// protojson varies its spacing on purpose (per binary); re-indenting drops it, so
		// the same state prints the same bytes from every build.
		var buf bytes.Buffer
		if err := json.Indent(&buf, data, "", "  "); err != nil {
			return err
		}
		data = append(buf.Bytes(), '\n')
	}
	_, err = w.Write(data)
	return err
}

// WriteTimeline prints a timeline for people: the events merged in time order with the
// field changes of each desired version, then the versions with their convergence.
func WriteTimeline(w io.Writer, tl *Timeline) error {
	statuses := 0
	for _, e := range tl.Entries {
		if e.Stream == Status.String() {
			statuses++
		}
	}
	fmt.Fprintf(w, "%s %s on %s: %d desired versions, %d status events\n\n", tl.Kind, tl.ID, orNone(strings.Join(tl.Hosts, ", ")),
		len(tl.Versions), statuses)
	hostWidth := 4
	for _, h := range tl.Hosts {
		hostWidth = max(hostWidth, len(h))
	}
	indent := strings.Repeat(" ", 24+2+hostWidth+2+4)
	for _, e := range tl.Entries {
		host := e.Host
		if host == "" {
			host = "-"
		}
		fmt.Fprintf(w, "%s  %-*s  ", timeText(e.Time), hostWidth, host)
		if e.Stream == Status.String() {
			if e.Phase == "" {
				fmt.Fprintf(w, "status: %s\n", e.Error)
				continue
			}
			fmt.Fprintf(w, "status %s for #%d: %s\n", e.Phase, e.DesiredSeq, oneLine(e.Reason))
			continue
		}
		switch {
		case e.Change == "":
			fmt.Fprintf(w, "#%d %s\n", e.Seq, e.Subject)
		default:
			fmt.Fprintf(w, "#%d %s by %s\n", e.Seq, e.Change, orNone(e.Publisher))
		}
		for _, c := range e.Changes {
			fmt.Fprintf(w, "%s%s\n", indent, c)
		}
		if e.Error != "" {
			fmt.Fprintf(w, "%s! agents refuse it: %s\n", indent, oneLine(e.Error))
		}
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "VERSION\tHOST\tCHANGE\tPUBLISHED\tBY\tCONVERGED")
	for _, v := range tl.Versions {
		fmt.Fprintf(tw, "#%d\t%s\t%s\t%s\t%s\t%s\n", v.Seq, orNone(v.Host), v.Change, timeText(v.Time), orNone(v.Publisher), convergenceText(v))
	}
	return tw.Flush()
}

func convergenceText(v Version) string {
	if len(v.Converged) == 0 {
		if v.Pending != "" {
			return "not converged (" + oneLine(v.Pending) + ")"
		}
		return "not converged"
	}
	parts := make([]string, len(v.Converged))
	for i, c := range v.Converged {
		parts[i] = fmt.Sprintf("%s on %s after %s", c.Phase, c.Host, c.After)
		if c.Seq != v.Seq {
			parts[i] += fmt.Sprintf(" (at #%d)", c.Seq)
		}
	}
	return strings.Join(parts, "; ")
}

// WriteDiff prints a diff report for people.
func WriteDiff(w io.Writer, rep *DiffReport) error {
	scope := "all hosts"
	if rep.Host != "" {
		scope = "host " + rep.Host
	}
	fmt.Fprintf(w, "desired state against status, %s, as of %s: %d problems (%d objects, %d statuses checked); %d of %d agents late\n",
		scope, timeText(rep.AsOf), len(rep.Objects), rep.Checked.Objects, rep.Checked.Statuses, len(rep.Agents), rep.Checked.Agents)
	if len(rep.Objects) > 0 {
		fmt.Fprintln(w)
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "HOST\tKIND\tID\tPROBLEM\tDESIRED\tSTATUS\tPHASE\tREASON")
		for _, p := range rep.Objects {
			desired := fmt.Sprintf("#%d %s", p.DesiredSeq, p.Change)
			if p.DesiredSeq == 0 {
				desired = "-"
			}
			status := "-"
			if p.Phase != "" {
				status = fmt.Sprintf("#%d", p.StatusSeq)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p.Host, p.Kind, p.ID, p.Problem, desired, status, orNone(p.Phase), oneLine(p.Reason))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if len(rep.Agents) > 0 {
		fmt.Fprintln(w)
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "LATE AGENT\tLAST HEARTBEAT\tAGE\tREPORT INTERVAL\tAPPLIED")
		for _, a := range rep.Agents {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t#%d\n", a.Host, timeText(a.LastHeartbeat), a.Age, a.ReportInterval, a.AppliedSeq)
		}
		return tw.Flush()
	}
	return nil
}

// WriteSimulation prints the operations of a simulation: one line per input, the dataplane
// calls it caused below it, and the kernel writes of each call below those; with statuses,
// the status reports too; with dump, the final state of the fake dataplane.
func WriteSimulation(w io.Writer, sim *Simulation, statuses, dump bool) error {
	fmt.Fprintf(w, "simulated agent %s, history up to %s\nconfiguration: %s (from %s)\n", sim.Host, sim.To, sim.Config, sim.ConfigFrom)
	for _, st := range sim.Steps {
		switch st.Input {
		case "start":
			fmt.Fprintln(w, "start: desired state loaded (empty stream), orphans pruned")
		case "remote-status":
			fmt.Fprintf(w, "%s status of %s %s on %s: %s\n", timeText(st.Time), st.Kind, st.ID, st.Host, st.Phase)
		default:
			what := st.Subject
			if st.Kind != "" {
				what = st.Kind + " " + st.ID
				if st.Host != "" {
					what += " on " + st.Host
				}
			}
			fmt.Fprintf(w, "#%d %s %s %s\n", st.Seq, timeText(st.Time), what, st.Change)
		}
		for _, op := range st.Ops {
			fmt.Fprintf(w, "  %s\n", op.Call)
			for _, wr := range op.Writes {
				fmt.Fprintf(w, "    %s\n", wr)
			}
			if op.Error != "" {
				fmt.Fprintf(w, "    ! %s\n", oneLine(op.Error))
			}
		}
		if statuses {
			for _, s := range st.Statuses {
				fmt.Fprintf(w, "  = %s %s %s for #%d: %s\n", s.Kind, s.ID, s.Phase, s.DesiredSeq, oneLine(s.Reason))
			}
		}
		if st.Note != "" {
			fmt.Fprintf(w, "  ! %s\n", st.Note)
		}
	}
	if dump {
		fmt.Fprintf(w, "final dataplane state:\n")
		for _, line := range strings.Split(strings.TrimSuffix(sim.Dump, "\n"), "\n") {
			if line != "" {
				fmt.Fprintf(w, "  %s\n", line)
			}
		}
	}
	return nil
}

func orNone(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func oneLine(s string) string { return strings.ReplaceAll(s, "\n", " ") }
