#!/usr/bin/env bash
# A real Kubernetes API for tests, without a kubelet: etcd + kube-apiserver (+ optionally
# kube-controller-manager) on 127.0.0.1.
#
# Pinned versions (override with the variables below):
#   Kubernetes v1.37.2  (kube-apiserver, kube-controller-manager, kubectl) -- the newest minor that
#                       both the Go module proxy serves and the k8s-openapi 0.29 crate covers (v1_37)
#   etcd       v3.7.3   (the server binary, main package go.etcd.io/etcd/server/v3)
#
# The binaries are built from the Go modules k8s.io/kubernetes and go.etcd.io/etcd/server/v3 with
# the machine's Go; nothing but the Go module proxy is needed. k8s.io/kubernetes points its staging
# modules (k8s.io/api, k8s.io/client-go, ...) at ./staging with `replace`, so `go install @version`
# cannot build it: a throwaway build module under the cache requires k8s.io/kubernetes and pins
# every staging module it names to the matching v0.Y.Z release. The binaries are cached under
#   $BOWLINE_CACHE/kube/k8s-<version>_etcd-<version>/bin/
# and a later run with the same pins builds nothing.
#
# Usage:
#   hack/kube-env.sh build        build (or reuse) the binaries; prints the bin directory
#   hack/kube-env.sh start DIR    start etcd, kube-apiserver and kube-controller-manager with their
#                                 data, certificates, logs and pids in DIR; waits for /readyz and
#                                 prints the path of the admin kubeconfig, DIR/kubeconfig
#   hack/kube-env.sh stop DIR     stop what `start DIR` started (TERM, then KILL), remove the pids
#   hack/kube-env.sh env DIR      print shell assignments for a started DIR (KUBECONFIG, ports, ...)
#   hack/kube-env.sh apiserver-stop DIR, apiserver-start DIR
#                                 stop only kube-apiserver (an outage), start it again as before
# Progress goes to stderr, the one path to stdout: KUBECONFIG="$(hack/kube-env.sh start "$d")".
#
# What `start` sets up:
#   * a CA, the apiserver serving certificate (127.0.0.1, localhost, kubernetes.default.svc...),
#     a client certificate for user kube-env-admin in group system:masters (DIR/kubeconfig) and a
#     static bearer token for the same user (DIR/pki/admin-token), all made with openssl;
#   * the service-account key pair (--service-account-key-file / -signing-key-file / -issuer);
#   * authorization Node,RBAC; the default admission plugins, which include MutatingAdmissionWebhook
#     and ValidatingAdmissionWebhook. Webhooks with clientConfig.url https://127.0.0.1:<port> are
#     called directly: no cluster DNS, service proxy or aggregator routing is involved;
#   * kube-controller-manager (unless KUBE_ENV_CONTROLLER_MANAGER=0) with controllers that need no
#     kubelet or cloud: $KUBE_ENV_CONTROLLERS below. EndpointSlices therefore come from the real
#     controller. It lists a Pod in a Service's EndpointSlice only when the Pod has status.podIP and
#     its spec.nodeName names an existing Node object; no kubelet runs, so tests create the Node and
#     set Pod status themselves (`kubectl patch pod --subresource=status`).
#
# Environment:
#   BOWLINE_CACHE                 cache root (default $HOME/.cache/bowline)
#   KUBE_VERSION, ETCD_VERSION    pins (default v1.37.2, v3.7.3)
#   CGO_ENABLED                   default 0 (static binaries)
#   GOMODCACHE, GOCACHE, GOFLAGS  passed to go as usual (e.g. GOFLAGS=-p=2)
#   KUBE_ENV_APISERVER_PORT, KUBE_ENV_ETCD_PORT, KUBE_ENV_ETCD_PEER_PORT,
#   KUBE_ENV_CONTROLLER_MANAGER_PORT
#                                 ports on 127.0.0.1 (default: a free port each)
#   KUBE_ENV_SERVICE_CIDR         --service-cluster-ip-range (default 10.96.0.0/16)
#   KUBE_ENV_CONTROLLER_MANAGER   1 (default) to start kube-controller-manager, 0 not to
#   KUBE_ENV_CONTROLLERS          its --controllers (default below)
#   KUBE_ENV_TIMEOUT              seconds each component gets to come up (default 120)
set -euo pipefail

