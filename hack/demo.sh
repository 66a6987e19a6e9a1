#!/usr/bin/env bash
# `make demo`: bowline driving a stock Envoy on the example mesh of examples/mesh/, no cluster.
#
# Starts, all on loopback: bowline (serving a copy of examples/mesh/), two echo backends (v1 on
# 127.0.0.11:8080, v2 on 127.0.0.12:8080), a client-side Envoy whose listener bowline binds to
# 127.0.0.10:80, an ingress gateway Envoy serving the example's Gateway on 127.0.0.20:8080, and a
# client loop that prints every second which version answered how often. Edit the copy's
# virtual-service.yaml while it runs and watch the split change; curl the gateway meanwhile.
#
#   DEMO_SECONDS   how long the client loop runs (default 600)
#   XDS_ADDR       bowline's xDS address   (default 127.0.0.1:15010)
#   ADMIN_ADDR     bowline's admin address (default 127.0.0.1:15014)
#   ENVOY_ADMIN_PORT  the client Envoy's admin port on 127.0.0.1 (default 15000; the
#                     gateway's is the next one)
#   ENVOY_BIN      an Envoy 1.40 to use instead of installing one with hack/install-envoy.sh
#   DEMO_PROFILE   cargo profile to build and run (default release; `debug` builds faster)
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT="$PWD"
DEMO_SECONDS="${DEMO_SECONDS:-600}"
XDS_ADDR="${XDS_ADDR:-127.0.0.1:15010}"
ADMIN_ADDR="${ADMIN_ADDR:-127.0.0.1:15014}"
ENVOY_ADMIN_PORT="${ENVOY_ADMIN_PORT:-15000}"
CARGO="${CARGO:-cargo}"
DEMO_PROFILE="${DEMO_PROFILE:-release}"

say() { echo "demo: $*" >&2; }

if [ "$(id -u)" != 0 ] && [ "$(cat /proc/sys/net/ipv4/ip_unprivileged_port_start 2>/dev/null || echo 1024)" -gt 80 ]; then
    say "warning: the client listener binds 127.0.0.10:80, which needs root (or"
    say "         sysctl net.ipv4.ip_unprivileged_port_start=80); Envoy will reject it otherwise"
fi

say "building bowline and the example binaries ($DEMO_PROFILE)"
if [ "$DEMO_PROFILE" = debug ]; then
    "$CARGO" build --bin bowline --examples
else
    "$CARGO" build --profile "$DEMO_PROFILE" --bin bowline --examples
fi
BIN="$ROOT/target/$DEMO_PROFILE"
ENVOY="${ENVOY_BIN:-$(hack/install-envoy.sh)}"

DIR="$(mktemp -d "${TMPDIR:-/tmp}/bowline-demo.XXXXXX")"
cp -r examples/mesh "$DIR/mesh"

PIDS=()
cleanup() {
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    say "stopped; logs are in $DIR"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Every process also stops on its own a little after the client loop would.
LIFETIME=$((DEMO_SECONDS + 60))

NO_COLOR=1 timeout "$LIFETIME" "$BIN/bowline" serve --config-dir "$DIR/mesh" --xds-addr "$XDS_ADDR" --admin-addr "$ADMIN_ADDR" \
    >"$DIR/bowline.log" 2>&1 &
PIDS+=($!)
"$BIN/examples/echo" --addr 127.0.0.11:8080 --name v1 --seconds "$LIFETIME" >"$DIR/echo-v1.log" 2>&1 &
PIDS+=($!)
"$BIN/examples/echo" --addr 127.0.0.12:8080 --name v2 --seconds "$LIFETIME" >"$DIR/echo-v2.log" 2>&1 &
PIDS+=($!)

"$BIN/bowline" bootstrap --type sidecar --name client-0 --namespace demo --ip 127.0.0.10 \
    --labels app=client --service-account client --xds-addr "$XDS_ADDR" \
    --admin-port "$ENVOY_ADMIN_PORT" --interception-mode NONE >"$DIR/envoy-bootstrap.json"
timeout "$LIFETIME" "$ENVOY" -c "$DIR/envoy-bootstrap.json" --disable-hot-restart \
    --log-level warning --concurrency 1 >"$DIR/envoy.log" 2>&1 &
PIDS+=($!)

"$BIN/bowline" bootstrap --type router --name ingress-0 --namespace demo --ip 127.0.0.20 \
    --labels istio=ingressgateway --service-account ingress --xds-addr "$XDS_ADDR" \
    --admin-port "$((ENVOY_ADMIN_PORT + 1))" >"$DIR/gateway-bootstrap.json"
timeout "$LIFETIME" "$ENVOY" -c "$DIR/gateway-bootstrap.json" --disable-hot-restart \
    --log-level warning --concurrency 1 >"$DIR/gateway.log" 2>&1 &
PIDS+=($!)

# wait_for HOST PORT WHAT: until something listens there (30 s), or a process exits.
wait_for() {
    say "waiting for $3 on $1:$2"
    for _ in $(seq 1 300); do
        if (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; then
            return 0
        fi
        for pid in "${PIDS[@]}"; do
            if ! kill -0 "$pid" 2>/dev/null; then
                say "a process exited early; logs in $DIR:"
                tail -n 20 "$DIR"/*.log >&2
                exit 1
            fi
        done
        sleep 0.1
    done
    say "$3 did not come up in 30s; logs in $DIR:"
    tail -n 20 "$DIR"/*.log >&2
    exit 1
}
wait_for 127.0.0.10 80 "the client Envoy's listener"
wait_for 127.0.0.20 8080 "the gateway's listener"

say "one second of requests through the ingress gateway (Host: echo.example, 127.0.0.20:8080):"
"$BIN/examples/client" --addr 127.0.0.20:8080 --host echo.example --seconds 1

cat >&2 <<EOF

  bowline serves:   $DIR/mesh
  edit $DIR/mesh/virtual-service.yaml to change the split (e.g. weights 50/50)
  ingress gateway:  curl -H 'Host: echo.example' http://127.0.0.20:8080/   (examples/mesh/gateway.yaml)
  bowline admin:    http://$ADMIN_ADDR/debug/syncz   Envoy admin: http://127.0.0.1:$ENVOY_ADMIN_PORT/
  logs:             $DIR/*.log
  running for ${DEMO_SECONDS}s (DEMO_SECONDS=N to change); Ctrl-C stops everything

EOF

"$BIN/examples/client" --addr 127.0.0.10:80 --host echo --seconds "$DEMO_SECONDS"
