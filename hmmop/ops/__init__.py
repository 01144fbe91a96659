"""hmmop's operators and what feeds them; no model knowledge.

- ``categorical``: ``hmm_forward`` on symbol sequences (the CustomOp, its prop, the checked wrapper);
- ``dense``: ``hmm_forward_dense`` on (batch, T, N) log-emissions (the same three);
- ``model_axis``: ``hmm_forward`` and ``hmm_forward_dense`` with a model axis - K models in one call, every
  model on every sequence or one model index per sequence (their CustomOps; the native ones are in ``native``);
- ``native``: the native operators of hmmop/libhmmop_op.so, their loader and guards;
- ``ndarray_path``, ``dense_ndarray``: the CustomOps' NDArray paths (the GPU route);
- ``unroll``: the baseline autograd unroll with the same contracts;
- ``checks``, ``ndview``, ``threads``: input checks, zero-copy views of NDArrays, the thread count.

Below them: the compiled kernel (hmmop._kernel).  Nothing here imports from hmmop.nn, hmmop.fit,
hmmop.emissions, hmmop.models or hmmop.cli.
"""
