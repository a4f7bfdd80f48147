# Set-up and the two commands of the README. Every dependency is installed from this
# repository's own files: the core, the built-in plugins (each its own distribution under
# plugins/, registered through the `mcrx` entry-point group) and the test tools.
#
# torch/torchvision are pinned HERE only (the wheels on this machine's disk; see
# ../shared/DEPS.md). pyproject.toml files declare ranges: users bring their own torch.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
PLUGINS := plugins/toy plugins/clip plugins/clap plugins/ulip
STAMP := $(VENV)/.mcrx-installed

# Model hubs are unreachable: never let a library wait on one.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install demo demo-cmcr test lint benchmarks clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml $(foreach p,$(PLUGINS),$(p)/pyproject.toml)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet $(TORCH_PINS) -e '.[test]' $(foreach p,$(PLUGINS),-e $(p))
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/mcrx extend recipes/demo.yaml

demo-cmcr: $(STAMP)
	$(VENV)/bin/mcrx extend recipes/demo_cmcr.yaml

test: $(STAMP)
	$(VENV)/bin/ruff check mcrx tests plugins benchmarks
	$(PY) -m pytest -q

benchmarks: $(STAMP)
	for script in benchmarks/bench_*.py; do $(PY) $$script --quick || exit 1; done

clean:
	rm -rf runs .pytest_cache .ruff_cache
