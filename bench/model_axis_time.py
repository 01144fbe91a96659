"""Timing of hmm_forward's model axis (issue 18): 100 models of N=4, M=3, one sequence of 30 each,
one forward + backward through the model-index form against 100 separate calls, and 1000 plain-SGD
steps of all 100 models.  Run from the repository root: python bench/model_axis_time.py"""
import sys
import time

sys.path.insert(0, ".")
import mxnet as mx  # noqa: E402
import numpy as np  # noqa: E402

import hmmop  # noqa: E402

K, N, M, T = 100, 4, 3, 30
rng = np.random.default_rng(0)


def norm(x):
    return x / x.sum(axis=-1, keepdims=True)


A0, B0, pi0 = norm(rng.random((K, N, N)) + .1), norm(rng.random((K, N, M)) + .1), norm(rng.random((K, N)) + .1)
obs = rng.integers(0, M, size=(K, T))
model = np.arange(K)


def best(fn, reps=5, inner=20):
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        mx.nd.waitall()
        times.append((time.perf_counter() - t0) / inner)
    return min(times)


def run(backend, threads):
    hmmop.set_num_threads(threads)
    A, B, pi = (mx.nd.array(x, dtype=np.float32) for x in (A0, B0, pi0))
    for x in (A, B, pi):
        x.attach_grad()
    obs_nd, model_nd = mx.nd.array(obs, dtype=np.int32), mx.nd.array(model, dtype=np.int32)

    def wrapper():
        with mx.autograd.record():
            ll = hmmop.hmm_forward(A, B, pi, obs_nd, model=model_nd, backend=backend)
        ll.backward()

    def custom():
        with mx.autograd.record():
            if backend == "native":
                ll = mx.nd.hmm_forward_by_model(A, B, pi, obs_nd, model_nd)
            else:
                ll = mx.nd.Custom(A, B, pi, obs_nd, model_nd, op_type="hmm_forward_by_model", backend=backend)
        ll.backward()

    sep = [(mx.nd.array(A0[k], dtype=np.float32), mx.nd.array(B0[k], dtype=np.float32),
            mx.nd.array(pi0[k], dtype=np.float32), mx.nd.array(obs[k:k + 1], dtype=np.int32)) for k in range(K)]
    for p in sep:
        for x in p[:3]:
            x.attach_grad()

    def separate(be):
        def go():
            for a, b, p, o in sep:
                with mx.autograd.record():
                    ll = hmmop.hmm_forward(a, b, p, o, backend=be)
                ll.backward()
        return go

    print(f"backend={backend} threads={threads}")
    for name, fn, inner in [("model-index wrapper", wrapper, 50), ("model-index op directly", custom, 50),
                            (f"{K} separate calls ({backend})", separate(backend), 2),
                            (f"{K} separate calls (native)", separate("native"), 2)]:
        if "(native)" in name and (backend == "native" or not hmmop.native.load()):
            continue
        t = best(fn, inner=inner)
        print(f"  {name:34s} {t * 1e3:8.3f} ms per step   {t / K * 1e6:7.2f} us per model-step")


def sgd(backend, threads, steps=1000, lr=0.01):
    """1000 plain-SGD steps on all 100 models (logits, softmax inside the record)."""
    hmmop.set_num_threads(threads)
    logits = [mx.nd.array(np.log(x), dtype=np.float32) for x in (A0, B0, pi0)]
    for x in logits:
        x.attach_grad()
    obs_nd, model_nd = mx.nd.array(obs, dtype=np.int32), mx.nd.array(model, dtype=np.int32)
    t0 = time.perf_counter()
    for _ in range(steps):
        with mx.autograd.record():
            A, B, pi = (mx.nd.softmax(x, axis=-1) for x in logits)
            loss = -hmmop.hmm_forward(A, B, pi, obs_nd, model=model_nd, backend=backend).sum()
        loss.backward()
        for x in logits:
            mx.nd.sgd_update(x, x.grad, lr=lr, wd=0.0, out=x)     # one in-place op per parameter
    mx.nd.waitall()
    total = time.perf_counter() - t0
    print(f"1000 plain-SGD steps of {K} models (softmax of logits, backend {backend}, {threads} threads): "
          f"{total:.3f} s ({total / steps * 1e3:.3f} ms per step, {total / steps / K * 1e6:.2f} us per model-step)")


if __name__ == "__main__":
    for threads in (1, 2):
        run("native", threads)
        run("cython", threads)
    run("ndarray", 1)
    for threads in (1, 2):
        sgd("native", threads)
        sgd("cython", threads)
