"""PNG plots for the hmmop command line: training curves, posteriors, emissions, Gaussian means, model
selection, benchmarks.

matplotlib is optional (``pip install 'hmmop[plot]'``) and imported only when a
plot is drawn; without it every function raises PlotUnavailable.  Figures are
drawn on matplotlib's Agg canvas directly (``Figure`` + ``FigureCanvasAgg``),
never through pyplot: no display is needed, a backend the user chose is left
alone, and no figure stays registered anywhere after it is saved.  Each
function writes a PNG to ``path`` (exactly that name, whatever its suffix)
and returns ``path``.
"""
import math

import numpy as np

__all__ = ["PlotUnavailable", "check_available", "training_curve", "posteriors", "emissions", "means", "selection",
           "benchmark", "visible"]

DPI = 110
WIDTH = 9.0                       # inches
_HINT = "plots need matplotlib: pip install 'hmmop[plot]'"
_MAX_TICK_LABELS = 80             # posteriors: above this many symbols, label every k-th only
_MAX_LABEL_CHARS = 12
_ESCAPES = {"\n": "↵", "\t": "⇥", "\r": "\\r", "\x0b": "\\v", "\x0c": "\\f"}


class PlotUnavailable(ImportError):
    """matplotlib, needed for plots, is not installed (or does not import)."""


def _matplotlib():
    """(Figure, FigureCanvasAgg, ticker, colors), imported now; PlotUnavailable without matplotlib."""
    try:
        import matplotlib                            # first: submodules cached in sys.modules must not mask its absence
        from matplotlib import colors, ticker
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        missing = isinstance(exc, ModuleNotFoundError) and exc.name == "matplotlib"
        raise PlotUnavailable(_HINT if missing else f"{_HINT} (matplotlib failed to import: {exc})") from exc
    del matplotlib
    return Figure, FigureCanvasAgg, ticker, colors


def check_available():
    """PlotUnavailable (with the install hint) now, where matplotlib is missing: the command line calls it
    before any work whose result a plot would draw."""
    _matplotlib()


