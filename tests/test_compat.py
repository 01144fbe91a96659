"""MXNet 1.9.1 on the numpy this Python has: either import order works, old numpy untouched.

CI runs this suite on Python 3.11 (numpy 1.23, which still has np.bool) and on 3.12
(numpy 1.26, which does not); the subprocesses below run the Python running the tests.
"""
import json
import subprocess
import sys

import numpy as np
import pytest

import hmmop
from reference import random_model

def run(code):
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_start_up_imports_nothing_heavy_and_arms_the_hook():
    out = run("import json, sys\n"
              "print(json.dumps(['numpy' in sys.modules, 'mxnet' in sys.modules,\n"
              "                  [type(f).__name__ for f in sys.meta_path]]))")
    numpy_loaded, mxnet_loaded, finders = json.loads(out)
    assert not numpy_loaded and not mxnet_loaded
    assert "MXNetImportHook" in finders          # installed by hmmop-mxnet-numpy.pth at start-up


@pytest.mark.parametrize("order", [("mxnet", "hmmop"), ("hmmop", "mxnet")])
def test_either_import_order_gives_the_same_numbers(order):
    rng = np.random.default_rng(0)
    A, B, pi = random_model(rng, 3, 4)
    obs = [[0, 1, 3, 2, 2], [3, 3, -1, -1, -1]]
    code = (f"import {order[0]}, {order[1]}, json\n"
            "import mxnet as mx, hmmop\n"
            f"p = [mx.nd.array(x, dtype='float64') for x in {json.dumps([A.tolist(), B.tolist(), pi.tolist()])}]\n"
            f"print(json.dumps(hmmop.hmm_forward(*p, {obs}).asnumpy().tolist()))\n")
    got = json.loads(run(code))
    import mxnet as mx
    expected = hmmop.hmm_forward(*[mx.nd.array(x, dtype="float64") for x in (A, B, pi)], obs).asnumpy()
    np.testing.assert_array_equal(got, expected)


def test_numpy_is_changed_only_where_it_lacks_the_alias():
    old = tuple(int(v) for v in np.__version__.split(".")[:2]) < (1, 24)
    if old:
        # numpy < 1.24 still defines np.bool itself (a deprecated alias served by its
        # module __getattr__): hmmop must not have put anything in its namespace.
        assert "bool" not in vars(np)
    else:
        assert vars(np)["bool"] is bool
