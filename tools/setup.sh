#!/usr/bin/env bash
# Installs what the monorepo needs on Debian 12, idempotently: Bazel (Debian's
# bazel-bootstrap), Java 17 for Spark, CPython 3.11 with venv, promtool, redis-server
# (tests of the Redis rate limiter), wrk (benchmarks), Podman and its tools (the service's
# images), and .venv built from the same hash-checked lock file Bazel uses (it gives the
# pyflyte, bentoml and mlflow CLIs, with the repository importable). A second run only
# checks and returns.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
cache="${XDG_CACHE_HOME:-$HOME/.cache}/kindle-sentiment"
lock=third_party/python/requirements_lock.txt

need_apt=()
command -v bazel >/dev/null || need_apt+=(bazel-bootstrap)
command -v java >/dev/null || need_apt+=(openjdk-17-jre-headless)
command -v python3.11 >/dev/null || need_apt+=(python3.11)
command -v wrk >/dev/null || need_apt+=(wrk)  # HTTP load generator of tools/bench's serving suite
python3.11 -c "import venv, ensurepip" 2>/dev/null || need_apt+=(python3.11-venv)
# The service's images (tools/image_base.sh, bentoml containerize --backend podman,
# deploy/monitoring/compose.yaml): mmdebstrap and buildah build the bases from Debian
# packages, Podman builds and runs the images with runc (crun refuses hybrid cgroups).
for package in podman buildah runc mmdebstrap podman-compose; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" || need_apt+=("$package")
done
# Packages wanted for their programs only, never as running system services: promtool
# (Debian's prometheus package) checks deploy/monitoring and unit-tests its alert rules;
# redis-server (Debian's, 7.0) is started by the rate limiter's tests themselves, on
# reserved loopback ports. Installed without recommends (no node exporter), and the
# service each package would start (Prometheus on :9090, Redis on :6379) is stopped and
# disabled.
need_services=()
command -v promtool >/dev/null || need_services+=(prometheus)
command -v redis-server >/dev/null || need_services+=(redis-server)
if [ ${#need_apt[@]} -gt 0 ] || [ ${#need_services[@]} -gt 0 ]; then
  sudo_cmd=""; [ "$(id -u)" = 0 ] || sudo_cmd=sudo
  $sudo_cmd apt-get update -qq
  if [ ${#need_apt[@]} -gt 0 ]; then
    echo "setup: installing ${need_apt[*]} with apt-get"
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need_apt[@]}" >/dev/null
  fi
  for package in "${need_services[@]}"; do
    echo "setup: installing $package (its programs, not its service) with apt-get"
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "$package" >/dev/null
    if [ -d /run/systemd/system ]; then
      $sudo_cmd systemctl disable --now "$package" >/dev/null 2>&1 || true
    else
      $sudo_cmd service "$package" stop >/dev/null 2>&1 || true
      $sudo_cmd update-rc.d "$package" disable >/dev/null 2>&1 || true
    fi
  done
fi

stamp=.venv/.lock-sha256
want=$(sha256sum "$lock" | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: building .venv from $lock"
  rm -rf .venv
  python3.11 -m venv .venv
  python3.11 third_party/python/wheel_installer.py --lock "$lock" \
    --wheelhouse "$cache/wheels" --find-links /opt/wheels venv --venv .venv
  site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
  echo "$root" > "$site/kindle_sentiment_repo.pth"
  echo "$want" > "$stamp"
fi
echo "setup: ready (bazel $(bazel --version 2>/dev/null | awk '{print $2}'), $(java -version 2>&1 | head -1), .venv)"
