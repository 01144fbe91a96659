"""Benchmark medians kept during one run, printed as ratio tables at its end (see conftest.py)."""
import collections

RESULTS = collections.defaultdict(dict)   # table -> {(row, column): seconds}
TABLES = {}                               # table -> (title, columns, (numerator, denominator, label), a list
                                          # of such ratios, or None)
