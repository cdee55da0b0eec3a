# The README's two commands: `make demo` and `make test`. Both create or reuse .venv.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.mmfuse-installed

.PHONY: setup demo test bench clean browser

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || python3 -m venv $(VENV)
	@# torch first: 2.13.0 is the CPU wheel on this machine; never let another package pull a CUDA build
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	@$(PY) -c "import torch; print('torch==' + torch.__version__.split('+')[0])" 2>/dev/null > $(VENV)/constraints.txt
	$(PY) -m pip install -q -c $(VENV)/constraints.txt -e ".[datasets,hf,vision,bench,dev]"
	@# aeon only for the BasicMotions .ts files inside its wheel; its pins would downgrade numpy
	@$(PY) -c "import importlib.util,sys; sys.exit(importlib.util.find_spec('aeon') is None)" 2>/dev/null || $(PY) -m pip install -q --no-deps aeon==1.6.0
	@# Resemblyzer only for its GE2E speaker weights (resemblyzer/pretrained.pt, encoder ge2e_speaker); its deps (librosa, webrtcvad) are not needed
	@$(PY) -c "import importlib.util,sys; sys.exit(importlib.util.find_spec('resemblyzer') is None)" 2>/dev/null || $(PY) -m pip install -q --no-deps Resemblyzer==0.1.4
	@touch $(STAMP)

demo: setup
	$(VENV)/bin/mmfuse demo

test: setup browser
	$(PY) -m pytest -q -p no:cacheprovider

# headless Chromium for tests/test_report_browser.py (Debian's packages; run as root): installed only when missing
browser:
	@command -v chromium >/dev/null && test -x /usr/bin/chromedriver || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null)

bench: setup
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) runs build *.egg-info src/*.egg-info
