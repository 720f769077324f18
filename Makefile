# Two commands do all set-up on a fresh machine:  `make demo`  and  `make test`.
# Both create .venv and install everything first. torch is pinned and installed before the
# rest: it comes from a local CPU wheel here, and a loose `torch` would pull a multi-GB CUDA build.
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
	$(PIP) install -q "$(TORCH)"
	$(PIP) install -q -e ".[test]"
	bash labcli/serving/setup_triton_env.sh
	bash labcli/detect/setup_audio.sh
	touch $(STAMP)

# The headline job on its embedded default (offline, CPU).
demo: install
	$(LAB) env --short
	$(LAB) finetune newari --method qlora

test: install
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) .venv-triton runs .pytest_cache
