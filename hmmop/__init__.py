"""hmmop: a fused hidden-Markov-model forward/backward operator for Apache MXNet.

Importing the package registers the CustomOp ``hmm_forward``:

    ll = mx.nd.Custom(A, B, pi, obs, op_type='hmm_forward')

``hmm_forward`` is the checked wrapper around it and ``unroll_forward`` the
naive autograd baseline with the same contract.
"""
from .op import hmm_forward
from .threads import get_num_threads, set_num_threads
from .unroll import unroll_forward

__version__ = "0.1.0"
__all__ = ["hmm_forward", "unroll_forward", "get_num_threads", "set_num_threads"]
