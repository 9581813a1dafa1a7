# Sourced by build.sh and build-addons.sh (set LOG_NAME first): where the binaries are cached, Go's
# caches, build parallelism and logging. Environment overrides: K8S_VERSION (the cache dir),
# CHORUS_CACHE, GOCACHE, GOMODCACHE, CONTROLPLANE_GO_PARALLEL (go build -p).
K8S_VERSION=${K8S_VERSION:-v1.36.3}
CACHE=${CHORUS_CACHE:-$HOME/.cache/chorus}
ROOT="$CACHE/controlplane/$K8S_VERSION"
BIN="$ROOT/bin"
export CGO_ENABLED=0
export GOCACHE=${GOCACHE:-$CACHE/go/build}
export GOMODCACHE=${GOMODCACHE:-$CACHE/go/mod}
PARALLEL=${CONTROLPLANE_GO_PARALLEL:-2}

log() { printf '[controlplane/%s +%ss] %s\n' "$LOG_NAME" "$SECONDS" "$*" >&2; }
die() { log "error: $*"; exit 1; }