def _figure(height):
    Figure, FigureCanvasAgg, _, _ = _matplotlib()
    fig = Figure(figsize=(WIDTH, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path):
    fig.savefig(path, format="png", dpi=DPI)      # no pyplot: nothing holds the figure once we return
    return path


def _state_colours(n):
    """n distinct colours, one per state (the same in every plot)."""
    _, _, _, colors = _matplotlib()
    import matplotlib
    if n <= 10:
        return [colors.to_rgba(c) for c in matplotlib.colormaps["tab10"].colors[:n]]
    if n <= 20:
        return [colors.to_rgba(c) for c in matplotlib.colormaps["tab20"].colors[:n]]
    return [matplotlib.colormaps["viridis"](x) for x in np.linspace(0, 1, n)]


def visible(token):
    """A symbol's label with whitespace made visible (" " -> "␣", newline -> "↵", tab -> "⇥",
    "" -> "∅", other control characters escaped);
    long labels are cut to 12 characters."""
    text = str(token)
    if text == "":
        return "∅"
    if text.strip() != text:                      # leading, trailing or only whitespace: show the spaces
        text = text.replace(" ", "␣")
    text = "".join(_ESCAPES.get(c, c if c.isprintable() else f"\\x{ord(c):02x}") for c in text)
    return text if len(text) <= _MAX_LABEL_CHARS else text[:_MAX_LABEL_CHARS - 1] + "…"


def training_curve(histories, n_symbols, path, title=None, unit="symbol"):
    """Log-likelihood per symbol against epoch, one line per start of a fit.

    histories: a list of 1-D arrays (n_epochs_i,), each start's total
    log-likelihood per epoch (HMM.fit's history); divided by n_symbols (the
    number of observed symbols, or of observed rows with unit="observation")
    to plot.  The start with the highest final value is drawn emphasised."""
    histories = [np.asarray(h, dtype=np.float64) for h in histories]
    if not histories or any(h.ndim != 1 for h in histories):
        raise ValueError("histories: give a non-empty list of 1-D arrays, one per start")
    if not n_symbols > 0:
        raise ValueError(f"n_symbols must be positive, got {n_symbols!r}")
    finals = [h[-1] if len(h) and np.isfinite(h[-1]) else -np.inf for h in histories]
    best = int(np.argmax(finals)) if np.isfinite(max(finals)) else None
    _, _, ticker, _ = _matplotlib()
    fig = _figure(4.8)
    ax = fig.add_subplot()
    colours = _state_colours(min(len(histories), 20)) * (len(histories) // 20 + 1)
    for i, h in enumerate(histories):
        if i == best:
            continue
        ax.plot(np.arange(1, len(h) + 1), h / n_symbols, color=colours[i], linewidth=1.2, alpha=0.55,
                marker="o" if len(h) == 1 else None, label=f"start {i}")
    if best is not None:                          # last, so that it is drawn on top
        h = histories[best] / n_symbols
        ax.plot(np.arange(1, len(h) + 1), h, color=colours[best], linewidth=2.6, zorder=3,
                marker="o" if len(h) == 1 else None,
                label=f"start {best} ({'best, ' * (len(histories) > 1)}final {h[-1]:.4f})")
    handles, labels = ax.get_legend_handles_labels()
    order = sorted(range(len(labels)), key=lambda k: int(labels[k].split()[1]))
    ax.legend([handles[k] for k in order], [labels[k] for k in order], loc="lower right",
              ncol=max(1, math.ceil(len(labels) / 8)), fontsize="small")
    ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"log-likelihood per {unit}")
    ax.grid(True, alpha=0.3)
    ax.set_title(title or f"Training: {len(histories)} start{'s' * (len(histories) != 1)}, "
                          f"{n_symbols:g} {unit}s")
    return _save(fig, path)


def posteriors(gamma, states, symbols, path, title=None, observations=None, feature_names=None):
    """State posteriors of one sequence with its Viterbi path.

    gamma: (T, N) posteriors P(state_t = i | sequence), rows summing to 1,
    drawn stacked; states: (T,) the Viterbi path (ints in [0, N)), drawn as a
    coloured band below; symbols: T strings along the x axis (only every
    k-th labelled when T > 80), or None for positions.  observations: (T, D)
    numbers (NaN rows missing), drawn as one line per feature in a panel on
    top (the first 8 features; feature_names label them, default x0, x1...)."""
    gamma = np.asarray(gamma, dtype=np.float64)
    states = np.asarray(states)
    if gamma.ndim != 2 or gamma.shape[0] < 1 or gamma.shape[1] < 1:
        raise ValueError(f"gamma must be (T, N) with T, N >= 1, got shape {gamma.shape}")
    T, N = gamma.shape
    if states.shape != (T,) or not np.issubdtype(states.dtype, np.integer) or \
            states.min() < 0 or states.max() >= N:
        raise ValueError(f"states must be ({T},) integers in [0, {N}), got shape {states.shape}, "
                         f"dtype {states.dtype}")
    labels = [str(t) for t in range(T)] if symbols is None else [visible(s) for s in symbols]
    if len(labels) != T:
        raise ValueError(f"symbols: {len(labels)} given for {T} posteriors")
    if observations is not None:
        observations = np.asarray(observations, dtype=np.float64)
        if observations.ndim == 1:
            observations = observations[:, None]
        if observations.ndim != 2 or observations.shape[0] != T:
            raise ValueError(f"observations must be ({T}, D), got shape {observations.shape}")
        names = [f"x{d}" for d in range(observations.shape[1])] if feature_names is None else list(feature_names)
        if len(names) != observations.shape[1]:
            raise ValueError(f"feature_names: {len(names)} given for {observations.shape[1]} features")
    _, _, _, colors = _matplotlib()
    x = np.arange(T)
    if observations is None:
        fig = _figure(4.8)
        ax, band = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [6, 1]})
    else:
        fig = _figure(7.0)
        top, ax, band = fig.subplots(3, 1, sharex=True, gridspec_kw={"height_ratios": [5, 5, 1]})
        import matplotlib
        palette = matplotlib.colormaps["Dark2"].colors     # 8 colours, not the states'
        shown = min(observations.shape[1], len(palette))
        for d in range(shown):
            top.plot(x, observations[:, d], color=palette[d], linewidth=1.0, marker="." if T <= 200 else None,
                     markersize=3, label=visible(names[d]))
        top.set_ylabel("observation")
        top.tick_params(labelbottom=False)
        top.grid(True, alpha=0.3)
        top.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", borderaxespad=0,
                   title="feature" + (f" (first {shown} of {observations.shape[1]})" if shown <
                                      observations.shape[1] else ""), title_fontsize="small")
    colours = _state_colours(N)
    edges = np.arange(T + 1) - 0.5                # symbol t covers [t - 0.5, t + 0.5]
    ax.stackplot(edges, np.vstack([gamma, gamma[-1:]]).T, colors=colours, step="post", linewidth=0,
                 labels=[f"state {i}" for i in range(N)])
    ax.set_ylim(0, 1)
    ax.set_xlim(-0.5, T - 0.5)
    ax.set_ylabel("P(state | sequence)")
    ax.tick_params(labelbottom=False)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", borderaxespad=0,
              title="posterior / Viterbi", title_fontsize="small")
    band.imshow(states[None, :], aspect="auto", interpolation="nearest", extent=(-0.5, T - 0.5, 0, 1),
                cmap=colors.ListedColormap(colours), vmin=-0.5, vmax=N - 0.5)
    band.set_yticks([0.5], ["Viterbi"])
    band.tick_params(axis="y", length=0)
    step = max(1, math.ceil(T / _MAX_TICK_LABELS))
    ticks = x[::step]
    long_labels = max(len(label) for label in labels) > 2
    band.set_xticks(ticks, [labels[t] for t in ticks], fontsize=7 if T > 40 else 9,
                    rotation=90 if long_labels else 0, fontfamily="monospace")
    unit = "symbol" if observations is None else "step"
    band.set_xlabel(unit + (f" (one in {step} labelled)" if step > 1 else ""))
    heading = title or f"State posteriors and Viterbi path ({T} {unit}s, {N} states)"
    (ax if observations is None else top).set_title(heading)
    return _save(fig, path)


