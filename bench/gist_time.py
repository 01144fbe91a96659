"""The gist's 1000 SGD steps through HMM.fit, timed with the hmmop of a given source tree.

    python bench/gist_time.py TREE [ENGINE]

TREE: a checkout of hmmop with its extension built in place (e.g. an older commit in a git
worktree), imported instead of the installed one; ENGINE: HMM's engine (default "fused").
Prints the best of 5 runs after one warm-up, in milliseconds.  Run it alternately on two
trees to compare them on the same machine (docs/benchmarks.md, "whole training runs").
"""
import os
import sys
import time


def main(tree, engine="fused"):
    sys.path.insert(0, os.path.abspath(tree))
    import numpy as np
    import hmmop
    from hmmop import HMM
    from hmmop.gist import GIST_A, GIST_B, GIST_OBS
    if not os.path.abspath(hmmop.__file__).startswith(os.path.abspath(tree)):
        raise SystemExit(f"imported {hmmop.__file__}, not the hmmop of {tree}")

    def run():
        model = HMM.from_logits(GIST_A, GIST_B, fixed=("pi",), engine=engine)
        model.set_probabilities(pi=np.ones(4))
        start = time.perf_counter()
        model.fit([GIST_OBS], epochs=1000, normalize=False, progress=False)
        return time.perf_counter() - start

    run()
    print(f"{tree} ({engine}): {min(run() for _ in range(5)) * 1e3:.0f} ms")


if __name__ == "__main__":
    main(*sys.argv[1:])
