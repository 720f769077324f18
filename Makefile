# Two commands do all set-up on a fresh machine:  `make demo`  and  `make test`.
# Both create .venv and install everything first. torch is pinned and installed before the
# rest: a loose `torch` would pull a multi-GB CUDA build (DeepSpeed, whose setup.py imports torch, is
# built against the installed one: --no-build-isolation). The two optional system parts (the
# Triton server environment, Debian's audio packages) warn when they cannot be set up; every
# verb but `lab serve triton` / `lab detect deepfake-voice` works without them.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
LAB    := $(VENV)/bin/lab
STAMP  := $(VENV)/.installed
TORCH  ?= torch==2.13.0

.PHONY: install demo test test-fast clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH)
	$(PIP) install -q -e ".[all,test]"
	$(PIP) install -q --no-build-isolation deepspeed==0.19.8 || echo "warning: DeepSpeed not installed; only train.strategy=deepspeed needs it (see README)"
	bash labcli/serving/setup_triton_env.sh || echo "warning: no Triton server environment; only 'lab serve triton' needs it (see README)"
	sh labcli/detect/setup_audio.sh || echo "warning: audio packages not installed; only 'lab detect deepfake-voice' needs them (see README)"
	sh labcli/serving/setup_browser.sh || echo "warning: chromium not installed; only the browser test of the translation apps needs it"
	touch $(STAMP)

# The headline job on its embedded default (offline, CPU).
demo: install
	$(LAB) env --short
	$(LAB) finetune newari --method qlora

# The whole suite (what CI runs). Tests run one torch thread each (tests/conftest.py), so two
# pytest-xdist workers use both cores of a 2-core machine; a file stays on one worker (its module
# fixtures are built once). Set PYTEST_WORKERS=1 for one process.
PYTEST_WORKERS ?= 2
PYTEST := $(PY) -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile --durations=25
test: install
	$(PYTEST) tests

# Everything but the real end-to-end runs (marked slow): a few minutes.
test-fast: install
	$(PYTEST) -m "not slow" tests

clean:
	rm -rf $(VENV) .venv-triton runs .pytest_cache
