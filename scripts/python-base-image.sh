#!/usr/bin/env bash
# Make the local base image (Debian bookworm + python3) when Docker Hub cannot be reached.
# Usage: scripts/python-base-image.sh [TAG]   (default local/python-base:bookworm)
# The image is cached as build/cache/python-base.tar.gz: later runs `docker load` it in seconds.
set -euo pipefail
export PATH="/usr/bin:$PATH"
TAG="${1:-local/python-base:bookworm}"
CACHE="${BASE_CACHE:-build/cache/python-base.tar.gz}"

if docker image inspect "$TAG" >/dev/null 2>&1; then
    exit 0
fi
if [[ -f "$CACHE" ]]; then
    echo "loading $TAG from $CACHE"
    gunzip -c "$CACHE" | docker load >/dev/null
    docker image inspect "$TAG" >/dev/null 2>&1 && exit 0
fi
if ! command -v debootstrap >/dev/null 2>&1; then
    echo "installing debootstrap (apt-get)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi
# The Debian mirror this machine already uses (deb822 or one-line sources), else the public one.
MIRROR="$(sed -n 's/^URIs: *\([^ ]*\).*/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v security | head -1 || true)"
MIRROR="${MIRROR:-$(awk '$1 == "deb" && $0 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)}"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"

ROOTFS="$(mktemp -d /tmp/berth-rootfs.XXXXXX)"
trap 'rm -rf "$ROOTFS"' EXIT
echo "debootstrap bookworm from $MIRROR (2-3 minutes)"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$ROOTFS" "$MIRROR" >/tmp/berth-debootstrap.log 2>&1 \
    || { tail -20 /tmp/berth-debootstrap.log >&2; exit 1; }
rm -rf "$ROOTFS"/usr/share/{doc,man,info,locale}/* "$ROOTFS"/var/lib/apt/lists/* \
    "$ROOTFS"/var/cache/apt/*.bin "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/log/*
tar -C "$ROOTFS" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' - "$TAG" >/dev/null
mkdir -p "$(dirname "$CACHE")"
docker save "$TAG" | gzip -1 > "$CACHE"
echo "made $TAG ($(docker image inspect -f '{{.Size}}' "$TAG" | awk '{printf "%.0f MB", $1/1e6}')), cached in $CACHE"
