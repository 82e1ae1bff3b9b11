# One command each, from a fresh clone: `make run` (the main job) and `make test` (the checks).
# Both create .venv and install the project with torch pinned to 2.13.0 (CPU build).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run test lint format docs install-check notebook clean

$(STAMP): pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --constraint constraints.txt torch==2.13.0
	$(PY) -m pip install --quiet --constraint constraints.txt -e '.[dev,integrations]'
	# microsoft/mup, the oracle of tests/test_mup_study.py and benchmarks/mup.py --step-vs-mup; no deps
	# (it pins torchvision, which does not import beside this torch; what it imports is here already)
	$(PY) -m pip install --quiet --no-deps mup==1.0.0
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/advopt compare

# lint, API docs, the wheel in a clean venv, then pytest (last: the run ends with its summary line)
test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(MAKE) --no-print-directory docs
	$(MAKE) --no-print-directory install-check
	$(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check .

format: $(STAMP)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

# API reference from the docstrings (pdoc) into build/api/; any pdoc warning fails it
docs: $(STAMP)
	$(PY) tools/build_docs.py --out build/api

# the built wheel alone: a clean venv in a temp dir, torch + the wheel[bench] installed non-editable,
# a tiny offline `advopt compare` run from outside the checkout on the MNIST inside the wheel
install-check: $(STAMP)
	$(PY) tools/install_check.py

# run the study notebook (source: experiments_comparison.py) in full mode, resuming the study's runs
# in results/, and keep the outputs in experiments_comparison.ipynb
notebook: $(STAMP)
	$(VENV)/bin/jupytext --sync experiments_comparison.py
	mkdir -p results/notebook
	$(VENV)/bin/papermill experiments_comparison.ipynb results/notebook/experiments_comparison.ipynb -k python3 --cwd . -p MODE full
	cp results/notebook/experiments_comparison.ipynb experiments_comparison.ipynb
	$(VENV)/bin/jupytext --to ipynb --update experiments_comparison.py

clean:  # results/ holds the committed study; it is never removed here
	rm -rf $(VENV) build *.egg-info
