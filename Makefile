# Two commands do all set-up on a fresh machine:
#   make demo   - build and install hmmop into .venv, then run examples/gist.py
#   make test   - the same set-up, then the test suite (what CI runs)
# and `make bench` runs the benchmarks.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test bench clean

$(VENV)/.installed: setup.py pyproject.toml csrc/hmm_kernel.c csrc/hmm_kernel.h hmmop/_kernel.pyx
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	$(PY) examples/gist.py

test: $(VENV)/.installed
	$(PY) -m pytest tests bench --benchmark-disable

bench: $(VENV)/.installed
	$(PY) -m pytest bench --benchmark-columns=median,rounds

clean:
	rm -rf $(VENV) build *.egg-info hmmop/_kernel.c hmmop/*.so
