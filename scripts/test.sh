#!/usr/bin/env bash
# `make test`: installs what is missing, starts dockerd and a throwaway Postgres, builds the
# test images locally, installs the official provider SDKs for the contract tests, then
# runs gofmt, go vet and every test with MOAT_TEST_REQUIRE=all (a missing runtime fails).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/test-deps.sh --test
scripts/build-test-images.sh build/testdata

if [ -x scripts/postgres-test.sh ]; then
  eval "$(scripts/postgres-test.sh)"
fi

# Official SDKs for the provider contract tests, from committed lock files.
while IFS= read -r lock; do
  dir=$(dirname "$lock")
  echo "test: npm ci in $dir"
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
done < <(find backends -path '*/node_modules' -prune -o -name package-lock.json -path '*sdktest*' -print)

unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './build/*'))
if [ -n "$unformatted" ]; then
  echo "gofmt needed on: $unformatted" >&2
  exit 1
fi
go vet ./...

export MOAT_TEST_REQUIRE=${MOAT_TEST_REQUIRE:-all}
export MOAT_TEST_ROOTFS="$PWD/build/testdata/busybox-rootfs.tar"
go test -count=1 -timeout 45m -p 2 ${GOTESTFLAGS:-} ./...

# Every fuzz target for a short fixed budget (its seeds already ran as tests above); a
# failing input lands in testdata/fuzz/ and fails the run. `make fuzz` runs them longer.
FUZZTIME=${FUZZTIME:-5s} scripts/fuzz.sh
