# Novaza Gateway. Two commands do everything on a fresh machine with Python 3.11 and make:
#   make run   - set up, migrate, create the demo tenant, print a curl, serve on :8080
#   make test  - install what the tests need (Python and, as root, Debian packages), run them all

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
LOCK   := requirements/lock.txt
BUILD_LOCK := requirements/build.txt
# Debian packages the tests and benchmarks drive: wrk (load), promtool (metrics format check),
# chromium (the billing portal, driven headless by Playwright), dcmtk (findscu -W against the MWL SCP),
# orthanc + orthanc-dicomweb (the upstream DICOMweb server imaging's proxy mode is tested against),
# haproxy (the load balancer in front of three replicas: tests/test_replicas.py).
DEBIAN_PACKAGES := wrk prometheus chromium dcmtk orthanc orthanc-dicomweb haproxy
export NOVAZA_DATA_DIR ?= $(CURDIR)/data

.PHONY: run test check lint typecheck pytest system-deps bench clean demo install lock k8s-validate image image-test

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH"; exit 1; }
	$(PYTHON) -m venv $(VENV)

# Installs are locked (docs/deployment.md, "Dependencies"): build tools first, then every
# runtime and test dependency from the lock with their hashes, then the project without deps.
# --no-build-isolation: the sdists (llama-cpp-python compiles llama.cpp) build with the locked
# tools, so nothing unpinned is fetched. pip check fails when the lock misses a dependency.
# CMAKE_BUILD_PARALLEL_LEVEL: let CMake use every core for llama.cpp (pip caches the wheel).
$(STAMP): $(BIN)/python pyproject.toml $(BUILD_LOCK) $(LOCK)
	$(BIN)/python -m pip install --quiet --require-hashes -r $(BUILD_LOCK)
	CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc 2>/dev/null || echo 2) $(BIN)/python -m pip install \
	  --quiet --require-hashes --no-build-isolation -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip check
	@touch $(STAMP)

# Refresh the locks for Python 3.11 on Linux x86_64 (glibc, as Debian bookworm). Pins already in
# the lock are kept; upgrade one with `make lock UPGRADE="--upgrade-package NAME"`, or every one
# with `make lock UPGRADE=--upgrade`. requirements/runtime.txt (the image's) is lock.txt without the
# test extra: constrained to lock.txt, so its pins are the same.
# requirements/inference.txt is the inference server's own venv in the image (/opt/inference,
# ADR 0072), constrained to runtime.txt: the packages both share keep the same pins and hashes.
LOCK_FLAGS := --python-version 3.11 --python-platform x86_64-manylinux_2_28 --generate-hashes --no-header
lock: $(BIN)/python
	$(BIN)/python -m pip install --quiet --require-hashes -r $(BUILD_LOCK)
	$(BIN)/uv pip compile $(LOCK_FLAGS) $(UPGRADE) requirements/build.in -o $(BUILD_LOCK)
	$(BIN)/uv pip compile $(LOCK_FLAGS) $(UPGRADE) pyproject.toml --extra test -o $(LOCK)
	$(BIN)/uv pip compile $(LOCK_FLAGS) pyproject.toml -c $(LOCK) -o requirements/runtime.txt
	$(BIN)/uv pip compile $(LOCK_FLAGS) $(UPGRADE) requirements/inference.in -c requirements/runtime.txt \
	  -o requirements/inference.txt

install: $(STAMP)

system-deps:
	@missing=""; for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing Debian packages:$$missing"; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing >/dev/null \
	  || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing >/dev/null; }; \
	else echo "not root: tests needing$$missing will skip (or fail under NOVAZA_TEST_REQUIRE_SERVICES=1)"; fi

