# One command each, from a fresh clone: `make run` (the main job) and `make test` (the checks).
# Both create .venv and install the project with torch pinned to 2.13.0 (CPU build).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run test lint format notebook clean

$(STAMP): pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --constraint constraints.txt torch==2.13.0
	$(PY) -m pip install --quiet --constraint constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/advopt compare

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check .

format: $(STAMP)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

# rebuild the study notebook and execute it in full mode (resumes the study's runs in results/)
notebook: $(STAMP)
	$(PY) tools/make_notebook.py --execute full

clean:  # results/ holds the committed study; it is never removed here
	rm -rf $(VENV) build *.egg-info
