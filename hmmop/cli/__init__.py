"""The ``hmmop`` command (setup.py's console script ``hmmop = hmmop.cli:main``; also ``python -m hmmop``).

- ``commands``: the argument parser and one function per command (fit, score, decode, sample, info,
  bench, launch); ``main(argv)`` runs one;
- ``files``: the data files (symbol sequences, numeric rows);
- ``plots``: PNG plots (matplotlib, the optional extra ``plot``, imported only when one is drawn);
- ``benchmarks``: the runner behind ``hmmop bench``.

The top floor: it uses the models (hmmop.models), the fit helpers (hmmop.fit) and the public face
(``import hmmop``); nothing below imports from here.
"""
from .commands import main

__all__ = ["main"]
