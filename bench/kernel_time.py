"""hmm_forward's batch driver (forward + backward, all threads) timed with the hmmop of a given source tree.

    python bench/kernel_time.py TREE [N ...]

TREE: a checkout of hmmop with its extension built in place (e.g. an older commit in a git
worktree), imported instead of the installed one.  For each N (default 4 16 64): 256 sequences
of 200 symbols (M=8), float32 and float64, the best of 15 runs after a warm-up, in ms.  Run it
alternately on two trees to compare them on the same machine (docs/benchmarks.md, "hmm_forward's speed").
"""
import os
import sys
import time


def main(tree, *ns):
    sys.path.insert(0, os.path.abspath(tree))
    import numpy as np
    import hmmop
    from hmmop import _kernel
    if not os.path.abspath(hmmop.__file__).startswith(os.path.abspath(tree)):
        raise SystemExit(f"imported {hmmop.__file__}, not the hmmop of {tree}")
    threads = hmmop.get_num_threads()
    cells = []
    for n in [int(x) for x in ns] or [4, 16, 64]:
        rng = np.random.default_rng(n)
        A, B, pi = rng.dirichlet(np.ones(n), n), rng.dirichlet(np.ones(8), n), rng.dirichlet(np.ones(n))
        obs32, lengths = _kernel.prepare_obs(rng.integers(0, 8, (256, 200)).astype(np.int32), 8)
        for dtype in (np.float32, np.float64):
            a, b, p = (x.astype(dtype) for x in (A, B, pi))
            g = np.ones(256, dtype)
            dA, dB, dpi = np.empty_like(a), np.empty_like(b), np.empty_like(p)

            def run():
                ws = _kernel.forward(a, b, p, obs32, lengths, threads)
                _kernel.backward(ws, g, dA, dB, dpi, 1, 1, 1, threads)

            run()
            best = min(_timed(run) for _ in range(15))
            cells.append(f"N={n} {np.dtype(dtype).name}: {best * 1e3:.2f} ms")
    print(f"{tree}: " + ", ".join(cells))


def _timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


if __name__ == "__main__":
    main(*sys.argv[1:])
