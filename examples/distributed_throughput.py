"""Throughput of one process against workers of a dist_sync job on this machine (docs/distributed.md).

    python examples/distributed_throughput.py [--workers 2] [--sequences 2000] [--length 500]

Fits 8 states / 20 symbols on random data, full batch, Adam: first as --workers workers of a job
started by hmmop.fit.distributed.launch (one kernel thread each), then in this process (with the
kernel's default threads, then one thread), printing the time per epoch, the symbols per second
and the cost of one sum through the servers (push + pull of the gradients, waited for).
"""
import argparse
import os
import sys
import time

import numpy as np

import hmmop
from hmmop import HMM
from hmmop.fit import distributed


def data(n, length):
    rng = np.random.default_rng(0)
    return [rng.integers(0, 20, size=length) for _ in range(n)]


def epoch_time(seqs, kv, epochs=10):
    model = HMM(8, 20, seed=0)
    model.fit(seqs, kvstore=kv, epochs=2, optimizer="adam", learning_rate=0.05, progress=False)   # warm-up
    start = time.perf_counter()
    model.fit(seqs, kvstore=kv, epochs=epochs, optimizer="adam", learning_rate=0.05, progress=False)
    return (time.perf_counter() - start) / epochs


def sum_time(kv, rounds=200):
    import mxnet as mx
    arrays = [mx.nd.zeros((8, 8)), mx.nd.zeros((8, 20)), mx.nd.zeros(8), mx.nd.zeros(2)]
    summer = distributed.Allreduce(kv, arrays)
    for _ in range(20):
        summer(arrays)
    arrays[-1].asnumpy()
    start = time.perf_counter()
    for _ in range(rounds):
        summer(arrays)
        arrays[-1].asnumpy()
    return (time.perf_counter() - start) / rounds


def report(label, seconds, n_symbols, extra=""):
    print(f"{label:<34} {seconds * 1e3:8.1f} ms/epoch {n_symbols / seconds / 1e6:8.2f} M symbols/s{extra}",
          flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--sequences", type=int, default=2000)
    parser.add_argument("--length", type=int, default=500)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    seqs = data(args.sequences, args.length)
    n_symbols = args.sequences * args.length
    if args.worker:
        hmmop.set_num_threads(1)
        kv = distributed.kvstore()
        seconds, comm = epoch_time(seqs, kv), sum_time(kv)
        if kv.rank == 0:
            report(f"{kv.num_workers} workers x 1 thread, 1 server", seconds, n_symbols,
                   f", a sum through the servers {comm * 1e3:.2f} ms")
        return
    print(f"{n_symbols} symbols ({args.sequences} x {args.length}), 8 states, 20 symbols, full-batch Adam")
    # The job first: while it runs, this process stays idle (it has done no MXNet work yet).
    start = time.perf_counter()
    status = distributed.launch(args.workers, 1, [sys.executable, os.path.abspath(__file__), "--worker",
                                                  "--sequences", str(args.sequences), "--length",
                                                  str(args.length)], timeout=600)
    print(f"(the job took {time.perf_counter() - start:.1f} s in all, start-up included)")
    report(f"1 process, {hmmop.get_num_threads()} threads", epoch_time(seqs, None), n_symbols)
    hmmop.set_num_threads(1)
    report("1 process, 1 thread", epoch_time(seqs, None), n_symbols)
    sys.exit(status)


if __name__ == "__main__":
    main()
