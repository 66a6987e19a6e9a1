# bowline — see README.md.
#
#   make demo    run the example mesh (bowline + stock Envoy + two backends + a client loop)
#   make test    install Envoy 1.40 (cached outside the tree) and run every test
#   make build   release build
#   make fmt     check formatting          make lint   clippy, warnings are errors
#   make kube-env  build (or reuse) etcd, kube-apiserver, kube-controller-manager and kubectl,
#                  cached outside the tree; see hack/kube-env.sh for start/stop
#   make istio-tools  build (or reuse) Istio's istioctl and pilot-agent, cached outside the tree
#                  (`make test` also exports ISTIO_SOURCE, the pinned istio.io/istio module's source,
#                  whose Grafana dashboard the metrics tests read)
#
# UPDATE_GOLDEN=1 make test rewrites the golden files under testdata/translate/ and testdata/inject/.
# TEST_ARGS are passed to cargo test, e.g. make test TEST_ARGS='--test integration -- e2e::split'.

CARGO ?= cargo
BOWLINE_CACHE ?= $(HOME)/.cache/bowline
ISTIO_CORPUS ?= $(CURDIR)/../shared/istio
TEST_ARGS ?=
export BOWLINE_CACHE ISTIO_CORPUS

.PHONY: all build test demo envoy kube-env istio-tools fmt lint clean

all: build

build:
	$(CARGO) build --release

# Prints the path of the cached Envoy binary, installing it first if needed.
envoy:
	@hack/install-envoy.sh

test:
	@ENVOY_BIN="$$(hack/install-envoy.sh)" && export ENVOY_BIN && \
	KUBE_ENV_BIN="$$(hack/kube-env.sh build)" && export KUBE_ENV_BIN && \
	ISTIO_TOOLS_BIN="$$(hack/istio-tools.sh build)" && export ISTIO_TOOLS_BIN && \
	ISTIO_SOURCE="$$(hack/istio-tools.sh source)" && export ISTIO_SOURCE && \
	echo "make test: ENVOY_BIN=$$ENVOY_BIN KUBE_ENV_BIN=$$KUBE_ENV_BIN ISTIO_TOOLS_BIN=$$ISTIO_TOOLS_BIN ISTIO_SOURCE=$$ISTIO_SOURCE ISTIO_CORPUS=$(ISTIO_CORPUS)" && \
	$(CARGO) test $(TEST_ARGS)

demo:
	hack/demo.sh

# Prints the directory of the cached Kubernetes binaries, building them first if needed.
kube-env:
	@hack/kube-env.sh build

# Prints the directory of the cached istioctl and pilot-agent, building them first if needed.
istio-tools:
	@hack/istio-tools.sh build

fmt:
	$(CARGO) fmt --check

lint:
	$(CARGO) clippy --all-targets -- -D warnings

clean:
	$(CARGO) clean
