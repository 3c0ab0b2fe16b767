#!/usr/bin/env bash
# Builds the image the examples and the Docker tests run: Debian's statically linked busybox and
# a symlink per applet, imported into the local Docker engine. No network and no registry.
#
# Usage: scripts/build-example-image.sh [TAG]        (default jaco-example/busybox:1)
#
# Idempotent: an image TAG built from the same /bin/busybox (label
# jaco.example.busybox_sha256) is kept as it is. Safe to run concurrently (an flock serialises
# builds). Needs the busybox-static package (apt-get install busybox-static) and docker.
set -euo pipefail

tag=${1:-jaco-example/busybox:1}
busybox=${JACO_BUSYBOX:-/bin/busybox}   # overridable only to test the error path

if [ ! -x "$busybox" ] || ! "$busybox" --list >/dev/null 2>&1; then
  echo "error: $busybox is missing or is not busybox; install it with: apt-get install busybox-static" >&2
  exit 1
fi
if ! docker version --format '{{.Server.Version}}' >/dev/null 2>&1; then
  echo "error: the Docker engine is not reachable (is dockerd running, may this user use it?)" >&2
  exit 1
fi

digest=$(sha256sum "$busybox" | cut -d' ' -f1)

# One build at a time on this machine: parallel tests call this script too.
exec 9>"${TMPDIR:-/tmp}/jaco-example-image.lock"
flock 9

current=$(docker image inspect --format '{{index .Config.Labels "jaco.example.busybox_sha256"}}' "$tag" 2>/dev/null || true)
if [ "$current" = "$digest" ]; then
  echo "$tag is up to date (busybox sha256 ${digest:0:12})"
  exit 0
fi

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/bin" "$root/tmp" "$root/www" "$root/etc"
chmod 1777 "$root/tmp"
cp "$busybox" "$root/bin/busybox"
for applet in $("$busybox" --list); do
  [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
done
printf 'root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"

tar -C "$root" --numeric-owner --owner=0 --group=0 -c . |
  docker import \
    --change 'ENV PATH=/bin' \
    --change 'CMD ["sh"]' \
    --change "LABEL jaco.example.busybox_sha256=$digest" \
    --message "jaco example image: busybox-static ${digest:0:12}" \
    - "$tag" >/dev/null
# A dynamically linked busybox (Debian's `busybox` package) cannot run in an image without libc.
if ! docker run --rm --network none "$tag" true; then
  docker rmi "$tag" >/dev/null 2>&1 || true
  echo "error: $busybox does not run in an empty image (dynamically linked?); install the static one with: apt-get install busybox-static" >&2
  exit 1
fi
echo "built $tag from $busybox (busybox sha256 ${digest:0:12})"
