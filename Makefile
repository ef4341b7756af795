# cats-vs-dogs on Kubeflow Pipelines. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PY := .venv/bin/python
# the uv `make install` puts into .venv when none is on PATH
UV_VERSION ?= 0.13.9
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONPATH := $(CURDIR)

TARGET ?= local
DATA ?= # unset: make run reads the pipeline's default data_uri (cats_and_dogs_filtered.zip); make evaluate needs DATA=
REGISTRY ?= registry
MODEL ?= champion
PORT ?= 8080
HOST ?= 127.0.0.1
SHARED ?= ../shared
BENCH_DATA ?= $(SHARED)/data/cats_and_dogs
IMAGES ?= $(BENCH_DATA)/validation
BENCH_REGISTRY ?= bench_outputs/registry
USERS ?= 8
DURATION ?= 30
LOAD_PORT ?= 8089
N ?= 3000,12000,25000
SEEDS ?= 0,1,2
BENCH_WEIGHTS ?= $(SHARED)/weights/mobilenet_v2_0.35_224_no_top_imagenet.h5
# the feedback app: PORT=... on `make app`/`make up` is the app's port (8000 unless given)
APP_PORT := $(if $(filter command line,$(origin PORT)),$(PORT),8000)
PREDICTOR_PORT ?= 8080
# make up: the predictor's payload logger sends to the app's sink (token: LOGGER_TOKEN, else APP_TOKEN, from
# the environment); `make serve` logs only when LOGGER_URL is set
UP_LOGGER_URL := $(if $(filter undefined,$(origin LOGGER_URL)),http://127.0.0.1:$(APP_PORT)/api/events/inference,$(LOGGER_URL))
# where the app's retraining runs go: `make run`'s words (TARGET, DATA, WEIGHTS, remote settings, key=value),
# minus the app's own; REGISTRY is always passed: the predictor of `make up` serves its champion
# (the app's own settings reach it as environment variables: feedback/settings.py, kept equal by a test)
APP_ENVIRONMENT := APP_HOST APP_PORT PREDICTOR_URL PREDICTOR_MODEL PREDICTOR_PROTOCOL PREDICTOR_TIMEOUT_S DATABASE_URL \
  FEEDBACK_URI APP_TOKEN LABELS MAX_PHOTO_BYTES MAX_REQUEST_BYTES REPAIR_INTERVAL_S RUNS_DIR RETRAIN_MIN_NEW \
  RETRAIN_CHECK_INTERVAL_S RUN_POLL_INTERVAL_S MAX_PIXELS HEADER_TIMEOUT_S BODY_TIMEOUT_S READY_TIMEOUT_S \
  LOGGER_TOKEN LOGGER_MAX_BODY_BYTES LOGGER_PAIR_TIMEOUT_S LOGGER_MAX_PENDING \
  RATE_LIMIT_WRITES RATE_LIMIT_READS RATE_LIMIT_EXEMPT TRUSTED_PROXIES PROMETHEUS_URL TRENDS_INTERVAL_S REVIEW_ORDER \
  SECOND_OPINION_CONFIDENCE
APP_WORDS = $(filter-out PORT=% HOST=% MODEL=% PREDICTOR_PORT=% REGISTRY=% LOGGER_URL=% $(addsuffix =%,$(APP_ENVIRONMENT)),$(MAKEOVERRIDES)) \
  REGISTRY=$(REGISTRY)

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

install: ## Create .venv with the pinned dependencies (uv: the one on PATH, else installed into .venv; pip if uv cannot be had)
	@set -e; uv=$$(command -v uv || true); \
	if [ -z "$$uv" ]; then \
	  python3.11 -m venv .venv; \
	  if .venv/bin/pip install -q --disable-pip-version-check uv==$(UV_VERSION); then uv=.venv/bin/uv; \
	  else echo "note: uv could not be installed; installing with pip (slower)" >&2; fi; \
	fi; \
	if [ -n "$$uv" ]; then \
	  $$uv venv --seed --allow-existing -p python3.11 .venv && \
	  $$uv pip install -p .venv -r requirements.lock && $$uv pip install -p .venv --no-deps -e . ; \
	else \
	  .venv/bin/pip install -q -r requirements.lock && .venv/bin/pip install -q --no-deps -e . ; \
	fi

lock: ## Re-resolve requirements.lock from pyproject.toml's exact pins (needs uv)
	uv pip compile pyproject.toml --extra dev -p 3.11 --no-header --no-annotate -o requirements.lock

compile: ## Write compiled/training_pipeline.yaml and the schedule specs in manifests/schedules/
	$(PY) -m pipelines.compile
	$(PY) -m pipelines.schedule examples

monitoring: ## Write manifests/monitoring/grafana-dashboard.json (grafanalib) and prometheusrule.yaml (from rules.yaml)
	$(PY) -m ops.monitoring_manifests

run: ## Run the pipeline: [TARGET=local|kubeflow|vertex] [RUNNER=subprocess|container [IMAGE=...]] [DATA=...] [key=value ...]
	set -f; $(PY) -m pipelines.run $(MAKEOVERRIDES)

OOD_DATA ?= # make evaluate: a folder of photos that are neither a cat nor a dog (detection rate, AUROC)
evaluate: ## Score a model: MODEL=<dir|champion|N> DATA=<labelled folder> [REGISTRY=...] [OOD_DATA=<folder of photos that are neither>]
	@test -n "$(DATA)" || { echo "error: give DATA=<labelled folder> (one sub-folder per class)" >&2; exit 2; }
	$(PY) -m catdog.evaluation --model $(MODEL) --data $(DATA) --registry $(REGISTRY)$(if $(OOD_DATA), --ood-data $(OOD_DATA))

TEST_WORKERS ?= 2
test: ## Run the test suite (synthetic data only; no ../shared, no network) on TEST_WORKERS=2 processes (0: one)
	$(PY) -m pytest -q $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile)

