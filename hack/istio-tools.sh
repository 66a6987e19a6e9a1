#!/usr/bin/env bash
# Istio's own command-line clients, built from source for tests: istioctl and pilot-agent (with
# the Envoy bootstrap template pilot-agent renders, envoy_bootstrap_tmpl.json, beside them).
#
# Pinned version (override with the variable below):
#   istio.io/istio v0.0.0-20260827124520-eed52ebb66ad  (the pseudo-version the Go module proxy
#                  serves for Istio's master of 2026-08-27; its VERSION file says 1.31)
#
# The binaries are built from the Go module istio.io/istio with the machine's Go; nothing but the
# Go module proxy is needed. The module's go.mod has no `replace` directives, so a plain
# `go install <main package>@<version>` builds it. Go's module and build caches (GOMODCACHE,
# GOCACHE) are the defaults, shared with hack/kube-env.sh. The binaries are cached under
#   $BOWLINE_CACHE/istio/<version>/bin/
# and a later run with the same pin builds nothing.
#
# Usage:
#   hack/istio-tools.sh build     build (or reuse) istioctl and pilot-agent; prints the bin directory
#   hack/istio-tools.sh source    download (or reuse) the module's source; prints its directory
#                                 (Go's module cache, read-only), e.g. for Istio's dashboards
# Progress goes to stderr, the one path to stdout: ISTIO_TOOLS_BIN="$(hack/istio-tools.sh build)".
#
# Environment:
#   BOWLINE_CACHE                 cache root (default $HOME/.cache/bowline)
#   ISTIO_VERSION                 the pin (default below)
#   CGO_ENABLED                   default 0 (static binaries)
#   GOMODCACHE, GOCACHE, GOFLAGS  passed to go as usual (e.g. GOFLAGS=-p=2)
set -euo pipefail

ISTIO_VERSION="${ISTIO_VERSION:-v0.0.0-20260827124520-eed52ebb66ad}"
CACHE="${BOWLINE_CACHE:-$HOME/.cache/bowline}"
ROOT="$CACHE/istio/$ISTIO_VERSION"
BIN="$ROOT/bin"
MAINS="istio.io/istio/istioctl/cmd/istioctl istio.io/istio/pilot/cmd/pilot-agent"
BINARIES="istioctl pilot-agent"

log() { echo "istio-tools: $*" >&2; }
die() { log "$*"; exit 1; }

usage() {
    sed -n '/^# Usage:/,/^# Progress/p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

# pilot-agent renders Envoy's bootstrap from Istio's template, which Istio's proxy image keeps
# at /var/lib/istio/envoy/envoy_bootstrap_tmpl.json; it is installed beside the binaries.
TEMPLATE="envoy_bootstrap_tmpl.json"

have_binaries() {
    local b
    [ -f "$BIN/.complete" ] || return 1
    for b in $BINARIES; do [ -x "$BIN/$b" ] || return 1; done
}

have_all() {
    have_binaries && [ -f "$BIN/$TEMPLATE" ]
}

# install_template <module dir> <bin dir>
install_template() {
    local src="$1/tools/packaging/common/envoy_bootstrap.json"
    [ -f "$src" ] || die "no Envoy bootstrap template at $src"
    cp "$src" "$2/$TEMPLATE.tmp" && mv "$2/$TEMPLATE.tmp" "$2/$TEMPLATE"
}

build() {
    have_all && return 0
    mkdir -p "$ROOT"
    # One build at a time per cache.
    if command -v flock >/dev/null; then
        (
            flock 9
            build_locked
        ) 9>"$ROOT/.lock"
    else
        (build_locked)
    fi
}

build_locked() {
    have_all && return 0
    command -v go >/dev/null || die "go not found on PATH (need Go >= the go directive of istio.io/istio $ISTIO_VERSION)"
    local start_s=$SECONDS
    export CGO_ENABLED="${CGO_ENABLED:-0}"
    # Outside any module, and go.work off: `go install pkg@version` uses istio.io/istio's go.mod.
    export GOWORK=off
    cd "$ROOT"
    local dir revision version
    dir="$(source_dir)"
    [ -f "$dir/VERSION" ] || die "no VERSION file in $dir"
    if have_binaries; then
        install_template "$dir" "$BIN"
        return 0
    fi
    log "building istioctl and pilot-agent of istio.io/istio $ISTIO_VERSION with $(go version) into $BIN (takes a while)"
    # What Istio's own build stamps in (common/scripts/report_build_info.sh): the VERSION file plus
    # -dev for an untagged build, the commit, and the tree state. A pseudo-version names only a
    # commit prefix; that prefix is the revision istioctl prints.
    revision="${ISTIO_VERSION##*-}"
    version="$(tr -d '[:space:]' <"$dir/VERSION")-dev"
    local ldflags="-s -w" kv
    for kv in buildVersion="$version" buildGitRevision="$revision" buildStatus=Clean \
        buildTag="$ISTIO_VERSION" buildHub=bowline-test buildOS="$(go env GOOS)" buildArch="$(go env GOARCH)"; do
        ldflags+=" -X istio.io/istio/pkg/version.$kv"
    done

    local tmpbin="$ROOT/bin.tmp" m pkgs=()
    rm -rf "$tmpbin"
    mkdir -p "$tmpbin"
    for m in $MAINS; do pkgs+=("$m@$ISTIO_VERSION"); done
    log "go install ${pkgs[*]}"
    GOBIN="$tmpbin" go install -trimpath -ldflags "$ldflags" "${pkgs[@]}" ||
        die "building istio.io/istio $ISTIO_VERSION failed"

    local b
    for b in $BINARIES; do [ -x "$tmpbin/$b" ] || die "build produced no $b"; done
    "$tmpbin/istioctl" version --remote=false 2>/dev/null | grep -qF "$version" ||
        die "istioctl does not report $version: $("$tmpbin/istioctl" version --remote=false 2>&1)"
    install_template "$dir" "$tmpbin"
    echo "istio.io/istio $ISTIO_VERSION ($version) $(go env GOVERSION)" >"$tmpbin/.complete"
    rm -rf "$BIN"
    mv "$tmpbin" "$BIN"
    log "built in $((SECONDS - start_s))s"
}

# The directory of the module's source in Go's module cache, downloaded if needed.
source_dir() {
    command -v go >/dev/null || die "go not found on PATH (needed to download istio.io/istio $ISTIO_VERSION)"
    local json dir
    json="$(cd / && GOWORK=off go mod download -json "istio.io/istio@$ISTIO_VERSION")" ||
        die "go mod download istio.io/istio@$ISTIO_VERSION failed: $json"
    dir="$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p' <<<"$json")"
    [ -n "$dir" ] && [ -f "$dir/go.mod" ] || die "go mod download named no source directory: $json"
    echo "$dir"
}

cmd="${1:-}"
case "$cmd" in
build)
    [ $# -eq 1 ] || usage
    build
    echo "$BIN"
    ;;
source)
    [ $# -eq 1 ] || usage
    log "source of istio.io/istio $ISTIO_VERSION"
    source_dir
    ;;
*)
    usage
    ;;
esac
