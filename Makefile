# Two commands do all set-up on a fresh machine:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
STAMP  := $(VENV)/.installed-stamp
REPO   := $(patsubst %/,%,$(dir $(abspath $(lastword $(MAKEFILE_LIST)))))

# LFW for the demo and the tests: $FACEVERIFY_LFW, else a development checkout's ../shared copy when it exists.
FACEVERIFY_LFW ?= $(abspath $(wildcard $(REPO)/../shared/datasets/lfw))
ifneq ($(strip $(FACEVERIFY_LFW)),)
export FACEVERIFY_LFW
endif

.PHONY: demo test env

env: $(STAMP)

# postgres: the PostgreSQL gallery store (its tests' server, pgserver, is in dev).
# face_recognition (the cold-start benchmark's peer) without its dependencies: it asks for `dlib`, which the
# peer extra's dlib-bin provides under another name.
$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip "setuptools>=77"
	$(VENV)/bin/python -m pip install -q -e '.[dev,peer,serve,postgres]'
	$(VENV)/bin/python -m pip install -q --no-deps "face_recognition==1.3.0"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/faceverify demo

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q
