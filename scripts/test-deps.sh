#!/usr/bin/env bash
# Installs and starts what moat needs on a fresh Debian machine (as root), and is quick
# when everything is already there: docker.io, bubblewrap, busybox-static, util-linux
# (prlimit); with --test also postgresql, node/npm and chromium for the tests. Starts dockerd in the
# background when it is not up.
# Usage: scripts/test-deps.sh [--test]
set -euo pipefail
tests=false
[ "${1:-}" = --test ] && tests=true

need=()
command -v dockerd >/dev/null || need+=(docker.io)
command -v bwrap >/dev/null || need+=(bubblewrap)
{ command -v busybox >/dev/null && file -L "$(command -v busybox)" | grep -q static; } || need+=(busybox-static)
command -v prlimit >/dev/null || need+=(util-linux)
command -v file >/dev/null || need+=(file)
if $tests; then
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
  command -v node >/dev/null || need+=(nodejs)
  command -v npm >/dev/null || need+=(npm)
  command -v chromium >/dev/null || need+=(chromium)   # internal/webui's headless browser tests
fi
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "test-deps: missing ${need[*]}; run as root (or install them) " >&2
    exit 1
  fi
  echo "test-deps: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# dockerd: start it in the background when the socket does not answer.
if ! docker info >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "test-deps: starting dockerd"
  mkdir -p build
  nohup dockerd >build/dockerd.log 2>&1 &
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 0.5
  done
  docker info >/dev/null 2>&1 || { echo "test-deps: dockerd did not come up; see build/dockerd.log" >&2; tail -20 build/dockerd.log >&2; exit 1; }
fi
