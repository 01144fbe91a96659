"""How hmmop's parameters are learned, whatever the model.

- ``trainer``: ``Trainer``, the gradient training loop of a block (minibatches, optimizers, kvstores);
- ``together``: ``TogetherTrainer``, that loop for K models stacked on a leading axis (restarts, fit_many);
- ``labels``: known states of some steps (``check_labels``, ``Labels``, ``supervised_counts``);
- ``em``: Baum-Welch from the operator's gradients (``expected_counts``, ``m_step``, ``fit_em``);
- ``monitor``: what every fit shares (epoch loop, history, tol, bar, ``DivergenceError``);
- ``priors``: Dirichlet priors and their MAP update ``m_step``;
- ``distributed``: data-parallel training over MXNet's ``dist_sync`` kvstore and the ``hmmop launch``
  watchdog.

Below: hmmop.nn, hmmop.ops, hmmop.data.  Nothing here imports from hmmop.emissions, hmmop.models or
hmmop.cli.
"""