demo: $(STAMP)
	@$(BIN)/novaza migrate
	@$(BIN)/novaza tenants create demo --name "Demo Hospital" --plan enterprise \
	  --addon medical_imaging --addon hl7_fhir --addon emr --activate --if-missing >/dev/null
	@echo
	@echo "Demo tenant 'demo' is ready. Try:"
	@echo
	@echo "  curl -s -H \"Authorization: Bearer $$($(BIN)/novaza token --tenant demo --ttl 86400)\" http://127.0.0.1:$${NOVAZA_PORT:-8080}/api/v1/whoami"
	@echo
	@echo "Admin token: $(BIN)/novaza token --admin    API docs: http://127.0.0.1:$${NOVAZA_PORT:-8080}/docs"
	@echo

run: demo
	$(BIN)/novaza serve

LINTED := $(wildcard src tests benchmarks)

lint: $(STAMP)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck

pytest: $(STAMP) system-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test: check pytest

bench: $(STAMP) system-deps
	$(BIN)/python benchmarks/gateway_overhead.py

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache

# Kubernetes manifests (docs/deployment-kubernetes.md): render every overlay with kubectl's
# kustomize, validate it strictly against the Kubernetes version we support, lint the YAML,
# then the semantic checks (settings, ports, probes, drain) in tests/deploy/test_kubernetes.py.
K8S_VERSION := 1.31
K8S_OVERLAYS := base overlays/dev overlays/production
k8s-validate: $(STAMP)
	@command -v kubectl >/dev/null 2>&1 || { echo "k8s-validate needs kubectl on PATH"; exit 1; }
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	for o in $(K8S_OVERLAYS); do \
	  echo "deploy/kubernetes/$$o: Kubernetes $(K8S_VERSION), strict"; \
	  kubectl kustomize deploy/kubernetes/$$o > "$$tmp/rendered.yaml" || exit 1; \
	  $(BIN)/kubernetes-validate --strict --quiet -k $(K8S_VERSION) "$$tmp/rendered.yaml" \
	    > "$$tmp/log"; rc=$$?; cat "$$tmp/log"; \
	  if [ $$rc -ne 0 ] || [ -s "$$tmp/log" ]; then exit 1; fi; \
	done
	$(BIN)/yamllint --strict -c deploy/kubernetes/.yamllint deploy/kubernetes
	$(BIN)/python -m pytest -q tests/deploy/test_kubernetes.py

# The OCI image (docs/deployment.md, "Image"). With a localhost/ base (the default here, where no
# registry serves base images) deploy/image/base.sh first builds it with mmdebstrap; pass e.g.
# IMAGE_BASE=docker.io/library/python:3.11-slim-bookworm to build on a registry base instead.
# The host's CA bundle is a build secret (pip behind a TLS-intercepting proxy); it is not kept.
IMAGE      ?= localhost/novaza-gateway:dev
IMAGE_BASE ?= localhost/novaza-base:bookworm
IMAGE_CA_BUNDLE ?= /etc/ssl/certs/ca-certificates.crt
BUILDAH    ?= buildah --storage-driver vfs
IMAGE_SECRET := --secret id=ca-bundle,src=$(IMAGE_CA_BUNDLE)
image:
	@case "$(IMAGE_BASE)" in localhost/*) BUILDAH="$(BUILDAH)" deploy/image/base.sh $(IMAGE_BASE);; esac
	$(BUILDAH) bud --isolation chroot --layers --format docker --build-arg BASE=$(IMAGE_BASE) \
	  $(if $(wildcard $(IMAGE_CA_BUNDLE)),$(IMAGE_SECRET)) \
	  -f Containerfile -t $(IMAGE) .

# Runs the built image against the local PostgreSQL and Redis: migrate, serve, readiness, an
# authenticated call, a read-only root filesystem, SIGTERM. Takes minutes; not part of make test.
# Then the inference server from /opt/inference (ADR 0072): its models, a chat answer, its key.
# Only that part: python3 deploy/image/smoke.py IMAGE --inference-only (seconds; no PostgreSQL).
image-test:
	BUILDAH="$(BUILDAH)" python3 deploy/image/smoke.py $(IMAGE)
