# The two commands of the README:
#   make demo   set everything up and run lbtrain's main job on embedded defaults
#   make test   set everything up and run the whole test suite (lint, types, tests)
# Everything else here is a step of those two.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
EXTRAS ?= dev,trainer,objectstore

.PHONY: demo test install testbed node-deps images kueue push lint typecheck pytest bench-deps clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet -e '.[$(EXTRAS)]'
	touch $@

install: $(VENV)/.installed

# Builds kube-apiserver, kube-controller-manager, etcd and the node's kubelet, kube-scheduler and
# kube-proxy from Go modules on first use
# (5 to 15 minutes on 2 cores), then answers from the cache in under a second.
# Also versitygw, the S3-compatible server of the object-store tests (testbed/build-s3.sh:
# about 4 to 6 min cold on 2 cores, cached under the same folder), and CoreDNS, the real node's
# cluster DNS (testbed/build-dns.sh: about 2 to 4 min cold on 2 cores).
testbed: install
	PYTHON=$(PY) bash testbed/build.sh >/dev/null
	bash testbed/build-s3.sh >/dev/null
	bash testbed/build-dns.sh >/dev/null

# Debian's containerd, runc, CNI plugins, iptables, buildah and mmdebstrap, for the real node
# and the image builds (apt runs only when one is missing).
node-deps:
	bash testbed/node-deps.sh

# Both images (webhook/operator and trainer) with buildah, cached under a key of every input.
images: install node-deps
	bash images/build.sh

# Both images and the chart to a registry: make push REGISTRY=host[:port]/path [TAG=] [PLAIN_HTTP=1]
# [COMPRESSION_LEVEL=1-9] [HELM=helm]. The images are this checkout's (build.sh answers from its
# cache, or builds them); helm is the testbed's unless HELM names one.
push: images
	@lines=$$(bash images/build.sh) && helm_bin='$(HELM)' && \
	if [ -z "$$helm_bin" ]; then helm_bin=$$(PYTHON=$(PY) bash testbed/build.sh | tail -n1)/helm; fi && \
	HELM="$$helm_bin" REGISTRY='$(REGISTRY)' TAG='$(TAG)' PLAIN_HTTP='$(PLAIN_HTTP)' \
	COMPRESSION_LEVEL='$(COMPRESSION_LEVEL)' bash images/push.sh $$(echo "$$lines" | cut -d' ' -f2)

# FastAPI and uvicorn for bench/webhook_bench.py's reference server; not part of `make test`.
bench-deps: install
	$(PY) -m pip install --quiet -e '.[$(EXTRAS),bench]'

demo: testbed
	$(VENV)/bin/lbtrain demo

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: install
	$(VENV)/bin/mypy lbtrain operator/lbtrain_operator webhook/lbtrain_webhook images/trainer/lbtrain_trainer examples/plugin-polygon/lbtrain_polygon devtools/lbtrain_dev tests bench

# Kueue v0.17.0's manager and its image (testbed/build-kueue.sh: about 5 to 10 min cold on 2
# cores, cached by key), for tests/testbed/test_kueue.py; built here, not in a test's fixture,
# so that a cold build never runs into a test's timeout. Packing the image needs buildah.
kueue: node-deps
	bash testbed/build-kueue.sh >/dev/null

pytest: testbed images kueue
	HF_HUB_OFFLINE=1 NO_PROXY=127.0.0.1,localhost $(VENV)/bin/pytest -p no:cacheprovider

test: lint typecheck pytest

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache
