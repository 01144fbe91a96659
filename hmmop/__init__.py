"""hmmop: a fused hidden-Markov-model forward/backward operator for Apache MXNet.

Importing the package registers the CustomOp ``hmm_forward`` and loads the
native operator of the same name (hmmop.native; if it cannot, one warning
says why and everything runs on the CustomOp):

    ll = mx.nd.Custom(A, B, pi, obs, op_type='hmm_forward')
    ll = mx.nd.hmm_forward(A, B, pi, obs)      # native; see hmmop.native for its limits

``hmm_forward`` is the checked wrapper around it and ``unroll_forward`` the
naive autograd baseline with the same contract.  ``HMM`` trains a model on
top of it, by gradient descent or EM, and decodes, scores and samples with it
(``HMMBlock`` is its gluon block, ``Trainer`` its training loop).  The
algorithms are free functions: ``hmmop.inference`` (viterbi, posteriors,
sample) and ``hmmop.em`` (expected_counts, m_step, fit_em).
"""
import _hmmop_mxnet_hook

_hmmop_mxnet_hook.restore_numpy_names()     # before mxnet is first imported (numpy >= 1.24)

from .fit import em  # noqa: E402
from . import inference
from .ops import native
from .nn.hmm_block import HMMBlock
from .nn.crf import CRF, scheme_constraints
from .ops.dense import hmm_forward_dense
from .models.hmm import HMM
from .models import GMMHMM, EmissionHMM, GaussianHMM, MultinomialHMM, PoissonHMM, Selection, fit_many, load, select
from .fit.monitor import DivergenceError
from .ops.categorical import hmm_forward
from .ops.threads import get_num_threads, set_num_threads
from .fit.trainer import Trainer
from .ops.unroll import unroll_forward, unroll_forward_dense
from . import _old_paths

native.load()
_old_paths.install()            # import hmmop.op, hmmop.trainer, ...: the paths from before the subpackages


def __getattr__(name):
    """hmmop.hmmlearn on first use (it imports scikit-learn, so not with the package); hmmop.op,
    hmmop.trainer, ...: an old module path as an attribute of the package, as before."""
    if name == "hmmlearn":
        import importlib
        return importlib.import_module(".hmmlearn", __name__)
    return _old_paths.attribute(name)


__version__ = "0.1.0"
__all__ = ["HMM", "GaussianHMM", "GMMHMM", "PoissonHMM", "MultinomialHMM", "EmissionHMM", "load", "fit_many",
           "select", "Selection", "CRF",
           "scheme_constraints", "HMMBlock", "Trainer", "DivergenceError", "em", "inference", "hmm_forward",
           "hmm_forward_dense", "native", "unroll_forward", "unroll_forward_dense", "get_num_threads",
           "set_num_threads"]
