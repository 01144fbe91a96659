"""Lets MXNet 1.9.1 import on numpy 1.24-1.26 (the numpy of Python 3.12 and 3.13).

MXNet 1.9.1, the last release, uses ``np.bool``, an alias numpy removed in
1.24.  This module gives it back - ``numpy.bool = bool``, and only where
numpy lacks it, so an older numpy is left exactly as it is - before MXNet
first runs, whichever of ``mxnet`` and ``hmmop`` is imported first:

- hmmop's own ``__init__`` calls ``restore_numpy_names()`` before importing mxnet;
- ``hmmop-mxnet-numpy.pth``, installed beside the packages, calls ``install()``
  at start-up, which puts a finder on ``sys.meta_path`` that does nothing but,
  when ``mxnet`` is first imported, restore the alias and step aside.  Nothing
  else is imported at start-up (not even numpy).

Why not patch at start-up directly: importing numpy in every Python process
would cost every program of the environment ~50 ms, most of which never
touch MXNet.  It lives outside the hmmop package because importing hmmop
imports MXNet.
"""
import sys
import warnings


def restore_numpy_names():
    """numpy.bool = bool when numpy has no ``bool`` (numpy >= 1.24); otherwise nothing."""
    import numpy
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # numpy 1.20-1.23 warn that the alias is deprecated
        try:
            numpy.bool
            return
        except AttributeError:
            pass
    numpy.bool = bool


class MXNetImportHook:
    """A meta-path finder that finds nothing: the first time ``mxnet`` is looked up it
    restores numpy's names, removes itself, and lets the real finders do the work."""

    def find_spec(self, name, path=None, target=None):
        if name == "mxnet":
            uninstall()
            restore_numpy_names()
        return None


def install():
    """Put the hook on sys.meta_path, once (a no-op when mxnet is already imported)."""
    if "mxnet" not in sys.modules and not any(isinstance(f, MXNetImportHook) for f in sys.meta_path):
        sys.meta_path.insert(0, MXNetImportHook())


def uninstall():
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, MXNetImportHook)]
