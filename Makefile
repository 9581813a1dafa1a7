# Chorus — every target sets itself up: a fresh machine needs nothing installed by hand.
# Heavy things live outside the clone, in $(CHORUS_CACHE): the virtualenv (keyed by the
# hash of requirements.lock), pip's cache, the Go build cache and the control-plane binaries.
SHELL := /bin/bash
export CHORUS_CACHE ?= $(HOME)/.cache/chorus
VENV = $(shell tools/bootstrap.sh | tail -1)
PYTEST_ARGS ?=
TEXT ?= Hello from Chorus. Every tenant voice is a small adapter on one shared model, and this is the base voice.

.PHONY: venv run test test-node test-unit controlplane images bench bench-engine bench-serve bench-operator bench-adapt bench-adapt-grid clean-cache

venv:  ## build or reuse the cached virtualenv and install Chorus into it
	@echo "virtualenv: $(VENV)"

controlplane:  ## build etcd, the Kubernetes servers and node binaries, helm, metrics-server and KubeRay's operator into the cache
	@bash controlplane/build.sh metrics-server kuberay-operator

IMAGE_ROLE ?= all
images:  ## the container images (OCI archives, no registry) under $(CHORUS_CACHE)/images: IMAGE_ROLE=serve|operator|train|all
	@venv="$(VENV)"; PYTHONSAFEPATH=1 "$$venv/bin/python" -m chorus.images build --role $(IMAGE_ROLE)

run:  ## the platform locally: a demo tenant (base voice + a voice trained once), served on Ray Serve, until Ctrl-C
	@venv="$(VENV)"; mkdir -p out; \
	"$$venv/bin/chorus" demo --out out --text "$(TEXT)" $(RUN_ARGS)

test:  ## every test: unit, integration (real control plane, Ray, helm) and end to end; the real node's suite runs alongside
	@venv="$(VENV)"; bash controlplane/build.sh metrics-server kuberay-operator && \
	tools/test.sh "$$venv" all $(PYTEST_ARGS)

test-node:  ## only the real node's suite: the node, the HPA, KubeRay's RayService, the chart's install-train-upgrade-rollback path
	@venv="$(VENV)"; bash controlplane/build.sh metrics-server kuberay-operator && \
	tools/test.sh "$$venv" node $(PYTEST_ARGS)

test-unit:  ## only the fast unit tests
	@venv="$(VENV)"; "$$venv/bin/python" -m pytest tests/unit $(PYTEST_ARGS)

bench: bench-engine bench-serve  ## all benchmarks (JSON lines on stdout, files in bench/results/)

bench-engine:
	@venv="$(VENV)"; "$$venv/bin/python" -m bench.engine

bench-operator:
	@venv="$(VENV)"; bash controlplane/build.sh && "$$venv/bin/python" -m bench.operator

bench-serve:  ## serving throughput, latency, time to first byte and memory against Piper in process (~10 min)
	@venv="$(VENV)"; "$$venv/bin/python" -m bench.serve $(BENCH_ARGS)

bench-adapt:  ## train and score adapters for the three generated voices, two at a time on one core each (~30 min)
	@venv="$(VENV)"; "$$venv/bin/python" -m bench.adapt --jobs 2 --threads 1

bench-adapt-grid:  ## voice reach: the default recipe on 27 voices (2 generators x f0 x0.7-2.0 x 2 formant relations + espeak-ng), resumable (hours); BENCH_ARGS="--only 'world-f0.70-*' --steps 150"
	@venv="$(VENV)"; "$$venv/bin/python" -m bench.adapt_grid --jobs 2 --threads 1 $(BENCH_ARGS)

clean-cache:  ## drop the cached virtualenvs (the next target rebuilds them)
	rm -rf $(CHORUS_CACHE)/venv-*