# make bench: the pipeline once per seed; SEEDS given on the command line (or in the environment) wins over
# bench/pipeline.py's 42,1,2 (the SEEDS default above, 0,1,2, is bench-labels' and bench-active's)
bench: ## Full pipeline on ../shared data, once per seed, beside the TF transfer-learning tutorial (same photos, one run): times, accuracy, log loss, ECE, medians -> docs/BENCHMARKS.md [SEEDS=42,1,2]
	set -f; $(PY) -m bench.pipeline --data $(BENCH_DATA) --weights $(BENCH_WEIGHTS) $(if $(filter command line environment,$(origin SEEDS)),SEEDS=$(SEEDS)) $(filter-out BENCH_% SHARED=% SEEDS=%,$(MAKEOVERRIDES))

serve: ## Serve a model over KServe V1/V2 on 127.0.0.1: [MODEL=champion|N|dir|gs://...] [PORT=8080] [HOST=...]
	$(PY) -m serving.server --model $(MODEL) --registry $(REGISTRY) --host $(HOST) --port $(PORT)

load-test: ## Locust, headless, against a fresh local server: [IMAGES=...] [USERS=8] [DURATION=30]
	@set -e; port=$(LOAD_PORT); \
	$(PY) -m serving.server --model $(MODEL) --registry $(REGISTRY) --host 127.0.0.1 --port $$port & server=$$!; \
	trap 'kill $$server 2>/dev/null' EXIT; \
	for i in $$(seq 120); do \
	  curl -sf --noproxy '*' http://127.0.0.1:$$port/v2/health/ready >/dev/null && break; \
	  kill -0 $$server 2>/dev/null || { echo "the server exited: see its log above" >&2; exit 1; }; \
	  [ $$i -lt 120 ] || { echo "server not ready after 120 s (no champion in $(REGISTRY)?)" >&2; exit 1; }; \
	  sleep 1; done; \
	$(PY) -m bench.load_test --host http://127.0.0.1:$$port --images $(IMAGES) --users $(USERS) \
	  --duration $(DURATION) --out load_test_reports