def emissions(B, vocabulary, path, title=None, max_symbols=60):
    """Heat map of the (N, M) emission matrix B[i, k] = P(symbol k | state i).

    vocabulary: M tokens labelling the columns (None: their indices); when
    M > max_symbols only the max_symbols most probable symbols overall (by
    the mean of B over states) are shown, in vocabulary order."""
    B = np.asarray(B, dtype=np.float64)
    if B.ndim != 2 or B.shape[0] < 1 or B.shape[1] < 1:
        raise ValueError(f"B must be (N, M) with N, M >= 1, got shape {B.shape}")
    N, M = B.shape
    vocabulary = list(range(M)) if vocabulary is None else list(vocabulary)
    if len(vocabulary) != M:
        raise ValueError(f"vocabulary: {len(vocabulary)} tokens for {M} columns of B")
    if int(max_symbols) < 1:
        raise ValueError(f"max_symbols must be positive, got {max_symbols!r}")
    keep = np.arange(M)
    if M > max_symbols:
        keep = np.sort(np.argsort(-B.mean(axis=0), kind="stable")[:int(max_symbols)])
    shown = B[:, keep]
    labels = [visible(vocabulary[k]) for k in keep]
    fig = _figure(max(2.8, 1.6 + 0.38 * N + 0.07 * max(len(s) for s in labels)))
    ax = fig.add_subplot()
    image = ax.imshow(shown, aspect="auto", interpolation="nearest", cmap="viridis", vmin=0)
    fig.colorbar(image, ax=ax, label="P(symbol | state)", pad=0.015, fraction=0.04)
    ax.set_yticks(np.arange(N), [f"state {i}" for i in range(N)], fontsize=9 if N <= 20 else 6)
    size = 9 if len(keep) <= 30 else 7
    rotate = 0.62 * size * max(len(s) for s in labels) + 3 > 0.75 * WIDTH * 72 / len(keep)   # in points
    ax.set_xticks(np.arange(len(keep)), labels, rotation=90 if rotate else 0, fontfamily="monospace",
                  fontsize=size)
    ax.tick_params(length=0)
    if len(keep) <= 16 and N <= 16:               # few cells: print the values too
        for (i, k), p in np.ndenumerate(shown):
            ax.text(k, i, f"{p:.2f}", ha="center", va="center", fontsize=8,
                    color="black" if p > 0.6 * max(shown.max(), 1e-300) else "white")
    heading = title or f"Emission probabilities ({N} states, {M} symbols)"
    if len(keep) < M:
        heading += f"\nthe {len(keep)} most probable of {M} symbols shown"
    ax.set_title(heading)
    return _save(fig, path)


