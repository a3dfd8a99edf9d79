#!/usr/bin/env bash
# `make bench`: runs the exec and create+destroy benchmarks (package ./bench) in one go test
# process and prints a table: median ms/op over BENCHCOUNT runs, the spread, and how many
# times faster each path is than the naive one: the `docker exec` CLI for exec, the Engine
# API archive endpoints for files.
#   BENCHTIME  per-benchmark -benchtime (default 2s)
#   BENCHCOUNT -count (default 3)
#   BENCHOUT   where the raw `go test` output goes (default build/bench.txt)
set -euo pipefail
cd "$(dirname "$0")/.."

benchtime=${BENCHTIME:-2s}
count=${BENCHCOUNT:-3}
out=${BENCHOUT:-build/bench.txt}
mkdir -p "$(dirname "$out")"

cmd=(go test -run '^$' -bench . -benchtime "$benchtime" -count "$count" -timeout 30m ./bench)
echo "bench: ${cmd[*]}" >&2
"${cmd[@]}" | tee "$out" >&2

awk -v naive="BenchmarkExec/docker-cli-exec" -v naivefiles="BenchmarkFiles/moat-docker-archive" '
/^Benchmark/ && $4 == "ns/op" {
  name = $1; sub(/-[0-9]+$/, "", name)
  if (!(name in n)) order[++k] = name
  v[name, ++n[name]] = $3
}
/--- SKIP|^ *bench_test.go:.*unavailable/ { print "note: " $0 > "/dev/stderr" }
function median(name,   m, i, j, t, a) {
  m = n[name]
  for (i = 1; i <= m; i++) a[i] = v[name, i]
  for (i = 2; i <= m; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j+1] = a[j]; a[j+1] = t }
  lo[name] = a[1]; hi[name] = a[m]
  return (m % 2) ? a[(m+1)/2] : (a[m/2] + a[m/2+1]) / 2
}
END {
  for (i = 1; i <= k; i++) med[order[i]] = median(order[i])
  printf "\n%-42s %12s %22s %10s\n", "benchmark", "median ms", "min..max ms", "vs naive"
  for (i = 1; i <= k; i++) {
    name = order[i]
    ratio = ""
    if (name ~ /^BenchmarkExec\// && (naive in med) && med[name] > 0)
      ratio = sprintf("%.1fx", med[naive] / med[name])
    if (name ~ /^BenchmarkFiles\// && (naivefiles in med) && med[name] > 0)
      ratio = sprintf("%.1fx", med[naivefiles] / med[name])
    printf "%-42s %12.3f %10.3f..%-10.3f %10s\n", name, med[name] / 1e6, lo[name] / 1e6, hi[name] / 1e6, ratio
  }
  if (!(naive in med)) print "\n(no docker exec CLI baseline: ratios omitted)"
}' "$out"
