#!/usr/bin/env bash
# Runs every native Go fuzz target (func FuzzXxx in a *_test.go file) for FUZZTIME each,
# one package and one target per `go test -fuzz` run (the tool accepts no more), and fails
# when any target fails. A failing input is written to that package's testdata/fuzz/FuzzXxx/:
# commit it with the fix, and it stays a regression seed that plain `go test` runs.
#
#   scripts/fuzz.sh                 # FUZZTIME=60s each (make fuzz)
#   FUZZTIME=5s scripts/fuzz.sh     # the short CI budget (scripts/test.sh)
#   scripts/fuzz.sh ./httpapi       # only these packages
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZTIME=${FUZZTIME:-60s}
# Minimizing a new input can take far longer than the budget itself; keep it short.
FUZZMINIMIZETIME=${FUZZMINIMIZETIME:-2s}

pkgs=("$@")
if [ ${#pkgs[@]} -eq 0 ]; then
  mapfile -t pkgs < <(grep -rl --include='*_test.go' -E '^func Fuzz[A-Za-z0-9_]+\(f \*testing\.F\)' . |
    grep -v -e '^./build/' -e '/node_modules/' | xargs -n1 dirname | sort -u)
fi

failed=()
log=$(mktemp)
trap 'rm -f "$log"' EXIT
start=$SECONDS
for pkg in "${pkgs[@]}"; do
  for target in $(grep -h -o -E '^func Fuzz[A-Za-z0-9_]+\(f \*testing\.F\)' "$pkg"/*_test.go | sed -E 's/^func (Fuzz[A-Za-z0-9_]+).*/\1/' | sort -u); do
    echo "fuzz: $pkg $target ($FUZZTIME)"
    if ! go test -run='^$' -fuzz="^${target}\$" -fuzztime="$FUZZTIME" -fuzzminimizetime="$FUZZMINIMIZETIME" "$pkg" >"$log" 2>&1; then
      cat "$log" >&2
      failed+=("$pkg $target")
    fi
  done
done
echo "fuzz: done in $((SECONDS - start))s"
if [ ${#failed[@]} -gt 0 ]; then
  printf 'fuzz: FAILED: %s\n' "${failed[@]}" >&2
  exit 1
fi
