"""The seed gist's training loop, rewritten on hmmop.  Run: python examples/gist.py

1. The gist reproduced exactly.  Its recursion broadcast pi away, so what it
   trained and printed is the model with pi = ones; the same logits, plain
   SGD with lr 1e-2 on the summed (not per-symbol) loss, 1000 steps.
2. The model the gist meant: its pi = [0.6, 0.1, 0.2, 0.1], held fixed.
3. The same data learned from scratch the way one would use hmmop: random
   initialisation, Adam, per-symbol loss, all of A, B and pi learned.
"""
import numpy as np

import hmmop
from hmmop.gist import GIST_A, GIST_B, GIST_OBS, GIST_PI

np.set_printoptions(precision=3, suppress=True)


def report(step, ll):
    if step % 100 == 0:
        print(f"{step} - log-likelihood {ll:.4f}")


def show(title, model, history):
    print(f"== {title}\nlog-likelihood {history[-1]:.4f} at step {len(history) - 1} (before its update)")
    print("A =\n", model.A, "\nB (states x symbols) =\n", model.B, "\npi =", model.pi, "\n")


gist = hmmop.HMM.from_logits(GIST_A, GIST_B, fixed=("pi",))
gist.set_probabilities(pi=np.ones(4))
show("1. the gist, reproduced (pi = ones)", gist,
     gist.fit([GIST_OBS], epochs=1000, normalize=False, callback=report))

meant = hmmop.HMM.from_logits(GIST_A, GIST_B, fixed=("pi",))
meant.set_probabilities(pi=GIST_PI)
show("2. the model the gist meant (pi = [0.6, 0.1, 0.2, 0.1])", meant,
     meant.fit([GIST_OBS], epochs=1000, normalize=False, callback=report))

fresh = hmmop.HMM(n_states=4, n_symbols=3, seed=0)
show("3. from a random start with Adam", fresh,
     fresh.fit([GIST_OBS], epochs=500, optimizer="adam", learning_rate=0.05))
