#!/usr/bin/env bash
# `make soak`: a bounded soak of a real moatd on 127.0.0.1 (temporary MOAT_HOME; docker when
# the test image is built, else bwrap with MOAT_TEST_ROOTFS, else the restricted host):
# 50 sandboxes, 200 concurrent execs and file traffic for SOAK_DURATION (default 2m).
# Prints errors (must be 0), exec p50/p99 and moatd's RSS; exits non-zero on any error or
# RSS growth over SOAK_RSS_GROWTH_MIB (default 64). Extra arguments go to bench/soak.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x bin/moatd ] || make build
if [ -z "${MOAT_TEST_ROOTFS:-}" ] && [ -f build/testdata/busybox-rootfs.tar ]; then
  export MOAT_TEST_ROOTFS="$PWD/build/testdata/busybox-rootfs.tar"
fi
exec go run ./bench/soak -moatd bin/moatd "$@"
