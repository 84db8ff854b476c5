// Command benchtable turns `go test -bench` output into a table with ratios: within one
// benchmark, every sub-benchmark is compared with the first one (the baseline measured in
// the same run). Extra metrics (p50-ms, p99-ms, ...) are printed as they are. A benchmark
// run several times (-count) is one row: its median run, with the range of ns/op.
package main

import (
	"bufio"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
)

type result struct {
	name, variant string
	nsPerOp       float64
	extra         []string
}

func main() {
	var results []result
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		if r, ok := parse(sc.Text()); ok {
			results = append(results, r)
		}
	}
	baseline := map[string]float64{}
	fmt.Printf("| benchmark | variant | ns/op | ops/s | ratio to baseline | other |\n|---|---|---:|---:|---:|---|\n")
	for _, runs := range group(results) {
		r := median(runs)
		if _, ok := baseline[r.name]; !ok {
			baseline[r.name] = r.nsPerOp
		}
		ratio := r.nsPerOp / baseline[r.name]
		extra := strings.Join(r.extra, " ")
		if len(runs) > 1 {
			extra = fmt.Sprintf("median of %d runs (ns/op %.0f to %.0f): %s", len(runs), runs[0].nsPerOp, runs[len(runs)-1].nsPerOp, extra)
		}
		fmt.Printf("| %s | %s | %.0f | %.0f | %.2fx | %s |\n", r.name, r.variant, r.nsPerOp, 1e9/r.nsPerOp, ratio, extra)
	}
}

// group collects the runs of each benchmark and variant, in the order first seen, each
// group sorted by ns/op.
func group(results []result) [][]result {
	var out [][]result
	index := map[string]int{}
	for _, r := range results {
		key := r.name + "/" + r.variant
		i, ok := index[key]
		if !ok {
			i = len(out)
			index[key] = i
			out = append(out, nil)
		}
		out[i] = append(out[i], r)
	}
	for _, runs := range out {
		slices.SortStableFunc(runs, func(a, b result) int {
			switch {
			case a.nsPerOp < b.nsPerOp:
				return -1
			case a.nsPerOp > b.nsPerOp:
				return 1
			}
			return 0
		})
	}
	return out
}

// median is the middle run (the faster of the two middle ones for an even count).
func median(sorted []result) result { return sorted[(len(sorted)-1)/2] }

// parse reads a line like "BenchmarkPublish/raw-2   20000   61234 ns/op   1.2 p99-ms".
func parse(line string) (result, bool) {
	f := strings.Fields(line)
	if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
		return result{}, false
	}
	full := strings.TrimPrefix(f[0], "Benchmark")
	if i := strings.LastIndex(full, "-"); i > 0 {
		full = full[:i]
	}
	name, variant, _ := strings.Cut(full, "/")
	r := result{name: name, variant: variant}
	for i := 2; i+1 < len(f); i += 2 {
		v, err := strconv.ParseFloat(f[i], 64)
		if err != nil {
			continue
		}
		if f[i+1] == "ns/op" {
			r.nsPerOp = v
		} else {
			r.extra = append(r.extra, f[i]+" "+f[i+1])
		}
	}
	return r, r.nsPerOp > 0
}
