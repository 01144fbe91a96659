"""hmmop's gluon blocks on the operators of hmmop.ops.

- ``hmm_block``: ``HMMBlock``, an HMM's parameters (softmax-parameterised, with masks for structural
  zeros) and its log-likelihood through ``hmm_forward`` (or another engine), hybridizable.
- ``crf``: ``CRF``, a linear-chain CRF (NLL, log-partition, marginals, Viterbi and k-best decoding,
  BIO/BIOES constraints from ``scheme_constraints``) on ``hmm_forward_dense``.

Below: hmmop.ops.  Nothing here imports from hmmop.fit, hmmop.emissions, hmmop.models or hmmop.cli.
"""
