#!/usr/bin/env bash
# `make run`: installs the local runtimes when missing (docker.io, bubblewrap,
# busybox-static), starts dockerd, builds the base image locally (there is no registry
# here), writes a starter $MOAT_HOME/moat.toml when there is none, and starts moatd on
# embedded SQLite with the auto-detected backend.
set -euo pipefail
cd "$(dirname "$0")/.."
export MOAT_HOME=${MOAT_HOME:-$HOME/.local/share/moat}

scripts/test-deps.sh
scripts/build-test-images.sh build/testdata

mkdir -p "$MOAT_HOME"
if [ ! -f "$MOAT_HOME/moat.toml" ]; then
  cat >"$MOAT_HOME/moat.toml" <<TOML
# Written by make run; see the README's configuration reference.
[sandbox]
backend = "auto"

[backends.docker]
image = "moat-base:latest"   # built locally from busybox-static by scripts/build-test-images.sh

[backends.bwrap]
rootfs = "$PWD/build/testdata/busybox-rootfs.tar"
TOML
  echo "run: wrote $MOAT_HOME/moat.toml"
fi

bin/moat backends
if [ -x bin/moatd ]; then
  exec bin/moatd --listen "${MOAT_LISTEN:-127.0.0.1:8080}"
fi
echo "run: moatd is not built yet; demo on the auto-detected backend:"
bin/moat run -- sh -c 'echo "hello from $(uname -n)"'
