# Two commands do all set-up on a fresh machine:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test env

env: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip "setuptools>=77"
	$(VENV)/bin/python -m pip install -q -e '.[dev,peer]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/faceverify demo

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q
