#!/usr/bin/env bash
# Build the test control plane into a cache outside the repo and print its bin dir last on stdout:
#   etcd, kube-apiserver, kube-controller-manager, and for a real node (controlplane/node.py)
#   kubelet, kube-scheduler, kube-proxy (all from the Go module k8s.io/kubernetes), and helm v3.
# Usage: build.sh [ADDON...]; add-ons (metrics-server, kuberay-operator) are built into the same
# bin dir by build-addons.sh, which build.sh runs with those names (none: no add-on).
# Unattended and idempotent: a binary that already reports the wanted version is not rebuilt.
# Progress goes to stderr. Environment overrides: K8S_VERSION, ETCD_VERSION, HELM_VERSION,
# CHORUS_CACHE, GOCACHE, GOMODCACHE, CONTROLPLANE_GO_PARALLEL (go build -p).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LOG_NAME=build
source "$HERE/build-common.sh"
# helm 3.21 is built against client-go v0.36, the same minor as the API server.
HELM_VERSION=${HELM_VERSION:-v3.21.4}
SRC="$ROOT/src"
export GOFLAGS="-mod=mod -buildvcs=false"

command -v go >/dev/null || die "no 'go' on PATH: install Go >= 1.25 (https://go.dev/dl/)"
mkdir -p "$BIN" "$SRC"

# One build at a time per cache (two `make test` runs may start together).
exec 9>"$ROOT/.lock"
flock 9

