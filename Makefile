# Two commands do all set-up on a fresh machine:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
LIGHT  := $(VENV)/.light-stamp
FULL   := $(VENV)/.full-stamp
REPO   := $(patsubst %/,%,$(dir $(abspath $(lastword $(MAKEFILE_LIST)))))

# LFW for the demo and the tests: $FACEVERIFY_LFW, else a development checkout's ../shared copy when it exists.
FACEVERIFY_LFW ?= $(abspath $(wildcard $(REPO)/../shared/datasets/lfw))
ifneq ($(strip $(FACEVERIFY_LFW)),)
export FACEVERIFY_LFW
endif

.PHONY: demo test env light

env: $(FULL)
light: $(LIGHT)

# The default install (what `pip install faceverify` gives: ONNX Runtime, OpenCV, FAISS; no torch), editable.
# compat: the editable install puts the checkout on sys.path, so that `python tools/X.py` imports tools.common (the
# mapping of models/ into the package makes setuptools' default editable mode list only the package).
EDITABLE := --config-settings editable_mode=compat
$(LIGHT): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q -e . $(EDITABLE)
	touch $@

# Everything the tests need: every extra (train, serve, postgres, plots), the test tools (dev) and the dlib peer.
# face_recognition (the cold-start benchmark's peer) without its dependencies: it asks for `dlib`, which the
# peer extra's dlib-bin provides under another name. setuptools>=77: the packaging tests build the wheel here.
$(FULL): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip "setuptools>=77"
	$(VENV)/bin/python -m pip install -q -e '.[all,dev,peer]' $(EDITABLE)
	$(VENV)/bin/python -m pip install -q --no-deps "face_recognition==1.3.0"
	touch $@ $(LIGHT)

demo: $(LIGHT)
	$(VENV)/bin/faceverify demo

test: $(FULL)
	$(VENV)/bin/python -m pytest -q
