# rspark-operator: every target installs what it needs (pinned, cached under
# ~/.cache/rspark-operator) so `make dev` and `make test` work on a fresh machine.
SHELL := /bin/bash
VENV := .local/venv
PY := $(VENV)/bin/python
# The PATH you called make with: `make deploy` uses your own kubectl.
USER_PATH := $(PATH)
export PATH := $(CURDIR)/.local/bin:$(PATH)

.PHONY: venv tools cluster-up cluster-down cluster-status dev test test-unit test-integration e2e lint crds bench
.PHONY: manifests deploy images images-local images-prune lint-images e2e-kind docs chart lint-chart keycloak

venv:
	@bash hack/venv.sh

tools:
	@bash hack/system-packages.sh
	@bash hack/tools.sh

# KWOK_ONLY=1: the control plane, kwok nodes, S3 and the provisioner only, for the scale
# benchmarks (devtools/localcluster.py).
cluster-up: venv tools
	@$(PY) -m devtools.localcluster up $(if $(KWOK_ONLY),--kwok-only)

cluster-down: venv
	@$(PY) -m devtools.localcluster down

cluster-status: venv
	@$(PY) -m devtools.localcluster status

dev: venv tools
	@$(PY) -m devtools.deploy

test: venv tools
	@$(PY) -m pytest tests

test-unit: venv
	@$(PY) -m pytest -m unit tests

test-integration: venv tools
	@$(PY) -m pytest -m integration tests

# The end-to-end tests alone (tests/integration/e2e, also part of `make test`): JupyterLab
# workspaces on the real nodes, a browser through the ingress controller, Spark from R.
e2e: venv tools
	@$(PY) -m pytest -m e2e tests

# The local identity provider (devtools/keycloak.py), in the foreground; the cluster must be up.
keycloak: venv
	@$(PY) -m devtools.keycloak

lint: venv
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/ruff format --check .
	@$(VENV)/bin/mypy
	@bash hack/lint-manifests.sh

# docs/reference/*.md and manifests/base/settings.env from the code (devtools/reference.py);
# pure and fast, a unit test fails when one is stale.
docs: venv
	@$(PY) -m devtools.reference

# --- install: CRDs, manifests, images (docs/installation.md) ---

# Regenerate the workspace and SparkProfile CRDs from the pydantic models (a unit test
# fails when stale). Written to a temporary file first: a failed generation leaves the
# committed CRD as it was.
CRD_PLURALS := rstudioworkspaces sparkprofiles
crds: venv
	@for plural in $(CRD_PLURALS); do crd="crds/rspark.dev_$$plural.yaml"; \
	tmp="$$(mktemp $$crd.XXXXXX)"; \
	if $(PY) -m rspark_operator.crd $$plural > "$$tmp"; then chmod 644 "$$tmp" && mv "$$tmp" $$crd; \
	else rm -f "$$tmp"; echo "make crds: generation failed; $$crd left as it was" >&2; exit 1; fi; done

# Render the kustomize base (the CRDs come straight from crds/, no copy) with the pinned kubectl.
manifests: tools
	@kubectl kustomize manifests/base

# The Helm chart (charts/rspark-operator, the base's objects; CHART_VALUES=file.yaml adds
# values) rendered, and linted, with the pinned helm (hack/helm).
chart: tools
	@helm template rspark-operator charts/rspark-operator --include-crds $(if $(CHART_VALUES),-f $(CHART_VALUES))

lint-chart: tools
	@helm lint --strict charts/rspark-operator

# Apply manifests/base (or KUSTOMIZATION=...) to the current kubectl context with your own
# kubectl (KUBECTL=..., else the first on the PATH you called make with); builds nothing.
deploy:
	@PATH="$(USER_PATH)" bash hack/deploy.sh $(KUSTOMIZATION)

# Build the four images with Docker (IMAGE_REGISTRY, IMAGE_TAG); fails clearly without Docker.
images:
	@bash hack/images.sh

# The images the local cluster runs, without Docker (Debian base by mmdebstrap, buildah),
# cached by a hash of their inputs, pushed to REGISTRY (default: the local cluster's).
images-local: venv
	@bash hack/system-packages.sh
	@$(PY) -m devtools.images $(if $(REGISTRY),--registry $(REGISTRY))

# Forget the images this checkout no longer builds (archives, buildah's storage, and the
# local registry's storage while no cluster runs). Other checkouts rebuild what they lack.
images-prune: venv
	@$(PY) -m devtools.images --prune

# hadolint and shellcheck, pinned from PyPI; no Docker needed.
lint-images:
	@bash hack/lint-images.sh

# kind cluster, images, deploy, workspace, RStudio at its URL, home survives the pod.
e2e-kind:
	@bash hack/e2e-kind.sh
