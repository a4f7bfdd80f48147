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

.PHONY: install demo demo-cmcr demo-chain search-demo browser test lint benchmarks clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml $(foreach p,$(PLUGINS),$(p)/pyproject.toml)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet $(TORCH_PINS) -e '.[test,search,tensorboard,ann]' $(foreach p,$(PLUGINS),-e $(p))
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/mcrx extend recipes/demo.yaml

demo-cmcr: $(STAMP)
	$(VENV)/bin/mcrx extend recipes/demo_cmcr.yaml

# tactile, a modality the toy plugin adds, two hops from the base (tactile → CLAP → CLIP)
demo-chain: $(STAMP)
	$(VENV)/bin/mcrx extend recipes/demo_chain.yaml

# Search the toy world in a browser: the demo model, 100 held-out items per modality as
# .npy files (their class in the folder name), one collection, served on 127.0.0.1:8000.
SEARCH_DEMO := runs/search-demo
search-demo: $(STAMP)
	$(VENV)/bin/mcrx extend recipes/demo.yaml
	$(PY) -m mcrx.search.demo $(SEARCH_DEMO) --count 100
	for m in image text audio pointcloud; do \
	  $(VENV)/bin/mcrx index runs/demo/model $(SEARCH_DEMO)/collection --modality $$m \
	    $(SEARCH_DEMO)/files/$$m || exit 1; done
	@echo "try a query file: $$(ls $(SEARCH_DEMO)/queries/audio/*/*.npy | head -1) (as audio)"
	$(VENV)/bin/mcrx serve $(SEARCH_DEMO)/collection

# The page test drives Debian's chromium; CI machines start without it. When it cannot be
# installed the browser test is skipped and says why.
browser:
	@test -x /usr/bin/chromium || (apt-get update -qq \
	  && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
	  || echo "could not install chromium: the browser test will be skipped"

test: $(STAMP) browser
	$(VENV)/bin/ruff check mcrx tests plugins benchmarks scripts
	$(PY) -m pytest -q -rs

benchmarks: $(STAMP)
	for script in benchmarks/bench_*.py; do $(PY) $$script --quick || exit 1; done

clean:
	rm -rf runs .pytest_cache .ruff_cache
