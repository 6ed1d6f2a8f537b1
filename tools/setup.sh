#!/usr/bin/env bash
# Installs what the monorepo needs on Debian 12, idempotently: Bazel (Debian's
# bazel-bootstrap), Java 17 for Spark, CPython 3.11 with venv, promtool, redis-server
# (tests of the Redis rate limiter), wrk (benchmarks), Chromium (tests load the drift report
# in it, headless), Podman and its tools (the service's images), and .venv built from the same hash-checked lock file Bazel uses (it gives the
# pyflyte, bentoml and mlflow CLIs, with the repository importable), then torch, which the
# lock leaves out, into .venv as a separate step for the transformer kind (README,
# docs/torch.md). A second run only checks and returns.
#
# Settings (environment):
#   KINDLE_TORCH   cpu (default): torch's CPU build, from KINDLE_WHEELS if a wheel there
#                  matches third_party/python/torch.txt (offline), else PyTorch's CPU index;
#                  cuda: the pinned version from the default index (PyPI), CUDA libraries
#                  included; none: no torch (the transformer kind is then unavailable).
#   KINDLE_WHEELS  the local wheel folder searched for torch's CPU wheel (default /opt/wheels).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
cache="${XDG_CACHE_HOME:-$HOME/.cache}/kindle-sentiment"
lock=third_party/python/requirements_lock.txt
torch_pins=third_party/python/torch.txt
torch_build=${KINDLE_TORCH:-cpu}
wheels=${KINDLE_WHEELS:-/opt/wheels}
case "$torch_build" in
  cpu | cuda | none) ;;
  *) echo "setup: KINDLE_TORCH must be cpu, cuda or none, not '$torch_build'" >&2; exit 2 ;;
esac

need_apt=()
command -v bazel >/dev/null || need_apt+=(bazel-bootstrap)
command -v java >/dev/null || need_apt+=(openjdk-17-jre-headless)
command -v python3.11 >/dev/null || need_apt+=(python3.11)
command -v wrk >/dev/null || need_apt+=(wrk)  # HTTP load generator of tools/bench's serving suite
command -v chromium >/dev/null || need_apt+=(chromium)  # headless browser of the drift report's page test
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
  python3.11 third_party/python/wheel_installer.py \
    --find-links "$wheels" venv --lock "$lock" --wheelhouse "$cache/wheels" --venv .venv
  site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
  echo "$root" > "$site/kindle_sentiment_repo.pth"
  echo "$want" > "$stamp"
fi
# torch: installed once per .venv and setting (the stamp goes with .venv when it is rebuilt).
# Where it cannot be (offline without the wheel), setup still succeeds without it.
torch_stamp=.venv/.torch
torch_want="$torch_build $(sha256sum "$torch_pins" | cut -d' ' -f1)"
torch_version=$(sed -n 's/^torch==\([^ ]*\).*/\1/p' "$torch_pins")
if [ "$torch_build" != none ] && [ "$(cat "$torch_stamp" 2>/dev/null)" != "$torch_want" ]; then
  echo "setup: installing torch $torch_version ($torch_build) into .venv"
  if why=$(python3.11 third_party/python/wheel_installer.py --find-links "$wheels" \
    optional --pins "$torch_pins" --venv .venv --build "$torch_build" 2>&1); then
    echo "$torch_want" > "$torch_stamp"
  else
    echo "setup: torch $torch_version not installed, so the transformer and ensemble kinds are unavailable" \
      "($(echo "$why" | tail -1)); to install it: put torch-$torch_version+cpu-cp311-cp311-manylinux_2_28_x86_64.whl" \
      "in KINDLE_WHEELS ($wheels) or reach https://download.pytorch.org/whl/cpu, or run KINDLE_TORCH=cuda" \
      "bash tools/setup.sh for the CUDA build (README: Installing torch)"
  fi
fi
echo "setup: ready (bazel $(bazel --version 2>/dev/null | awk '{print $2}'), $(java -version 2>&1 | head -1), .venv)"