def means(means, covars, feature_names, path, title=None, max_features=60):
    """Heat map of a Gaussian model's (N, D) state means, the first max_features features.

    covars: (N, D, D) covariances (or (N, D) variances).  A cell's colour is
    the mean's distance from the average of the states' means of that
    feature, in units of the feature's standard deviation averaged over the
    states (so features on different scales compare); with few cells the
    values are printed as mean ± standard deviation.  feature_names: D labels
    (None: x0, x1...)."""
    means = np.asarray(means, dtype=np.float64)
    covars = np.asarray(covars, dtype=np.float64)
    if means.ndim != 2 or means.shape[0] < 1 or means.shape[1] < 1:
        raise ValueError(f"means must be (N, D) with N, D >= 1, got shape {means.shape}")
    N, D = means.shape
    if covars.shape == (N, D, D):
        variances = np.diagonal(covars, axis1=1, axis2=2)
    elif covars.shape == (N, D):
        variances = covars
    else:
        raise ValueError(f"covars must be ({N}, {D}, {D}) or ({N}, {D}), got shape {covars.shape}")
    names = [f"x{d}" for d in range(D)] if feature_names is None else list(feature_names)
    if len(names) != D:
        raise ValueError(f"feature_names: {len(names)} given for {D} features")
    if int(max_features) < 1:
        raise ValueError(f"max_features must be positive, got {max_features!r}")
    keep = min(D, int(max_features))
    sd = np.sqrt(np.maximum(variances, 0.0))[:, :keep]
    shown = means[:, :keep]
    scale = sd.mean(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    z = (shown - shown.mean(axis=0)) / scale
    limit = max(float(np.abs(z).max()), 1e-12)
    labels = [visible(n) for n in names[:keep]]
    fig = _figure(max(2.8, 1.6 + 0.38 * N + 0.07 * max(len(s) for s in labels)))
    ax = fig.add_subplot()
    image = ax.imshow(z, aspect="auto", interpolation="nearest", cmap="coolwarm", vmin=-limit, vmax=limit)
    fig.colorbar(image, ax=ax, label="mean - average over states\n(in standard deviations)", pad=0.015,
                 fraction=0.04)
    ax.set_yticks(np.arange(N), [f"state {i}" for i in range(N)], fontsize=9 if N <= 20 else 6)
    size = 9 if keep <= 30 else 7
    rotate = 0.62 * size * max(len(s) for s in labels) + 3 > 0.75 * WIDTH * 72 / keep
    ax.set_xticks(np.arange(keep), labels, rotation=90 if rotate else 0, fontfamily="monospace", fontsize=size)
    ax.tick_params(length=0)
    if keep <= 10 and N <= 16:                    # few cells: print mean ± sd
        for (i, d), m in np.ndenumerate(shown):
            ax.text(d, i, f"{m:.3g}\n± {sd[i, d]:.3g}", ha="center", va="center", fontsize=8,
                    color="white" if abs(z[i, d]) > 0.6 * limit else "black")
    heading = title or f"Gaussian means ({N} states, {D} features)"
    if keep < D:
        heading += f"\nthe first {keep} of {D} features shown"
    ax.set_title(heading)
    return _save(fig, path)


def selection(states, loglik, aic, bic, chosen, criterion, path, title=None):
    """Model selection: AIC and BIC (left axis) and the log-likelihood (right axis) against the number
    of states, the chosen N marked (a dashed line, and a ring on the criterion's curve).

    states: the numbers of states tried (any order; drawn sorted); loglik, aic, bic: one value per
    entry of states (hmmop.Selection's); chosen: the N picked; criterion: "bic", "aic" or "loglik",
    the curve drawn emphasised."""
    states = np.asarray(states)
    if states.ndim != 1 or len(states) < 1 or not np.issubdtype(states.dtype, np.integer):
        raise ValueError(f"states must be a non-empty list of integers, got {states!r}")
    values = {}
    for name, v in (("loglik", loglik), ("aic", aic), ("bic", bic)):
        v = np.asarray(v, dtype=np.float64)
        if v.shape != states.shape:
            raise ValueError(f"{name}: {v.shape} values for {len(states)} numbers of states")
        values[name] = v
    if criterion not in values:
        raise ValueError(f"criterion must be one of bic, aic, loglik, got {criterion!r}")
    if chosen not in states.tolist():
        raise ValueError(f"chosen: {chosen!r} is not one of the states {states.tolist()}")
    order = np.argsort(states, kind="stable")
    x = states[order]
    _, _, ticker, _ = _matplotlib()
    import matplotlib
    palette = matplotlib.colormaps["tab10"].colors
    fig = _figure(4.8)
    ax = fig.add_subplot()
    right = ax.twinx()
    curves = (("bic", "BIC", ax, palette[0]), ("aic", "AIC", ax, palette[1]),
              ("loglik", "log-likelihood", right, palette[2]))
    handles = []
    for name, label, axis, colour in curves:
        emphasised = name == criterion
        line, = axis.plot(x, values[name][order], color=colour, marker="o", markersize=5 if emphasised else 4,
                          linewidth=2.4 if emphasised else 1.3, alpha=1.0 if emphasised else 0.75,
                          label=label + (" (criterion)" if emphasised else ""), zorder=3 if emphasised else 2)
        handles.append(line)
    at = states.tolist().index(chosen)
    target = right if criterion == "loglik" else ax
    target.plot([chosen], [values[criterion][at]], marker="o", markersize=13, markerfacecolor="none",
                markeredgecolor="black", markeredgewidth=1.6, linestyle="none", zorder=4)
    handles.append(ax.axvline(chosen, color="black", linestyle="--", linewidth=1.0, alpha=0.6,
                              label=f"chosen: {chosen} states"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.12, 1.0), borderaxespad=0, fontsize="small")
    ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    ax.set_xlabel("number of states")
    ax.set_ylabel("AIC, BIC (smaller is better)")
    right.set_ylabel("log-likelihood (larger is better)")
    ax.grid(True, alpha=0.3)
    ax.set_title(title or f"Model selection: {len(states)} numbers of states")
    return _save(fig, path)


def _duration(seconds):
    """A time in seconds as a short label: 1.5 s, 12 ms, 340 µs, 5 ns."""
    if not seconds > 0 or not math.isfinite(seconds):
        return "n/a"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale * 0.9995:
            break
    else:
        unit, scale = "ns", 1e-9
    value = seconds / scale
    return f"{value:.3g} {unit}" if value < 999.5 else f"{value:,.0f} {unit}"


def benchmark(tables, path, title=None):
    """Horizontal grouped bar charts of timings, one subplot per table (stacked).

    tables: a list of {"title": str, "columns": [str, ...], "rows": [(label,
    {column: seconds or None}), ...]}: each row a group of bars, one per
    column (a missing or None entry is left out, marked n/a); log-scale time axis."""
    tables = list(tables)
    if not tables:
        raise ValueError("tables: give at least one table")
    for t, table in enumerate(tables):
        if not {"columns", "rows"} <= set(table):
            raise ValueError(f"tables[{t}] needs 'columns' and 'rows' (and a 'title'), got keys {sorted(table)}")
    _, _, ticker, _ = _matplotlib()
    import matplotlib
    heights = [0.9 + 0.22 * max(1, len(t["rows"])) * max(1, len(t["columns"])) + 0.18 * len(t["rows"])
               for t in tables]
    fig = _figure(sum(heights) + (0.4 if title else 0))
    axes = fig.subplots(len(tables), 1, squeeze=False, gridspec_kw={"height_ratios": heights})[:, 0]
    palette = matplotlib.colormaps["tab10"].colors
    for ax, table in zip(axes, tables):
        columns, rows = list(table["columns"]), list(table["rows"])
        width = 0.8 / max(1, len(columns))
        values = [float(v) for _, times in rows for v in times.values()
                  if v is not None and math.isfinite(float(v)) and float(v) > 0]
        low, high = (min(values), max(values)) if values else (1e-6, 1.0)
        left = 10 ** math.floor(math.log10(low) - 0.15)        # bars start here, the n/a marks too
        for c, column in enumerate(columns):
            for r, (label, times) in enumerate(rows):
                y = r - 0.4 + width * (c + 0.5)
                v = times.get(column)
                ok = v is not None and math.isfinite(float(v)) and float(v) > 0
                if ok:
                    ax.barh(y, float(v) - left, left=left, height=width * 0.9, color=palette[c % 10],
                            label=column if r == 0 else None)
                elif r == 0:
                    ax.barh(y, 0, left=left, height=0, color=palette[c % 10], label=column)
                ax.text(float(v) * 1.08 if ok else left * 1.08, y, _duration(float(v)) if ok else "n/a",
                        va="center", ha="left", fontsize=7, color="black" if ok else "grey")
        ax.set_xscale("log")
        ax.set_xlim(left, high * 6)                          # room for the last bar's label
        ax.set_yticks(np.arange(len(rows)), [str(label) for label, _ in rows])
        ax.set_ylim(len(rows) - 0.5, -0.5)                   # first row on top
        ax.xaxis.set_major_locator(ticker.LogLocator(base=10))
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda x, _: _duration(x)))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.grid(True, axis="x", which="major", alpha=0.3)
        ax.set_axisbelow(True)
        ax.set_title(table.get("title", ""), fontsize=10)
        if columns:
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0, fontsize="small")
    axes[-1].set_xlabel("time (log scale)")
    if title:
        fig.suptitle(title)
    return _save(fig, path)
