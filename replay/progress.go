package replay

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/mattn/go-isatty"
)

// ProgressFunc is told how far a long read is: done of total units (messages for a
// server, bytes for a file) under a label.
type ProgressFunc func(label string, done, total uint64)

// Bar draws a one-line progress bar on a terminal, at most ten times a second. It draws
// nothing when its writer is not a terminal, so pipes and logs stay clean.
type Bar struct {
	mu      sync.Mutex
	w       io.Writer
	on      bool
	label   string
	started time.Time
	drawn   time.Time
	width   int // length of the last line drawn
}

// NewBar returns a bar on f (normally os.Stderr), active only when f is a terminal.
func NewBar(f *os.File) *Bar {
	return &Bar{w: f, on: f != nil && (isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd()))}
}

// Update is a ProgressFunc.
func (b *Bar) Update(label string, done, total uint64) {
	if b == nil || !b.on {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	if label != b.label {
		b.label, b.started = label, now
	}
	if now.Sub(b.drawn) < 100*time.Millisecond && done < total {
		return
	}
	b.drawn = now
	b.draw(renderBar(label, done, total, now.Sub(b.started)))
}

// Clear removes the bar from the terminal (call it before printing results).
func (b *Bar) Clear() {
	if b == nil || !b.on {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.draw("")
	b.label = ""
}

func (b *Bar) draw(line string) {
	// Overwrite the previous frame and leave the cursor at the start of the line, so that
	// anything else written to the terminal replaces the bar rather than trailing it.
	fmt.Fprintf(b.w, "\r%s%s\r", line, strings.Repeat(" ", max(b.width-len(line), 0)))
	b.width = len(line)
}

// renderBar is one frame: "reading NETSOURCE_DESIRED [#######.............] 35% 350000/1000000 120000/s".
func renderBar(label string, done, total uint64, elapsed time.Duration) string {
	const cells = 24
	frac := 0.0
	if total > 0 {
		frac = min(float64(done)/float64(total), 1)
	}
	filled := int(frac * cells)
	rate := ""
	if s := elapsed.Seconds(); s > 0.2 {
		rate = fmt.Sprintf(" %.0f/s", float64(done)/s)
	}
	return fmt.Sprintf("%s [%s%s] %3.0f%% %d/%d%s", label, strings.Repeat("#", filled), strings.Repeat(".", cells-filled),
		frac*100, done, total, rate)
}
