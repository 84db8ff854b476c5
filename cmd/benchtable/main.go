// Command benchtable turns `go test -bench` output into a table with ratios: within one
// benchmark, every sub-benchmark is compared with the first one (the baseline measured in
// the same run). Extra metrics (p50-ms, p99-ms, ...) are printed as they are.
package main

import (
	"bufio"
	"fmt"
	"os"
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
	for _, r := range results {
		if _, ok := baseline[r.name]; !ok {
			baseline[r.name] = r.nsPerOp
		}
		ratio := r.nsPerOp / baseline[r.name]
		fmt.Printf("| %s | %s | %.0f | %.0f | %.2fx | %s |\n", r.name, r.variant, r.nsPerOp, 1e9/r.nsPerOp, ratio,
			strings.Join(r.extra, " "))
	}
}

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
