#!/usr/bin/env bash
# Builds the container images the rating service's deployment starts from, out of Debian
# 12 packages alone (no container registry): mmdebstrap installs them from the Debian
# mirror and buildah commits the tree.
#
#   python      localhost/kindle-base:bookworm, the bentofile's docker.base_image:
#               python3 (CPython 3.11, the lock's Python), python3-pip, ca-certificates
#   prometheus  localhost/kindle-prometheus:bookworm, Debian's Prometheus laid out like
#               the upstream image (entrypoint prometheus, data in /prometheus, non-root),
#               for deploy/monitoring/compose.yaml
#
# Reproducible: the same package versions give the same bytes and the same image ID
# (fixed SOURCE_DATE_EPOCH, no host files in the tree), so rebuilding while the mirror
# is unchanged keeps every cached layer of the images built on it.
#
# Usage: tools/image_base.sh [python|prometheus] [IMAGE]   (as root; tools/setup.sh
# installs the tools). KINDLE_DEBIAN_MIRROR and KINDLE_DEBIAN_SECURITY_MIRROR name other mirrors.
set -euo pipefail
cd "$(dirname "$0")/.."
kind=${1:-python}
mirror=${KINDLE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${KINDLE_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/deploy/container/containers.conf}
# Debian 12's release day: file times and the image's creation time, whatever the day of the build.
export SOURCE_DATE_EPOCH=1686355200

case "$kind" in
  python)
    image=${2:-localhost/kindle-base:bookworm}
    packages=python3,python3-pip,ca-certificates
    options=(--customize-hook='upload deploy/container/pip.conf /etc/pip.conf')
    version_command=(python3 -c 'import platform; print(platform.python_version())')
    ;;
  prometheus)
    image=${2:-localhost/kindle-prometheus:bookworm}
    packages=prometheus
    # The web UI loads moment-timezone's bundled builds; its 212 MB of source data stay out.
    options=(
      --dpkgopt='path-exclude=/usr/share/javascript/moment-timezone/data/*'
      --customize-hook='chroot "$1" install -d -o prometheus -g prometheus /prometheus'
    )
    version_command=(sh -c 'prometheus --version 2>&1 | sed -n "s/^prometheus, version \([^ ]*\).*/\1/p"')
    ;;
  *)
    echo "image_base: unknown image '$kind' (python or prometheus)" >&2
    exit 2
    ;;
esac
for tool in mmdebstrap buildah podman; do
  command -v "$tool" >/dev/null || { echo "image_base: $tool not found (tools/setup.sh installs it)" >&2; exit 1; }
done
work=$(mktemp -d)
container=""
trap '[ -z "$container" ] || buildah rm "$container" >/dev/null 2>&1; rm -rf "$work"' EXIT

# Merged /usr by symlinks (debootstrap's way) instead of the usrmerge package and its Perl.
# Documentation, manuals and translations are left out (copyright files stay), and
# dpkg keeps leaving them out of anything installed later. The maintainer scripts run in
# a fixed environment (proxy settings passed on), so the caller's own (its locale,
# PYTHONDONTWRITEBYTECODE: which .pyc files Debian's py3compile writes) changes no byte.
fixed_env=(PATH=/usr/sbin:/usr/bin:/sbin:/bin SOURCE_DATE_EPOCH="$SOURCE_DATE_EPOCH" PYTHONDONTWRITEBYTECODE=1)
for proxy in http_proxy https_proxy no_proxy; do
  [ -z "${!proxy:-}" ] || fixed_env+=("$proxy=${!proxy}")
done
env -i "${fixed_env[@]}" \
  mmdebstrap --variant=apt --include="$packages" \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --aptopt='APT::Install-Recommends "false"' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --customize-hook='rm "$1/etc/resolv.conf" "$1/etc/hostname"' \
    "${options[@]}" \
    bookworm "$work/rootfs.tar" \
    "deb $mirror bookworm main" "deb $mirror bookworm-updates main" "deb $security bookworm-security main" \
  >"$work/mmdebstrap.log" 2>&1 || { cat "$work/mmdebstrap.log" >&2; exit 1; }

previous=$(podman image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)
container=$(buildah from scratch)
buildah add --quiet "$container" "$work/rootfs.tar" / >/dev/null
version=$(buildah run --network none "$container" "${version_command[@]}")
config=(--env LANG=C.UTF-8 --label org.opencontainers.image.base.name=debian:bookworm)
case "$kind" in
  python)
    # uv (BentoML's installer) uses Debian's Python, never a downloaded one, and trusts
    # the system's CA store, as pip and Python in this image do.
    config+=(
      --env UV_PYTHON_PREFERENCE=only-system --env UV_PYTHON_DOWNLOADS=never --env UV_NATIVE_TLS=true
      --cmd python3
      --label org.opencontainers.image.title=kindle-base
      --label org.opencontainers.image.description="Debian 12 with CPython $version from Debian packages"
      --label python.version="$version"
    )
    ;;
  prometheus)
    config+=(
      --entrypoint '["/usr/bin/prometheus"]'
      --cmd '["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]'
      --user prometheus --workingdir /prometheus --port 9090
      --label org.opencontainers.image.title=kindle-prometheus
      --label org.opencontainers.image.description="Debian 12's Prometheus $version"
      --label prometheus.version="$version"
    )
    ;;
esac
buildah config "${config[@]}" "$container"
id=$(buildah commit --quiet --rm --timestamp "$SOURCE_DATE_EPOCH" --identity-label=false "$container" "$image")
container=""
size=$(podman image inspect --format '{{.Size}}' "$image")
state=built
if [ "$id" = "$previous" ]; then
  state=unchanged
elif [ -n "$previous" ]; then
  podman rmi "$previous" >/dev/null 2>&1 || true  # the base it replaces, unless images still use it
fi
echo "image_base: $image $state (id ${id:0:12}, $kind $version, $((size / 1000000)) MB)"
