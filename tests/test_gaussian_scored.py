"""GaussianHMM.fit's one pass over X for EM from parameters already set (GaussianEmission.prepare_scored:
the data check and the first E-step's log-densities together): the same fit, bit for bit, as the check
and the log-densities made apart (the path every other fit takes), missing rows counted as the check
counts them (tol per observed row), and bad data refused with check_data's ValueError, the model
untouched."""
import numpy as np
import pytest

import hmmop
from hmmop.emissions import GaussianEmission

N, D = 3, 4


def start(kind="diag", seed=0):
    rng = np.random.default_rng(seed)
    A = rng.dirichlet(np.ones(N) * 3, N)
    pi = rng.dirichlet(np.ones(N))
    means = rng.normal(0.0, 3.0, (N, D))
    covars = {"diag": rng.uniform(0.5, 2.0, (N, D)), "spherical": rng.uniform(0.5, 2.0, N),
              "full": np.array([np.eye(D) * s for s in rng.uniform(0.5, 2.0, N)]),
              "tied": np.eye(D) * 1.5}[kind]
    return hmmop.GaussianHMM.from_parameters(A, pi, means, covars, covariance_type=kind, dtype="float64")


def data(seed=1, missing=()):
    rng = np.random.default_rng(seed)
    lengths = np.array([120, 75, 200], dtype=np.int64)
    X = rng.normal(0.0, 3.0, (int(lengths.sum()), D))
    for t in missing:
        X[t] = np.nan
    return X, lengths


def fit_apart(model, *args, **kwargs):
    """fit with the check and the log-densities apart (no prepare_scored)."""
    kept = GaussianEmission.prepare_scored
    del GaussianEmission.prepare_scored
    try:
        return model.fit(*args, **kwargs)
    finally:
        GaussianEmission.prepare_scored = kept


@pytest.mark.parametrize("kind", ["diag", "spherical", "full", "tied"])
@pytest.mark.parametrize("missing", [(), (0, 7, 8, 300)])
def test_same_fit_as_check_and_densities_apart(kind, missing, monkeypatch):
    X, lengths = data(missing=missing)
    calls = []
    real = GaussianEmission.prepare_scored
    monkeypatch.setattr(GaussianEmission, "prepare_scored",
                        lambda self, *a: calls.append(1) or real(self, *a))
    one, two = start(kind), start(kind)
    h1 = one.fit(X, lengths, epochs=4, progress=False)
    assert calls, "the one-pass path did not run"
    monkeypatch.setattr(GaussianEmission, "prepare_scored", real)
    h2 = fit_apart(two, X, lengths, epochs=4, progress=False)
    np.testing.assert_array_equal(h1, h2)
    for name in ("A", "pi", "means", "covars"):
        np.testing.assert_array_equal(getattr(one, name), getattr(two, name), err_msg=name)


def test_tol_counts_the_observed_rows():
    """tol is per observed row: both paths stop after the same iteration, missing rows or not."""
    X, lengths = data(missing=range(0, 395, 3))
    one, two = start(), start()
    h1 = one.fit(X, lengths, epochs=200, tol=1e-3, progress=False)
    h2 = fit_apart(two, X, lengths, epochs=200, tol=1e-3, progress=False)
    assert 1 < len(h1) < 200
    np.testing.assert_array_equal(h1, h2)


@pytest.mark.parametrize("value, column", [(np.inf, 2), (-np.inf, 0), (np.nan, 3)])
def test_bad_row_is_refused_and_the_model_kept(value, column):
    X, lengths = data()
    X[57, column] = value
    model = start()
    before = (model.A.copy(), model.means.copy(), model.covars.copy())
    with pytest.raises(ValueError, match=r"X\[57\] has a non-finite value .* in column %d" % column):
        model.fit(X, lengths, epochs=3, progress=False)
    for got, want in zip((model.A, model.means, model.covars), before):
        np.testing.assert_array_equal(got, want)
    X[57, column] = 0.0
    assert len(model.fit(X, lengths, epochs=2, progress=False)) == 2      # usable after


def test_all_rows_missing_is_refused():
    X, lengths = data(missing=range(395))
    with pytest.raises(ValueError, match="no observed row"):
        start().fit(X, lengths, epochs=2, progress=False)


def test_other_forms_of_the_data_give_the_same_fit():
    """Fortran order and a list of sequences (made C-contiguous float64 before the pass) fit as X does;
    data of the wrong width get the usual ValueError."""
    X, lengths = data()
    want = start().fit(X, lengths, epochs=2, progress=False)
    np.testing.assert_array_equal(start().fit(np.asfortranarray(X), lengths, epochs=2, progress=False), want)
    seqs = np.split(X, np.cumsum(lengths)[:-1])
    np.testing.assert_array_equal(start().fit(seqs, epochs=2, progress=False), want)
    with pytest.raises(ValueError, match="5"):
        start().fit(np.zeros((10, 5)), [10], epochs=2, progress=False)