KUBE_VERSION="${KUBE_VERSION:-v1.37.2}"
ETCD_VERSION="${ETCD_VERSION:-v3.7.3}"
CACHE="${BOWLINE_CACHE:-$HOME/.cache/bowline}"
KUBE_ROOT="$CACHE/kube/k8s-${KUBE_VERSION}_etcd-${ETCD_VERSION}"
BIN="$KUBE_ROOT/bin"
BINARIES="etcd kube-apiserver kube-controller-manager kubectl"

KUBE_ENV_TIMEOUT="${KUBE_ENV_TIMEOUT:-120}"
KUBE_ENV_SERVICE_CIDR="${KUBE_ENV_SERVICE_CIDR:-10.96.0.0/16}"
KUBE_ENV_CONTROLLER_MANAGER="${KUBE_ENV_CONTROLLER_MANAGER:-1}"
KUBE_ENV_CONTROLLERS="${KUBE_ENV_CONTROLLERS:-serviceaccount-controller,serviceaccount-token-controller,root-ca-certificate-publisher-controller,namespace-controller,garbage-collector-controller,endpointslice-controller,endpointslice-mirroring-controller,endpoints-controller,deployment-controller,replicaset-controller,statefulset-controller,daemonset-controller,job-controller,cronjob-controller,disruption-controller,resourcequota-controller,clusterrole-aggregation-controller,ttl-after-finished-controller,service-cidr-controller,validatingadmissionpolicy-status-controller}"

log() { echo "kube-env: $*" >&2; }
die() { log "$*"; exit 1; }

