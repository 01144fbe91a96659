"""Collects benchmark medians so that one run can print the ratios between them."""
import re

import pytest

from benchutil import RESULTS, TABLES


@pytest.fixture
def record(benchmark):
    """record(table, row, column, per=1): after the benchmark ran, keep its median / per."""
    entries = []
    yield lambda table, row, column, per=1: entries.append((table, row, column, per))
    stats = getattr(benchmark, "stats", None)
    if stats is None:                      # --benchmark-disable
        return
    for table, row, column, per in entries:
        RESULTS[table][(row, column)] = stats.stats.median / per


def pytest_terminal_summary(terminalreporter):
    for table, cells in RESULTS.items():
        title, columns, ratio = TABLES[table]
        ratios = [ratio] if ratio and isinstance(ratio[0], str) else list(ratio or [])   # one or a list
        rows = sorted({r for r, _ in cells}, key=lambda r: [int(x) if x.isdigit() else x
                                                            for x in re.split(r"(\d+)", r)])
        tr = terminalreporter
        tr.write_sep("=", title)
        tr.write_line(" | ".join(["row"] + [c for c in columns] + [r[2] for r in ratios]))
        for r in rows:
            vals = [cells.get((r, c)) for c in columns]
            line = [str(r)] + ["-" if v is None else _duration(v) for v in vals]
            for num, den, _ in ratios:
                num, den = cells.get((r, num)), cells.get((r, den))
                line.append(f"{num / den:.1f}x" if num and den else "-")
            tr.write_line(" | ".join(line))


def _duration(seconds):
    if seconds < 1e-3:
        return f"{seconds * 1e6:.3g} us"
    if seconds < 1:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds:.3g} s"