bench-scale: ## The pipeline on N distinct photos made from ../shared (short training): time, shard size, peak RSS per step -> docs/BENCHMARKS.md [N=3000,12000,25000]
	set -f; $(PY) -m bench.pipeline_scale --source $(BENCH_DATA) --weights $(BENCH_WEIGHTS) --sizes $(N) $(filter-out BENCH_% SHARED=% N=%,$(MAKEOVERRIDES))

profile-train: ## Where a training epoch's time goes (input, each augmentation, network step) on ../shared -> docs/BENCHMARKS.md
	$(PY) -m bench.profile_training --data $(BENCH_DATA) --weights $(BENCH_WEIGHTS)

bench-labels: ## Label issues: flip a seeded 5 % of ../shared's train labels, count the flips the label-issues step lists [SEEDS=0,1,2] -> docs/BENCHMARKS.md
	$(PY) -m bench.labels --data $(BENCH_DATA) --weights $(BENCH_WEIGHTS) --seeds $(SEEDS)

ACTIVE_ROUNDS ?= 8
bench-active: ## Review order, simulated: 200 labelled train photos + 100 a round picked by random / least confident / OOD first / diverse; head's test accuracy per round, median of SEEDS [ACTIVE_ROUNDS=8] -> docs/BENCHMARKS.md, bench_outputs/active/
	$(PY) -m bench.active --data $(BENCH_DATA) --weights $(BENCH_WEIGHTS) --seeds $(SEEDS) --rounds $(ACTIVE_ROUNDS)

bench-serving: ## Our predictor vs a naive Keras server at 1/4/16 clients (model of make bench) -> docs/BENCHMARKS.md
	$(PY) -m bench.serving --registry $(BENCH_REGISTRY) --model $(MODEL) --images $(IMAGES) \
	  --output docs/BENCHMARKS.md

bench-logger: ## The predictor's p50/p90 at one client with its payload logger on and off, in one run (model of make bench; the app as sink) [MODEL=champion]
	$(PY) -m bench.payload_logger --registry $(BENCH_REGISTRY) --model $(MODEL) --images $(IMAGES)

bench-app: ## The feedback app vs the predictor it calls, at 1/4/16 clients, then 16 validating (model of make bench) -> docs/BENCHMARKS.md
	$(PY) -m bench.app --registry $(BENCH_REGISTRY) --model $(MODEL) --images $(IMAGES) --output docs/BENCHMARKS.md

app: ## The feedback app on 127.0.0.1:8000: [PORT=8000] [TARGET=local|kubeflow|vertex[,...]] [DATA=...] [key=value ...]
	set -f; $(PY) -m feedback.web.server --host $(HOST) --port $(APP_PORT) $(APP_WORDS)

up: ## Predictor (champion of REGISTRY, port PREDICTOR_PORT=8080) + feedback app (PORT=8000); Ctrl-C stops both; the predictor's payload logger sends to the app (LOGGER_URL=...; LOGGER_URL= turns it off)
	@set -e; \
	LOGGER_URL=$(UP_LOGGER_URL) $(PY) -m serving.server --model $(MODEL) --registry $(REGISTRY) --host 127.0.0.1 \
	  --port $(PREDICTOR_PORT) & predictor=$$!; \
	trap 'kill $$predictor 2>/dev/null; wait $$predictor 2>/dev/null || true' EXIT; \
	PREDICTOR_URL=http://127.0.0.1:$(PREDICTOR_PORT) $(PY) -m feedback.web.server --host $(HOST) --port $(APP_PORT) $(APP_WORDS)

retrain-if-needed: ## Start a retraining run when RETRAIN_MIN_NEW photos were validated since the last (for cron); same words as make app
	set -f; $(PY) -m feedback.retraining.cron --if-needed $(APP_WORDS)

clean: ## Remove local run outputs (keeps the registry)
	rm -rf local_outputs bench_outputs .pytest_cache

