#!/usr/bin/env bash
# Build optional cluster add-ons from their Go modules into the same cache bin dir as build.sh
# (called by `build.sh ADDON...`, or directly), and print the bin dir last on stdout:
#   metrics-server   sigs.k8s.io/metrics-server/cmd/metrics-server   (the HPA's resource metrics)
#   kuberay-operator github.com/ray-project/kuberay/ray-operator     (RayService -> RayCluster),
#                    plus its CRDs copied to $BIN/../kuberay-crds/ (config/crd/bases in the module)
# Neither go.mod has replace lines, so `go install pkg@version` builds them as published.
# Unattended and idempotent: a binary whose embedded module version (`go version -m`) is the wanted
# one is not rebuilt, so the "up to date" path costs a few milliseconds per add-on.
# Environment overrides: METRICS_SERVER_VERSION, KUBERAY_VERSION, K8S_VERSION (the cache dir),
# CHORUS_CACHE, GOCACHE, GOMODCACHE, CONTROLPLANE_GO_PARALLEL (go build -p).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LOG_NAME=build-addons
source "$HERE/build-common.sh"
# metrics-server 0.9.0 builds against k8s.io/* v0.36: it shares most of the Go build cache with
# the API server. KubeRay 1.5.0 is the newest ray-operator the module proxy lists.
METRICS_SERVER_VERSION=${METRICS_SERVER_VERSION:-v0.9.0}
KUBERAY_VERSION=${KUBERAY_VERSION:-v1.5.0}
export GOFLAGS="-buildvcs=false"

MS_MOD=sigs.k8s.io/metrics-server
KR_MOD=github.com/ray-project/kuberay/ray-operator

# The module version a Go binary was built from (its build info), or nothing.
built_version() {
  local bin="$BIN/$1" mod=$2
  [[ -x "$bin" ]] || return 0
  go version -m "$bin" 2>/dev/null | awk -v m="$mod" '$1 == "mod" && $2 == m { print $3 }' || true
}
ms_ok() { [[ "$(built_version metrics-server "$MS_MOD")" == "$METRICS_SERVER_VERSION" ]]; }
kr_ok() {
  [[ "$(built_version kuberay-operator "$KR_MOD")" == "$KUBERAY_VERSION" ]] &&
    [[ -f "$ROOT/kuberay-crds/$KUBERAY_VERSION/ray.io_rayservices.yaml" ]]
}

ADDONS=("$@")
(( ${#ADDONS[@]} > 0 )) || ADDONS=(metrics-server kuberay-operator)
for a in "${ADDONS[@]}"; do
  case $a in metrics-server|kuberay-operator) ;; *) die "unknown add-on '$a' (metrics-server, kuberay-operator)";; esac
done

all_ok() {
  local a
  for a in "${ADDONS[@]}"; do
    case $a in metrics-server) ms_ok || return 1;; kuberay-operator) kr_ok || return 1;; esac
  done
}

command -v go >/dev/null || die "no 'go' on PATH: install Go >= 1.25 (https://go.dev/dl/)"
mkdir -p "$BIN"
if all_ok; then
  log "up to date: ${ADDONS[*]} (metrics-server $METRICS_SERVER_VERSION, kuberay $KUBERAY_VERSION)"
  echo "$BIN"
  exit 0
fi

exec 9>"$ROOT/.addons.lock"
flock 9

# go install into a private GOBIN, then rename, so an interrupted build leaves no broken binary.
install() {
  local name=$1 pkg=$2 ldflags=$3 start=$SECONDS gobin="$ROOT/.gobin-$1"
  log "building $name ($pkg) ..."
  rm -rf "$gobin" && mkdir -p "$gobin"
  (cd "$ROOT" && GOBIN="$gobin" nice -n 5 go install -p "$PARALLEL" -trimpath -ldflags "$ldflags" "$pkg")
  mv -f "$gobin/$(basename "${pkg%@*}")" "$BIN/$name" && rmdir "$gobin"
  log "built $name in $((SECONDS - start))s ($(du -m "$BIN/$name" | cut -f1) MB)"
}

for a in "${ADDONS[@]}"; do
  case $a in
    metrics-server)
      ms_ok && continue
      v="-X k8s.io/client-go/pkg/version.gitVersion=$METRICS_SERVER_VERSION"
      v+=" -X k8s.io/component-base/version.gitVersion=$METRICS_SERVER_VERSION"
      install metrics-server "$MS_MOD/cmd/metrics-server@$METRICS_SERVER_VERSION" "-s -w $v"
      ms_ok || die "metrics-server does not report $METRICS_SERVER_VERSION"
      ;;
    kuberay-operator)
      if [[ "$(built_version kuberay-operator "$KR_MOD")" != "$KUBERAY_VERSION" ]]; then
        install kuberay-operator "$KR_MOD@$KUBERAY_VERSION" "-s -w"
      fi
      dir=$(go mod download -json "$KR_MOD@$KUBERAY_VERSION" | jq -er .Dir)
      mkdir -p "$ROOT/kuberay-crds/$KUBERAY_VERSION"
      cp -f "$dir"/config/crd/bases/ray.io_*.yaml "$ROOT/kuberay-crds/$KUBERAY_VERSION/"
      chmod u+w "$ROOT/kuberay-crds/$KUBERAY_VERSION"/*.yaml
      kr_ok || die "kuberay-operator does not report $KUBERAY_VERSION"
      ;;
  esac
done
log "done: ${ADDONS[*]} in $BIN"
echo "$BIN"