usage() {
    sed -n '/^# Usage:/,/^# Progress/p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

# --- build -------------------------------------------------------------------------------------

have_binaries() {
    local b
    [ -f "$BIN/.complete" ] || return 1
    for b in $BINARIES; do [ -x "$BIN/$b" ] || return 1; done
}

# Prints the path of the downloaded go.mod of module $1 at version $2 (and downloads its source).
module_gomod() {
    local json
    json="$(go mod download -json "$1@$2")" || die "go mod download $1@$2 failed: $json"
    sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p' <<<"$json"
}

# The `go` and `godebug` directives of a go.mod, for a build module to inherit.
go_directives() {
    awk '/^go[[:space:]]/ {print} /^godebug[[:space:]]*\(/ {b=1} b {print} b && /^\)/ {b=0}
         /^godebug[[:space:]]+[^(]/ {print}' "$1"
}

# Module paths that a go.mod both requires and replaces with a local directory: its in-repo
# siblings, which a build module must pin to their released versions. (Siblings that it does not
# require, such as k8s.io/sample-cli-plugin, are not always published.)
local_replacements() {
    awk '{ line = $0; sub(/^replace[[:space:]]+/, "", line); split(line, f, /[[:space:]]+/)
           if (f[1] == "") { f[1] = f[2]; f[2] = f[3]; f[3] = f[4] } }
         f[2] == "=>" && f[3] ~ /^\.\.?\// { local[f[1]] = 1; next }
         { sub(/^require[[:space:]]+/, "") }
         $2 ~ /^v[0-9]/ { req[$1] = 1 }
         END { for (m in local) if (m in req) print m }' "$1" | sort
}

# Writes go.mod of build module $1: requires $2@$3 and pins each module in $5 to version $4.
write_build_module() {
    local dir="$1" mod="$2" ver="$3" pinver="$4" pins="$5" gomod="$6" m
    mkdir -p "$dir"
    {
        echo "// Generated by hack/kube-env.sh: builds $mod $ver."
        echo "module kubeenvbuild"
        echo
        go_directives "$gomod"
        echo
        echo "require $mod $ver"
        echo
        echo "require ("
        for m in $pins; do echo "	$m $pinver"; done
        echo ")"
        echo
        echo "replace ("
        for m in $pins; do echo "	$m => $m $pinver"; done
        echo ")"
    } >"$dir/go.mod"
    touch "$dir/go.sum"
}

build() {
    have_binaries && return 0
    mkdir -p "$KUBE_ROOT"
    # One build at a time per cache; the lock's descriptor is closed with the subshell, so that no
    # component started later inherits it.
    if command -v flock >/dev/null; then
        (
            flock 9
            build_locked
        ) 9>"$KUBE_ROOT/.lock"
    else
        (build_locked)
    fi
}

build_locked() {
    have_binaries && return 0
    command -v go >/dev/null || die "go not found on PATH (need Go >= the go directive of k8s.io/kubernetes $KUBE_VERSION)"
    local start_s=$SECONDS
    export CGO_ENABLED="${CGO_ENABLED:-0}"
    log "building Kubernetes $KUBE_VERSION and etcd $ETCD_VERSION with $(go version) into $BIN (takes a while)"

    local work="$KUBE_ROOT/build" tmpbin="$KUBE_ROOT/bin.tmp"
    rm -rf "$tmpbin"
    mkdir -p "$work" "$tmpbin"
    # Outside any module, and go.work off, so that `go mod download` and the builds see only ours.
    export GOWORK=off
    cd "$work"

    # Kubernetes: its staging modules are released as k8s.io/<name> v0.<minor>.<patch>.
    local kgomod staging sver
    kgomod="$(module_gomod k8s.io/kubernetes "$KUBE_VERSION")"
    [ -f "$kgomod" ] || die "no go.mod for k8s.io/kubernetes@$KUBE_VERSION"
    staging="$(local_replacements "$kgomod")"
    [ -n "$staging" ] || die "found no staging replacements in $kgomod"
    sver="v0.${KUBE_VERSION#v1.}"
    write_build_module "$work/kubernetes" k8s.io/kubernetes "$KUBE_VERSION" "$sver" "$staging" "$kgomod"

    local major minor build_date ldflags key val
    major="${KUBE_VERSION#v}"; major="${major%%.*}"
    minor="${KUBE_VERSION#v*.}"; minor="${minor%%.*}"
    # The release time the proxy records, so that rebuilds are reproducible.
    build_date="$(sed -n 's/.*"Time":"\([^"]*\)".*/\1/p' "${kgomod%.mod}.info" 2>/dev/null || true)"
    build_date="${build_date:-1970-01-01T00:00:00Z}"
    build_date="${build_date%%.*}"; build_date="${build_date%Z}Z"
    ldflags="-s -w"
    for key in gitVersion:"$KUBE_VERSION" gitMajor:"$major" gitMinor:"$minor" gitTreeState:clean \
        buildDate:"$build_date"; do
        val="${key#*:}"; key="${key%%:*}"
        ldflags+=" -X k8s.io/component-base/version.$key=$val -X k8s.io/client-go/pkg/version.$key=$val"
    done
    log "go build k8s.io/kubernetes/cmd/{kube-apiserver,kube-controller-manager,kubectl}@$KUBE_VERSION (staging $sver)"
    (cd "$work/kubernetes" && go build -mod=mod -trimpath -ldflags "$ldflags" -o "$tmpbin/" \
        k8s.io/kubernetes/cmd/kube-apiserver \
        k8s.io/kubernetes/cmd/kube-controller-manager \
        k8s.io/kubernetes/cmd/kubectl) || die "building Kubernetes $KUBE_VERSION failed"

    # etcd: the server module's siblings (api, client, pkg) are released with the same version.
    local egomod siblings
    egomod="$(module_gomod go.etcd.io/etcd/server/v3 "$ETCD_VERSION")"
    [ -f "$egomod" ] || die "no go.mod for go.etcd.io/etcd/server/v3@$ETCD_VERSION"
    siblings="$(local_replacements "$egomod")"
    write_build_module "$work/etcd" go.etcd.io/etcd/server/v3 "$ETCD_VERSION" "$ETCD_VERSION" "$siblings" "$egomod"
    log "go build go.etcd.io/etcd/server/v3@$ETCD_VERSION"
    (cd "$work/etcd" && go build -mod=mod -trimpath -ldflags "-s -w" -o "$tmpbin/etcd" \
        go.etcd.io/etcd/server/v3) || die "building etcd $ETCD_VERSION failed"

    local b
    for b in $BINARIES; do [ -x "$tmpbin/$b" ] || die "build produced no $b"; done
    "$tmpbin/kubectl" version --client 2>/dev/null | grep -q "$KUBE_VERSION" ||
        die "kubectl does not report $KUBE_VERSION: $("$tmpbin/kubectl" version --client 2>&1)"
    echo "kubernetes $KUBE_VERSION etcd $ETCD_VERSION $(go env GOVERSION)" >"$tmpbin/.complete"
    rm -rf "$BIN"
    mv "$tmpbin" "$BIN"
    log "built in $((SECONDS - start_s))s"
}

# --- start / stop ------------------------------------------------------------------------------

USED_PORTS=" "
PORT=""

# Sets PORT to $1 if given (and not 0), else to a TCP port on 127.0.0.1 that nothing uses (in any
# state) and that was not handed out before in this run. Free ports are picked outside the
# kernel's ephemeral range, so that no outgoing connection (say, the apiserver's to etcd) takes one
# between now and the moment its server binds it.
pick_port() {
    local p hex _ lo=32768 hi=60999 span
    if [ -n "${1:-}" ] && [ "$1" != 0 ]; then
        PORT="$1"
        USED_PORTS+="$PORT "
        return 0
    fi
    read -r lo hi </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || true
    if [ "$lo" -gt 12000 ]; then span=$((lo - 10000)); lo=10000; else lo=$((hi + 1)); span=$((65535 - hi)); fi
    [ "$span" -gt 100 ] || die "no port range outside the ephemeral range $(cat /proc/sys/net/ipv4/ip_local_port_range)"
    for _ in $(seq 1 200); do
        p=$((lo + (RANDOM * 32768 + RANDOM) % span))
        case "$USED_PORTS" in *" $p "*) continue ;; esac
        hex="$(printf ':%04X' "$p")"
        if ! awk '{print $2}' /proc/net/tcp /proc/net/tcp6 2>/dev/null | grep -qi -- "$hex\$"; then
            PORT="$p"
            USED_PORTS+="$p "
            return 0
        fi
    done
    die "found no free port"
}

# Is the process in pid file $1 (DIR/<name>.pid) alive and still the one we started? Every
# component gets paths under DIR in its arguments.
pid_alive() {
    local pid dir
    [ -f "$1" ] || return 1
    dir="$(dirname "$1")"
    pid="$(cat "$1")"
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$dir/" || return 1
}

# Whether process $1 runs (a zombie, killed but not yet reaped by whoever adopted it, does not).
running() {
    kill -0 "$1" 2>/dev/null || return 1
    local state
    state="$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)"
    [ "$state" != Z ]
}

# Sends TERM to the components named in $2.. of DIR $1 at once, waits up to 10s for them to
# exit, then KILLs what is left; removes their pid files.
stop_components() {
    local dir="$1" name pid _ pids="" alive
    shift
    for name in "$@"; do
        if pid_alive "$dir/$name.pid"; then
            pid="$(cat "$dir/$name.pid")"
            log "stopping $name (pid $pid)"
            kill -TERM "$pid" 2>/dev/null || true
            pids+=" $pid"
        fi
    done
    for _ in $(seq 1 100); do
        alive=""
        for pid in $pids; do running "$pid" && alive+=" $pid"; done
        pids="$alive"
        [ -n "$pids" ] || break
        sleep 0.1
    done
    if [ -n "$pids" ]; then
        log "pids$pids did not stop in 10s, killing them"
        for pid in $pids; do kill -KILL "$pid" 2>/dev/null || true; done
        sleep 0.5
        for pid in $pids; do running "$pid" && die "could not stop pid $pid"; done
    fi
    for name in "$@"; do rm -f "$dir/$name.pid"; done
}

stop() {
    local dir="$1"
    if [ ! -d "$dir" ]; then
        log "no such directory: $dir (nothing to stop)"
        return 0
    fi
    dir="$(cd "$dir" && pwd)"
    # The apiserver's clients and the apiserver first, then its storage.
    stop_components "$dir" kube-controller-manager kube-apiserver
    stop_components "$dir" etcd
}

# Starts $BIN/$2 in its own session with output to DIR/$2.log and its pid in DIR/$2.pid.
launch() {
    local dir="$1" name="$2"
    shift 2
    # The command line, one argument per line, for `apiserver-start`.
    printf '%s\n' "$@" >"$dir/$name.args"
    setsid "$BIN/$name" "$@" >>"$dir/$name.log" 2>&1 </dev/null &
    echo $! >"$dir/$name.pid"
}

# Kills only the kube-apiserver of DIR (an outage: etcd and the data stay).
apiserver_stop() {
    local dir="$1" pid
    [ -d "$dir" ] || die "no such directory: $dir"
    pid_alive "$dir/kube-apiserver.pid" || die "kube-apiserver is not running for $dir"
    pid="$(cat "$dir/kube-apiserver.pid")"
    log "killing kube-apiserver (pid $pid)"
    kill -KILL "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do running "$pid" || break; sleep 0.1; done
    running "$pid" && die "could not stop pid $pid"
    rm -f "$dir/kube-apiserver.pid"
}

# Starts the kube-apiserver of DIR again with the command line it was first started with, and
# waits for /readyz.
apiserver_start() {
    local dir="$1" args=() line
    [ -f "$dir/kube-apiserver.args" ] || die "no $dir/kube-apiserver.args: was \`$0 start $dir\` run?"
    pid_alive "$dir/kube-apiserver.pid" && die "kube-apiserver is already running for $dir"
    while IFS= read -r line; do args+=("$line"); done <"$dir/kube-apiserver.args"
    # shellcheck disable=SC1091
    . "$dir/env"
    launch "$dir" kube-apiserver "${args[@]}"
    wait_for "$dir" kube-apiserver "ready" \
        curl -fsS --cacert "$KUBE_ENV_CA" --cert "$dir/pki/admin.crt" --key "$dir/pki/admin.key" \
        "$KUBE_ENV_APISERVER/readyz"
}

# Fails `start` loudly: the log tail of component $1, then everything started is stopped.
fail_component() {
    local dir="$1" name="$2" why="$3"
    log "$name $why; last lines of $dir/$name.log:"
    tail -n 40 "$dir/$name.log" >&2 || true
    stop "$dir" || true
    exit 1
}

# Waits until command "${@:4}" succeeds while component $2 lives, for at most KUBE_ENV_TIMEOUT.
wait_for() {
    local dir="$1" name="$2" what="$3"
    shift 3
    local deadline=$((SECONDS + KUBE_ENV_TIMEOUT))
    until "$@" >/dev/null 2>&1; do
        pid_alive "$dir/$name.pid" || fail_component "$dir" "$name" "exited before $what"
        [ "$SECONDS" -lt "$deadline" ] ||
            fail_component "$dir" "$name" "was not $what within ${KUBE_ENV_TIMEOUT}s"
        sleep 0.2
    done
}

# openssl helpers: $1 = base name under DIR/pki.
make_key() { openssl genrsa -out "$1.key" 2048 2>/dev/null; }
sign_cert() { # base subject extensions-file
    openssl req -new -key "$1.key" -subj "$2" -out "$1.csr" 2>/dev/null
    openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
        -sha256 -extfile "$3" -out "$1.crt" 2>/dev/null
    rm -f "$1.csr"
}

make_pki() {
    local pki="$1" first_service_ip="$2"
    mkdir -p "$pki"
    (
        cd "$pki"
        [ -f ca.crt ] && [ -f apiserver.crt ] && [ -f admin.crt ] && [ -f controller-manager.crt ] &&
            [ -f sa.key ] && [ -f admin-token ] && exit 0
        umask 077
        make_key ca
        openssl req -x509 -new -key ca.key -subj "/CN=kube-env-ca" -days 3650 -sha256 \
            -addext "basicConstraints=critical,CA:TRUE" \
            -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" -out ca.crt 2>/dev/null
        cat >server.ext <<EOF
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:::1,IP:$first_service_ip,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
EOF
        cat >client.ext <<EOF
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth
EOF
        make_key apiserver
        sign_cert apiserver "/CN=kube-apiserver" server.ext
        make_key admin
        sign_cert admin "/O=system:masters/CN=kube-env-admin" client.ext
        make_key controller-manager
        sign_cert controller-manager "/O=system:masters/CN=system:kube-controller-manager" client.ext
        make_key sa
        openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
        openssl rand -hex 32 >admin-token
        echo "$(cat admin-token),kube-env-admin,kube-env-admin,\"system:masters\"" >tokens.csv
        rm -f server.ext client.ext ca.srl
    ) || die "generating certificates in $pki failed"
}

# Writes kubeconfig $1 for user cert $3 (under pki $4) against server $2.
write_kubeconfig() {
    local out="$1" server="$2" user="$3" pki="$4"
    cat >"$out" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: kube-env
  cluster:
    server: $server
    certificate-authority: $pki/ca.crt
users:
- name: $user
  user:
    client-certificate: $pki/$user.crt
    client-key: $pki/$user.key
contexts:
- name: kube-env
  context:
    cluster: kube-env
    user: $user
current-context: kube-env
EOF
}

# The first address of an IPv4 CIDR (the apiserver's `kubernetes` Service gets it).
first_ip() {
    local ip="${1%/*}" a b c d
    IFS=. read -r a b c d <<<"$ip"
    echo "$a.$b.$c.$((d + 1))"
}

start() {
    local dir="$1"
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    local name
    for name in etcd kube-apiserver kube-controller-manager; do
        pid_alive "$dir/$name.pid" && die "$name is already running for $dir (pid $(cat "$dir/$name.pid")); stop it first"
        rm -f "$dir/$name.pid"
    done
    command -v openssl >/dev/null || die "openssl not found"
    command -v curl >/dev/null || die "curl not found"
    build
    local t0=$SECONDS

    local etcd_port etcd_peer_port api_port kcm_port pki="$dir/pki"
    pick_port "${KUBE_ENV_ETCD_PORT:-}"; etcd_port="$PORT"
    pick_port "${KUBE_ENV_ETCD_PEER_PORT:-}"; etcd_peer_port="$PORT"
    pick_port "${KUBE_ENV_APISERVER_PORT:-}"; api_port="$PORT"
    pick_port "${KUBE_ENV_CONTROLLER_MANAGER_PORT:-}"; kcm_port="$PORT"
    make_pki "$pki" "$(first_ip "$KUBE_ENV_SERVICE_CIDR")"
    # Any failure from here on must not leave a process behind.
    trap 'log "start failed"; stop "$dir" >/dev/null 2>&1 || true' ERR
    trap 'log "interrupted"; stop "$dir" >/dev/null 2>&1 || true; exit 130' INT TERM

    log "starting etcd on 127.0.0.1:$etcd_port"
    launch "$dir" etcd \
        --name=kube-env \
        --data-dir="$dir/etcd" \
        --listen-client-urls="http://127.0.0.1:$etcd_port" \
        --advertise-client-urls="http://127.0.0.1:$etcd_port" \
        --listen-peer-urls="http://127.0.0.1:$etcd_peer_port" \
        --initial-advertise-peer-urls="http://127.0.0.1:$etcd_peer_port" \
        --initial-cluster="kube-env=http://127.0.0.1:$etcd_peer_port" \
        --unsafe-no-fsync \
        --log-level=warn
    wait_for "$dir" etcd "healthy" \
        sh -c "curl -fsS 'http://127.0.0.1:$etcd_port/health' | grep -q '\"health\":\"true\"'"

    log "starting kube-apiserver on https://127.0.0.1:$api_port"
    local t_api=$SECONDS
    launch "$dir" kube-apiserver \
        --etcd-servers="http://127.0.0.1:$etcd_port" \
        --bind-address=127.0.0.1 \
        --advertise-address=127.0.0.1 \
        --secure-port="$api_port" \
        --tls-cert-file="$pki/apiserver.crt" \
        --tls-private-key-file="$pki/apiserver.key" \
        --client-ca-file="$pki/ca.crt" \
        --token-auth-file="$pki/tokens.csv" \
        --service-account-key-file="$pki/sa.pub" \
        --service-account-signing-key-file="$pki/sa.key" \
        --service-account-issuer=https://kubernetes.default.svc.cluster.local \
        --authorization-mode=Node,RBAC \
        --enable-admission-plugins=NamespaceLifecycle,ServiceAccount,MutatingAdmissionWebhook,ValidatingAdmissionWebhook \
        --service-cluster-ip-range="$KUBE_ENV_SERVICE_CIDR" \
        --endpoint-reconciler-type=none \
        --allow-privileged=true \
        --profiling=false
    write_kubeconfig "$dir/kubeconfig" "https://127.0.0.1:$api_port" admin "$pki"
    wait_for "$dir" kube-apiserver "ready" \
        curl -fsS --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" \
        "https://127.0.0.1:$api_port/readyz"
    log "kube-apiserver ready $((SECONDS - t_api))s after its start"

    if [ "$KUBE_ENV_CONTROLLER_MANAGER" = 1 ]; then
        write_kubeconfig "$dir/controller-manager.kubeconfig" "https://127.0.0.1:$api_port" controller-manager "$pki"
        log "starting kube-controller-manager on https://127.0.0.1:$kcm_port (controllers: \$KUBE_ENV_CONTROLLERS)"
        launch "$dir" kube-controller-manager \
            --kubeconfig="$dir/controller-manager.kubeconfig" \
            --bind-address=127.0.0.1 \
            --secure-port="$kcm_port" \
            --cert-dir="$dir/controller-manager-certs" \
            --controllers="$KUBE_ENV_CONTROLLERS" \
            --use-service-account-credentials=false \
            --service-account-private-key-file="$pki/sa.key" \
            --root-ca-file="$pki/ca.crt" \
            --service-cluster-ip-range="$KUBE_ENV_SERVICE_CIDR" \
            --leader-elect=false \
            --profiling=false
        wait_for "$dir" kube-controller-manager "healthy" \
            curl -fsSk "https://127.0.0.1:$kcm_port/healthz"
        # Pods are admitted only once their namespace has its `default` ServiceAccount.
        wait_for "$dir" kube-controller-manager "creating ServiceAccount default/default" \
            "$BIN/kubectl" --kubeconfig "$dir/kubeconfig" -n default get serviceaccount default
    else
        rm -f "$dir/controller-manager.kubeconfig"
    fi
    trap - ERR INT TERM

    cat >"$dir/env" <<EOF
KUBECONFIG=$dir/kubeconfig
KUBE_ENV_BIN=$BIN
KUBE_ENV_APISERVER=https://127.0.0.1:$api_port
KUBE_ENV_APISERVER_PORT=$api_port
KUBE_ENV_ETCD_PORT=$etcd_port
KUBE_ENV_CONTROLLER_MANAGER_PORT=$([ "$KUBE_ENV_CONTROLLER_MANAGER" = 1 ] && echo "$kcm_port")
KUBE_ENV_CA=$pki/ca.crt
KUBE_ENV_TOKEN_FILE=$pki/admin-token
EOF
    log "up in $((SECONDS - t0))s; KUBECONFIG=$dir/kubeconfig (stop with: $0 stop $dir)"
    echo "$dir/kubeconfig"
}

cmd="${1:-}"
case "$cmd" in
build)
    [ $# -eq 1 ] || usage
    build
    echo "$BIN"
    ;;
start)
    [ $# -eq 2 ] || usage
    start "$2"
    ;;
stop)
    [ $# -eq 2 ] || usage
    stop "$2"
    ;;
apiserver-stop)
    [ $# -eq 2 ] || usage
    apiserver_stop "$2"
    ;;
apiserver-start)
    [ $# -eq 2 ] || usage
    apiserver_start "$2"
    ;;
env)
    [ $# -eq 2 ] || usage
    [ -f "$2/env" ] || die "no $2/env: was \`$0 start $2\` run?"
    cat "$2/env"
    ;;
*)
    usage
    ;;
esac
