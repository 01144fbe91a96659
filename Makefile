# Two commands do all set-up on a fresh machine (Linux, python3 3.8-3.13 with venv, gcc, make):
#   make demo   - build and install hmmop into .venv, then run examples/gist.py
#   make test   - the same set-up, then the test suite
# What CI (.ci/run) adds: `make lint` (ruff) and `make test-pythons` (the suite on Python 3.11 and on 3.12,
# found with pyenv, each in its own venv).  `make bench` runs the benchmarks.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
LINTED := hmmop tests bench examples

# The newest Python 3.12 that pyenv has (for test-pythons); empty without pyenv or 3.12.
PY312 := $(shell pyenv prefix "$$(pyenv latest 3.12 2>/dev/null)" 2>/dev/null)

.PHONY: demo test lint test-pythons bench clean

# An editable install leaves out the start-up hook that a regular one puts beside the packages (it lets
# mxnet import on numpy >= 1.24 even before hmmop; see _hmmop_mxnet_hook.py): copied there by hand.
$(VENV)/.installed: setup.py pyproject.toml $(wildcard csrc/*) hmmop/_kernel.pyx hmmop-mxnet-numpy.pth
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	cp hmmop-mxnet-numpy.pth "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/"
	touch $@

demo: $(VENV)/.installed
	$(PY) examples/gist.py

test: $(VENV)/.installed
	$(PY) -m pytest tests bench --benchmark-disable -m "not slow"

# ruff (from the test extra) with pyproject.toml's [tool.ruff] settings: pyflakes and pycodestyle errors.
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check $(LINTED)

# The test suite on Python 3.11 (.venv) and on 3.12 (.venv-3.12), one after the
# other: both build the extension into the source tree (different file names, but one Cython output).
test-pythons:
	$(MAKE) test
	@test -n "$(PY312)" || { echo "test-pythons: pyenv has no Python 3.12 (pyenv install 3.12)" >&2; exit 1; }
	$(MAKE) test PYTHON="$(PY312)/bin/python" VENV=.venv-3.12

bench: $(VENV)/.installed
	$(PY) -m pytest bench --benchmark-columns=median,rounds

clean:
	rm -rf $(VENV) .venv .venv-3.* build *.egg-info hmmop/_kernel.c hmmop/*.so
