#!/usr/bin/env bash
# Set up everything Chorus needs on a fresh machine, reusing caches outside the clone.
#   - Debian packages: espeak-ng (run as a separate process, GPL-3.0) and sox; for the real test
#     node (controlplane/node.py) containerd, runc, the CNI plugins, mmdebstrap (image roots)
#     and busybox-static (the node tests' tiny workload image).
#   - A virtualenv keyed by the hash of requirements.lock under $CHORUS_CACHE.
#   - Chorus itself installed editable into that virtualenv (re-done every run: the
#     clone may live in a different folder than the one the cached venv last saw).
# Prints the virtualenv path on its last line.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
cache="${CHORUS_CACHE:-$HOME/.cache/chorus}"
mkdir -p "$cache"

need_apt=()
command -v espeak-ng >/dev/null || need_apt+=(espeak-ng)
command -v sox >/dev/null || need_apt+=(sox)
command -v chromium >/dev/null || need_apt+=(chromium)
command -v containerd >/dev/null || need_apt+=(containerd)
command -v runc >/dev/null || need_apt+=(runc)
[ -x /usr/lib/cni/bridge ] || need_apt+=(containernetworking-plugins)
command -v mmdebstrap >/dev/null || need_apt+=(mmdebstrap)
[ -x /bin/busybox ] || need_apt+=(busybox-static)
if ((${#need_apt[@]})); then
  echo "bootstrap: installing Debian packages: ${need_apt[*]}" >&2
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >&2
fi

hash="$(sha256sum "$here/requirements.lock" | cut -c1-12)"
venv="$cache/venv-$hash"
export PIP_CACHE_DIR="$cache/pip" PIP_DISABLE_PIP_VERSION_CHECK=1
# One build at a time per cache: a second caller waits, then finds the virtualenv complete.
exec 9>"$cache/.bootstrap.lock"
flock 9
if [ ! -f "$venv/.complete" ]; then
  echo "bootstrap: building virtualenv $venv (first run on this machine: several minutes)" >&2
  rm -rf "$venv"
  python3.11 -m venv "$venv" 2>/dev/null || python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip setuptools wheel >&2
  "$venv/bin/pip" install --progress-bar off -r "$here/requirements.lock" >&2
  touch "$venv/.complete"
fi
# setuptools warns at length about editable installs; show its output only when it fails.
if ! out="$("$venv/bin/pip" install -q --no-deps --no-build-isolation -e "$here" 2>&1)"; then
  echo "$out" >&2; exit 1
fi
echo "$venv"
