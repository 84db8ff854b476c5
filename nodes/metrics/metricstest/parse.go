// Package metricstest reads the Prometheus text exposition that nodes/metrics serves, for
// tests that check metric values.
package metricstest

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Parse returns every sample of a text exposition by its series (name and labels as
// written), skipping comments and blank lines.
func Parse(r io.Reader) (map[string]float64, error) {
	out := map[string]float64{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			return nil, fmt.Errorf("sample %q: %w", line, err)
		}
		out[line[:i]] = v
	}
	return out, sc.Err()
}
