"""Dirichlet priors on the rows of A, B and pi: checking them and their log-density.

A prior is {"A": a, "B": b, "pi": p} (any subset) of concentrations > 0,
scalars or arrays broadcastable to the parameter's shape (hmmlearn's
transmat_prior, emissionprob_prior, startprob_prior).  Up to a constant, the
log-prior of a parameter is sum((a - 1) * log A) over its free entries
(structural zeros, held at 0 by a mask, are outside the simplex and do not
count).  EM uses a - 1 as pseudo-counts (the MAP update); gradient training
adds the log-prior to its objective.  m_step is that MAP update of one
parameter, shared by every model's EM.
"""
import numpy as np

NAMES = ("A", "B", "pi")


def check_prior(prior, shapes):
    """Validate ``prior``; return {name: float64 concentration array of the parameter's shape}.

    shapes: {name: shape} of the parameters a prior may be given for.
    """
    if prior is None:
        return {}
    if not isinstance(prior, dict):
        raise TypeError(f"prior must be a dict such as {{'A': 2.0, 'B': 1.5}}, got {type(prior).__name__}")
    unknown = sorted(set(prior) - set(NAMES))
    if unknown:
        raise ValueError(f"prior may only name {NAMES}, got {unknown}")
    out = {}
    for name, value in prior.items():
        if name not in shapes:
            raise ValueError(f"prior['{name}']: {name} is fixed, so it has no prior")
        try:
            a = np.array(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise TypeError(f"prior['{name}'] must be a number or an array of numbers, got {value!r}") from None
        try:
            a = np.broadcast_to(a, shapes[name]).copy()
        except ValueError:
            raise ValueError(f"prior['{name}'] has shape {a.shape}, which does not broadcast to "
                             f"{name}'s shape {shapes[name]}") from None
        if not (np.isfinite(a).all() and (a > 0).all()):
            raise ValueError(f"prior['{name}'] must hold finite Dirichlet concentrations > 0, "
                             f"got min {a.min()!r}")
        out[name] = a
    return out


def log_prior(probs, prior):
    """sum over the prior's parameters of sum((a - 1) * log p) over entries with p > 0.

    probs: {name: float64 NumPy probabilities}; prior as from check_prior.
    """
    total = 0.0
    for name, a in prior.items():
        p = probs[name]
        with np.errstate(divide="ignore"):
            total += float(np.where(p > 0, (a - 1) * np.log(p), 0.0).sum())
    return total


def m_step(name, counts, current, prior=None, mask=None):
    """The MAP update of one parameter (hmmlearn's): rows of max(counts + a - 1, 0), normalised.

    prior: Dirichlet concentrations a (None: maximum likelihood).  mask:
    boolean, False where the parameter is a structural zero.  As in hmmlearn,
    a transition or initial probability that is 0 stays 0 (a prior does not
    revive it); an emission probability may.  A row left with nothing (a
    state never visited, no prior) keeps its current values rather than
    becoming all zeros.
    """
    x = counts if prior is None else np.maximum(prior - 1 + counts, 0)
    if name != "B":
        x = np.where(current == 0, 0.0, x)
    if mask is not None:
        x = np.where(mask, x, 0.0)
    total = x.sum(axis=-1, keepdims=True)
    return np.where(total > 0, x / np.where(total > 0, total, 1), current)


def check_masks(mask, shapes, fixed=()):
    """Validate structural-zero masks; return {name: bool array} of those with a False (others: none).

    mask: None or {name: boolean array of the parameter's shape} (None values skipped);
    shapes: {name: shape} of the parameters a mask may be given for; fixed: names held as given
    (they take no mask).  Each row must allow an entry.  ValueError naming the mask otherwise.
    """
    if mask is None:
        return {}
    if not isinstance(mask, dict) or set(mask) - set(shapes):
        raise ValueError(f"mask must be a dict with keys among {tuple(shapes)}, got {mask!r}")
    out = {}
    for name, value in mask.items():
        if value is None:
            continue
        if name in fixed:
            raise ValueError(f"mask['{name}']: {name} is fixed (used as given), so it takes no mask")
        value = np.asarray(value)
        if value.shape != tuple(shapes[name]) or value.dtype.kind not in "bui":
            raise ValueError(f"mask['{name}'] must be a boolean array of shape {tuple(shapes[name])}, "
                             f"got {value.dtype} of shape {value.shape}")
        value = value.astype(bool)
        empty = np.flatnonzero(~value.reshape(-1, value.shape[-1]).any(axis=-1))
        if len(empty):
            where = f"row {int(empty[0])} of " if value.ndim == 2 else ""
            raise ValueError(f"mask['{name}']: {where}{name} allows no entry (all structural zeros); "
                             f"each row needs a non-zero probability")
        if not value.all():
            out[name] = value
    return out