K8S_SEMVER=${K8S_VERSION#v}                      # 1.36.3
K8S_MAJOR=${K8S_SEMVER%%.*}                      # 1
K8S_MINOR=$(cut -d. -f2 <<<"$K8S_SEMVER")        # 36
K8S_PATCH=$(cut -d. -f3 <<<"$K8S_SEMVER")        # 3
STAGING_VERSION="v0.$K8S_MINOR.$K8S_PATCH"       # the published twin of a v0.0.0 staging module

# Prints the first line of a binary's version output, or nothing when it is absent or broken.
reported_version() {
  local bin="$BIN/$1"; shift
  [[ -x "$bin" ]] || return 0
  "$bin" "$@" 2>/dev/null | head -1 || true
}

k8s_ok() { [[ "$(reported_version "$1" --version)" == "Kubernetes $K8S_VERSION" ]]; }
# Every k8s.io/kubernetes command built here (kubelet, scheduler and proxy serve controlplane/node.py).
K8S_COMMANDS=(kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubelet)
k8s_all_ok() { local c; for c in "${K8S_COMMANDS[@]}"; do k8s_ok "$c" || return 1; done; }
helm_ok() { [[ "$(reported_version helm version --template '{{.Version}}')" == "$HELM_VERSION" ]]; }
etcd_ok() { [[ -n "${ETCD_VERSION:-}" && "$(reported_version etcd --version)" == "etcd Version: ${ETCD_VERSION#v}" ]]; }

# go.mod of k8s.io/kubernetes as the proxy serves it (the module zip has no staging/ tree).
k8s_gomod() {
  go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | jq -er .GoMod
}

# etcd: the server version k8s.io/kubernetes itself pins, unless ETCD_VERSION says otherwise.
if [[ -z "${ETCD_VERSION:-}" ]]; then
  log "resolving k8s.io/kubernetes@$K8S_VERSION"
  ETCD_VERSION=$(go mod edit -json "$(k8s_gomod)" |
    jq -er '.Require[] | select(.Path == "go.etcd.io/etcd/server/v3") | .Version')
fi

# Add-ons named on the command line: build-addons.sh has its own cache checks and lock.
# build.sh's own lock is released first: other callers need not wait for an add-on build.
addons() { flock -u 9; (( $# == 0 )) || bash "$HERE/build-addons.sh" "$@" 9>&- >/dev/null; }

if k8s_all_ok && etcd_ok && helm_ok; then
  log "up to date: kubernetes $K8S_VERSION, etcd $ETCD_VERSION, helm $HELM_VERSION"
  addons "$@"
  echo "$BIN"
  exit 0
fi

# The wrapper module: requires k8s.io/kubernetes and replaces each staging module it requires
# at v0.0.0 (its own replaces point into staging/, which only exists in the git repo).
prepare_wrapper() {
  log "preparing wrapper module in $SRC"
  local go_version gomod
  go_version=$(go env GOVERSION | sed -E 's/^go([0-9]+\.[0-9]+(\.[0-9]+)?).*/\1/')
  sed -e "s/@K8S_VERSION@/$K8S_VERSION/" -e "s/@ETCD_VERSION@/$ETCD_VERSION/" \
      -e "s/@GO_VERSION@/$go_version/" "$HERE/wrapper/go.mod.in" >"$SRC/go.mod"
  cp "$HERE/wrapper/tools.go" "$SRC/tools.go"
  rm -f "$SRC/go.sum"
  gomod=$(k8s_gomod)
  local -a edits=()
  local mod
  while read -r mod; do
    edits+=("-replace=$mod=$mod@$STAGING_VERSION")
  done < <(go mod edit -json "$gomod" |
    jq -r '.Require[] | select(.Version == "v0.0.0" and (.Path | startswith("k8s.io/"))) | .Path')
  (( ${#edits[@]} > 0 )) || die "found no k8s.io/* v0.0.0 requirements in $gomod"
  log "replacing ${#edits[@]} staging modules with their $STAGING_VERSION releases"
  (cd "$SRC" && go mod edit "${edits[@]}")
}

k8s_ldflags() {
  local date flags="-s -w" pkg
  date=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | jq -r .Info | xargs jq -r .Time)
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$K8S_MAJOR -X $pkg.gitMinor=$K8S_MINOR"
    flags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$date"
  done
  echo "$flags"
}

# go build into a temp name, then rename, so an interrupted build never leaves a broken binary.
build() {
  local name=$1 pkg=$2 ldflags=$3 start=$SECONDS
  log "building $name ($pkg) ..."
  (cd "$SRC" && nice -n 5 go build -p "$PARALLEL" -trimpath -ldflags "$ldflags" -o "$BIN/.$name.tmp" "$pkg")
  mv -f "$BIN/.$name.tmp" "$BIN/$name"
  log "built $name in $((SECONDS - start))s: $(reported_version "$name" --version)"
}

if ! (k8s_all_ok && etcd_ok); then
  prepare_wrapper
  log "resolving and downloading the module graph (first run: several hundred MB)"
  (cd "$SRC" && go list -deps go.etcd.io/etcd/server/v3 \
    "${K8S_COMMANDS[@]/#/k8s.io/kubernetes/cmd/}" >/dev/null)
  LDFLAGS=$(k8s_ldflags)
  etcd_ok || build etcd go.etcd.io/etcd/server/v3 "-s -w"
  # Servers first: the test control plane needs only those (kubelet alone takes minutes cold).
  for name in "${K8S_COMMANDS[@]}"; do
    k8s_ok "$name" || build "$name" "k8s.io/kubernetes/cmd/$name" "$LDFLAGS"
  done
fi

if ! helm_ok; then
  # helm's go.mod has no replaces, so `go install pkg@version` works; stamp the client-go minor
  # as its default .Capabilities.KubeVersion the way helm's Makefile does.
  log "building helm $HELM_VERSION ..."
  start=$SECONDS
  helm_gomod=$(go mod download -json "helm.sh/helm/v3@$HELM_VERSION" | jq -er .GoMod)
  cg=$(go mod edit -json "$helm_gomod" | jq -er '.Require[] | select(.Path == "k8s.io/client-go") | .Version')
  cg_minor=$(cut -d. -f2 <<<"$cg")
  hl="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  hl+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    hl+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$cg_minor"
  done
  rm -rf "$ROOT/helm-gobin" && mkdir -p "$ROOT/helm-gobin"
  (cd "$ROOT" && GOFLAGS=-buildvcs=false GOBIN="$ROOT/helm-gobin" nice -n 5 \
    go install -p "$PARALLEL" -trimpath -ldflags "$hl" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION")
  mv -f "$ROOT/helm-gobin/helm" "$BIN/helm" && rmdir "$ROOT/helm-gobin"
  log "built helm in $((SECONDS - start))s: $(reported_version helm version --short)"
fi

for name in "${K8S_COMMANDS[@]}"; do k8s_ok "$name" || die "$name does not report $K8S_VERSION"; done
etcd_ok || die "etcd does not report $ETCD_VERSION"
helm_ok || die "helm does not report $HELM_VERSION"
log "done: kubernetes $K8S_VERSION, etcd $ETCD_VERSION, helm $HELM_VERSION in $BIN"
addons "$@"
echo "$BIN"
