"""Models too large to allocate are refused up front, in one line that says what was asked for and why it
cannot be (entries, bytes, MXNet's element limit or the machine's memory): by hmmop.ops.checks.check_sizes,
in the constructors (EmissionHMM, the emission components) and on the command line (`hmmop fit --states`).

Nothing here allocates a large array: a check that did not run first would show as a MemoryError, an
MXNetError or a very slow test, not as the message asserted."""
import re
from unittest import mock

import mxnet as mx
import numpy as np
import pytest

import hmmop
from hmmop.emissions import CategoricalEmission, GaussianEmission
from hmmop.ops import checks
from hmmop.ops.checks import MAX_ENTRIES, check_sizes

from test_cli import hmmop as run

BIG = 10**12                                 # bytes of memory: enough for any shape the limit lets through


def test_the_limit_is_mxnets():
    # MXNet 1.9.1 refuses an NDArray of 2^31 - 1 entries (its check: Size() < 2^31 - 1) before allocating it
    assert MAX_ENTRIES == 2**31 - 2
    with pytest.raises(mx.base.MXNetError, match="larger than 2\\^31 elements"):
        mx.nd.empty((MAX_ENTRIES + 1,), dtype="int8").wait_to_read()


def test_entries_at_the_limit_pass_and_one_more_is_refused():
    check_sizes({"B": (2, MAX_ENTRIES // 2)}, "float32", memory=BIG)
    with pytest.raises(ValueError) as info:
        check_sizes({"pi": (3,), "B": (1, MAX_ENTRIES + 1)}, "float32", memory=BIG)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"B of shape (1, {MAX_ENTRIES + 1}) would have 2,147,483,647 entries "
                              f"(8.59 GB in float32)")
    assert "2,147,483,646 (2^31 - 2) entries in one array" in message and "MXNet 1.9.1" in message


def test_the_states_of_the_issue():
    with pytest.raises(ValueError, match=re.escape("A of shape (100000, 100000) would have 10,000,000,000 entries "
                                                   "(80 GB in float64)")):
        check_sizes({"A": (100000, 100000), "pi": (100000,)}, np.float64, memory=BIG)


def test_memory_that_cannot_be_had():
    shapes = {"A": (1000, 1000), "B": (1000, 250), "pi": (1000,)}
    check_sizes(shapes, "float64", memory=10**7 + 8000)                       # exactly enough
    with pytest.raises(ValueError, match=re.escape("A, B and pi would take 10 MB in float64 (A of shape "
                                                   "(1000, 1000) alone 8 MB): more than the 5 MB of memory "
                                                   "this machine has")):
        check_sizes(shapes, "float64", memory=5 * 10**6)
    with pytest.raises(ValueError, match=re.escape("A of shape (1000, 1000) (1,000,000 entries) would take 4 MB "
                                                   "in float32: more than the 1 MB")):
        check_sizes({"A": (1000, 1000)}, "float32", memory=10**6)
    # the default is this machine's memory
    with mock.patch.object(checks, "physical_memory", return_value=10**6):
        with pytest.raises(ValueError, match="more than the 1 MB of memory"):
            check_sizes({"A": (1000, 1000)}, "float32")
    assert checks.physical_memory() is None or checks.physical_memory() > 10**8


def test_shapes_it_cannot_read_are_left_to_the_callers_checks():
    for shapes in ({"A": (0, 0)}, {"A": (-3, -3)}, {"A": ("x", 2)}, {"A": (2.5, 2)}, {"A": (True, 1)},
                   {"A": None}):
        check_sizes(shapes, "float32", memory=1)
    check_sizes({"A": (10**6, 10**6)}, "not a dtype")


# -- the constructors --------------------------------------------------------------------------
def test_core_model_refuses_a_transition_matrix_mxnet_cannot_hold():
    emission = CategoricalEmission(100000, 3)
    with mock.patch.object(np, "full", side_effect=AssertionError("allocated")):
        with pytest.raises(ValueError, match=re.escape("A of shape (100000, 100000) would have "
                                                       "10,000,000,000 entries (40 GB in float32)")):
            hmmop.EmissionHMM(100000, emission)


def test_discrete_model_refuses_a_transition_matrix_mxnet_cannot_hold():
    # HMM on the core (EmissionHMM's check), or HMM.__init__ calling check_sizes itself
    with pytest.raises(ValueError, match=re.escape("A of shape (100000, 100000) would have 10,000,000,000 entries "
                                                   "(40 GB in float32)")):
        hmmop.HMM(100000, n_symbols=3)


def test_gaussian_model_refuses_too_many_states():
    with pytest.raises(ValueError, match=re.escape("A of shape (60000, 60000) would have 3,600,000,000 entries")):
        hmmop.GaussianHMM(60000, n_features=2, dtype="float64")


def test_emission_components_refuse_their_own_parameters():
    with pytest.raises(ValueError, match=re.escape("B of shape (3, 1000000000) would have 3,000,000,000 entries "
                                                   "(24 GB in float64)")):
        CategoricalEmission(3, 10**9)
    with pytest.raises(ValueError, match=re.escape("covars of shape (3, 30000, 30000) would have "
                                                   "2,700,000,000 entries")):
        GaussianEmission(3, 30000, covariance_type="full")
    with pytest.raises(ValueError, match=re.escape("covars of shape (50000, 50000) would have 2,500,000,000")):
        GaussianEmission(2, 50000, covariance_type="tied")
    with mock.patch.object(checks, "physical_memory", return_value=10**6):
        with pytest.raises(ValueError, match=re.escape("means and covars would take 9.6 MB in float64")):
            GaussianEmission(3, 200000, covariance_type="diag")
    # what the constructors checked before still comes first for values that are not sizes
    with pytest.raises(ValueError, match="n_states must be a positive integer"):
        GaussianEmission(0, 2)
    with pytest.raises(ValueError, match="covariance_type must be one of"):
        GaussianEmission(2, 2, covariance_type="round")


# -- the command line --------------------------------------------------------------------------
def test_cli_fit_too_many_states_is_one_line_before_the_model_is_made(tmp_path):
    book = tmp_path / "book.txt"
    book.write_text("a small book\nof two lines\n", encoding="utf-8")
    with mock.patch.object(hmmop.HMM, "__init__", side_effect=AssertionError("model made")):
        status, out, err = run("fit", book, "--states", 100000, cwd=tmp_path)
    assert status == 2 and out == ""
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("hmmop fit: error: --states 100000 with 14 distinct symbols: A of shape (100000, 100000) "
                          "would have 10,000,000,000 entries (40 GB in float32): MXNet 1.9.1")
    assert "2^31 - 2" in err
    assert not (tmp_path / "book.hmmop.npz").exists()


def test_cli_fit_gaussian_too_large(tmp_path):
    data = tmp_path / "walk.csv"
    data.write_text("1,2,3\n4,5,6\n7,8,9\n", encoding="utf-8")
    with mock.patch.object(hmmop.GaussianHMM, "__init__", side_effect=AssertionError("model made")):
        status, _, err = run("fit", data, "--emissions", "gaussian", "--states", 50000, "--dtype", "float64",
                             cwd=tmp_path)
    assert status == 2 and err.count("\n") == 1
    assert err.startswith("hmmop fit: error: --states 50000 with 3 features, diag covariances: A of shape "
                          "(50000, 50000) would have 2,500,000,000 entries (20 GB in float64)")
    with mock.patch.object(checks, "physical_memory", return_value=10**3), \
            mock.patch.object(hmmop.GaussianHMM, "__init__", side_effect=AssertionError("model made")):
        status, _, err = run("fit", data, "--emissions", "gaussian", "--states", 30, "--covariance", "full",
                             cwd=tmp_path)
    assert status == 2
    assert "--states 30 with 3 features, full covariances: A, pi, means and covars would take 5.16 kB in " \
           "float32 (A of shape (30, 30) alone 3.6 kB): more than the 1 kB of memory this machine has" in err
