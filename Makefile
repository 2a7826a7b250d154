# Two commands do all the set-up on a fresh machine:
#   make train   # creates .venv from requirements.txt, trains configs/mtl.py on the built-in corpus
#   make test    # creates .venv if needed, runs the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
WORKDIR ?= runs/mtl
CONFIG ?= configs/mtl.py

.PHONY: setup train test

$(VENV)/.installed: requirements.txt pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt -e .
	touch $@

setup: $(VENV)/.installed

train: setup
	$(PY) -m hive.main --config=$(CONFIG) --workdir=$(WORKDIR) $(ARGS)

test: setup
	$(PY) -m pytest
