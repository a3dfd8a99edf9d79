#!/usr/bin/env bash
# Builds the test base image locally (there is no registry here): a busybox-static rootfs
# tarball for the bwrap backend, and the same rootfs imported into Docker.
# Usage: scripts/build-test-images.sh OUTDIR   (prints nothing on success but a summary)
set -euo pipefail
out=${1:-build/testdata}
image=${MOAT_TEST_DOCKER_IMAGE:-moat-test-busybox:latest}
busybox=$(command -v busybox || true)
[ -n "$busybox" ] || { echo "build-test-images: busybox not found (apt-get install busybox-static)" >&2; exit 1; }
if ! file -L "$busybox" 2>/dev/null | grep -q 'statically linked' && ! ldd "$busybox" 2>&1 | grep -q 'not a dynamic'; then
  echo "build-test-images: $busybox is not static (apt-get install busybox-static)" >&2; exit 1
fi
mkdir -p "$out"
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,tmp,root,workspace,proc,dev,sys}
chmod 1777 "$root/tmp"
cp "$busybox" "$root/bin/busybox"
for applet in $("$busybox" --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
tar -C "$root" --numeric-owner --owner=0 --group=0 -cf "$out/busybox-rootfs.tar.tmp" .
mv "$out/busybox-rootfs.tar.tmp" "$out/busybox-rootfs.tar"
echo "build-test-images: rootfs $out/busybox-rootfs.tar"
if docker info >/dev/null 2>&1; then
  docker import "$out/busybox-rootfs.tar" "$image" >/dev/null
  # moat-base is the default docker image `make run` configures (no registry here).
  docker tag "$image" moat-base:latest
  echo "build-test-images: docker images $image, moat-base:latest"
else
  echo "build-test-images: docker daemon not reachable; docker image not built" >&2
fi
