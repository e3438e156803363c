#!/bin/sh
# Build the base image locally when no registry base is reachable: a Debian bookworm root
# filesystem made by mmdebstrap (minbase + python3 3.11, its venv module, CA certificates),
# imported into buildah's storage as $1 (default localhost/novaza-base:bookworm).
# Elsewhere the Containerfile's default, python:3.11-slim-bookworm from a registry, does the same.
set -eu
NAME=${1:-localhost/novaza-base:bookworm}
BUILDAH=${BUILDAH:-buildah --storage-driver vfs}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}

if $BUILDAH inspect --type image "$NAME" >/dev/null 2>&1; then
  echo "base image $NAME is present (remove it with: $BUILDAH rmi $NAME)"
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# minbase: essential packages and apt (the builder stage installs its compilers with apt-get);
# documentation and locales are left out, as the slim images do.
mmdebstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
  bookworm "$work/rootfs.tar" \
  "deb $MIRROR bookworm main" "deb $MIRROR bookworm-updates main" \
  "deb $SECURITY bookworm-security main"

ctr=$($BUILDAH from scratch)
$BUILDAH add "$ctr" "$work/rootfs.tar" /
$BUILDAH config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --env LANG=C.UTF-8 --cmd '["python3"]' --os linux --arch amd64 "$ctr"
$BUILDAH commit --rm "$ctr" "$NAME"
echo "base image $NAME built with mmdebstrap"