.PHONY: help install lock compile monitoring run evaluate test bench bench-scale bench-labels bench-active profile-train serve load-test bench-serving bench-logger bench-app app up retrain-if-needed clean

IMAGE_REGISTRY ?=
# the commit; with uncommitted or untracked files, also a timestamp: a dirty build never reuses a tag
IMAGE_TAG ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo dev)$(shell test -z "$$(git status --porcelain 2>/dev/null)" || date -u +-dirty-%Y%m%d%H%M%S)
IMAGE_PLATFORM ?= linux/amd64
COMPONENTS_IMAGE = $(IMAGE_REGISTRY)/catdog-components:$(IMAGE_TAG)
PREDICTOR_IMAGE = $(IMAGE_REGISTRY)/catdog-predictor:$(IMAGE_TAG)
FEEDBACK_IMAGE = $(IMAGE_REGISTRY)/catdog-feedback:$(IMAGE_TAG)

images: ## Build + push the component, predictor and feedback app images: IMAGE_REGISTRY=<registry> [IMAGE_TAG=<git sha>]
	@test -n "$(IMAGE_REGISTRY)" || { echo "error: set IMAGE_REGISTRY=<registry>, e.g. IMAGE_REGISTRY=us-central1-docker.pkg.dev/PROJECT/REPO" >&2; exit 2; }
	@command -v docker >/dev/null || { echo "error: docker is not installed (make images builds with docker buildx/BuildKit)" >&2; exit 2; }
	docker build --platform $(IMAGE_PLATFORM) -f components/Dockerfile -t $(COMPONENTS_IMAGE) .
	docker build --platform $(IMAGE_PLATFORM) -f serving/Dockerfile -t $(PREDICTOR_IMAGE) .
	docker build --platform $(IMAGE_PLATFORM) -f feedback/Dockerfile -t $(FEEDBACK_IMAGE) .
	docker push $(COMPONENTS_IMAGE)
	docker push $(PREDICTOR_IMAGE)
	docker push $(FEEDBACK_IMAGE)
	@echo "pushed $(COMPONENTS_IMAGE), $(PREDICTOR_IMAGE) and $(FEEDBACK_IMAGE)"
	@echo "submit with: make run TARGET=vertex|kubeflow IMAGE=$(COMPONENTS_IMAGE) [serving_image=$(PREDICTOR_IMAGE)] ..."

# make image-test (container_tests/image_test.py): podman, a local Debian 12 base instead of python:3.11-slim, wheels
# from container_tests/wheelhouse, no registry and no network in the builds; needs root and
# `apt-get install podman runc debootstrap`. IMAGE_TEST: which images; IMAGE_CACHE: the Debian root and
# podman's store; IMAGE_STORAGE_DRIVER: auto (overlay when it works, else vfs), overlay or vfs.
IMAGE_TEST ?= predictor components feedback
IMAGE_CACHE ?= $(HOME)/.cache/catdog-images
IMAGE_STORAGE_DRIVER ?= auto

image-test: ## Build the three images with podman and run them (the compiled pipeline in containers, KServe, Vertex, the feedback app): [IMAGE_TEST=predictor]
	IMAGE_CACHE="$(IMAGE_CACHE)" IMAGE_STORAGE_DRIVER=$(IMAGE_STORAGE_DRIVER) $(PY) container_tests/image_test.py $(IMAGE_TEST)

.PHONY: image-test

schedule: ## Scheduled retraining: TARGET=vertex|kubeflow|local CRON="0 3 * * 1" [SCHEDULE_NAME=...] [key=value ...]
	set -f; $(PY) -m pipelines.schedule create $(MAKEOVERRIDES)

unschedule: ## Delete a schedule by name: TARGET=vertex|kubeflow|local [SCHEDULE_NAME=catdog-retraining]
	set -f; $(PY) -m pipelines.schedule delete $(MAKEOVERRIDES)

.PHONY: images schedule unschedule
