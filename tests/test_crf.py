"""hmmop.nn.crf.CRF against independent oracles.

Brute force: every tag path of small K, T enumerated, scored by a direct sum of pytorch-crf's path score
(start + emissions + transitions + end), log Z by log-sum-exp, marginals by summing path probabilities,
the best path by argmax.  Finite differences in float64 for every parameter and the emissions.  The HMM
cross-check: the CRF with start = log pi, transitions = log A, emissions = log B[:, obs] is the HMM's
posterior over paths.  Plus hybridize/export/load in a fresh process, a gluon.Trainer loop, scale, bad input.
"""
import itertools
import os
import subprocess
import sys
import textwrap

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, gluon

import hmmop
from hmmop.nn.crf import CRF, scheme_constraints
from hmmop.ops import native

BIO_NAMES = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


def make(K, dtype="float64", seed=0, scale=1.0, **kw):
    crf = CRF(K, dtype=dtype, **kw)
    crf.initialize(mx.init.Normal(scale))
    rng = np.random.default_rng(seed)
    for name in ("transitions", "start", "end"):         # seeded values, independent of mxnet's RNG
        p = getattr(crf, name)
        p.set_data(mx.nd.array(rng.normal(0, scale, p.shape), dtype=dtype))
    return crf


def params(crf):
    return tuple(getattr(crf, n).data().asnumpy().astype(np.float64) for n in ("transitions", "start", "end"))


def path_score(crf, em, path):
    tr, st, en = params(crf)
    if len(path) == 0:
        return 0.0
    return (st[path[0]] + sum(em[t, y] for t, y in enumerate(path))
            + sum(tr[a, b] for a, b in zip(path[:-1], path[1:])) + en[path[-1]])


def allowed_path(crf, path):
    if len(path) == 0:
        return True
    return (crf.allowed_start[path[0]] and crf.allowed_end[path[-1]]
            and all(crf.allowed[a, b] for a, b in zip(path[:-1], path[1:])))


def brute(crf, em, L):
    """(log Z, marginals (L, K), best path, best score) of one sequence em (T, K) of length L."""
    K = em.shape[1]
    paths = [p for p in itertools.product(range(K), repeat=L) if allowed_path(crf, p)]
    s = np.array([path_score(crf, em, p) for p in paths])
    m = s.max()
    logz = m + np.log(np.exp(s - m).sum()) if L else 0.0
    marg = np.zeros((em.shape[0], K))
    for p, v in zip(paths, s):
        marg[np.arange(L), list(p)] += np.exp(v - logz)
    best = int(np.argmax(s))
    return logz, marg, np.array(paths[best], dtype=np.int64), s[best]


def batch(K, T=4, lengths=(4, 3, 1, 0), seed=1, dtype="float64", scale=1.0, crf=None):
    rng = np.random.default_rng(seed)
    em = rng.normal(0, scale, (len(lengths), T, K))
    if crf is None:
        tags = rng.integers(0, K, (len(lengths), T))
    else:   # a random allowed path per sequence (rejection; small K, T)
        tags = np.zeros((len(lengths), T), dtype=np.int64)
        for b, L in enumerate(lengths):
            while True:
                p = rng.integers(0, K, L)
                if allowed_path(crf, p):
                    tags[b, :L] = p
                    break
    return em, tags, np.array(lengths)


def nd(x, dtype):
    return mx.nd.array(x, dtype=dtype)


CONSTRAINED = [None, "BIO", "BIOES"]


def constrained_crf(kind, dtype="float64", seed=0, scale=1.0):
    if kind is None:
        return make(3, dtype, seed, scale)
    names = BIO_NAMES if kind == "BIO" else ["O", "B-X", "I-X", "E-X", "S-X"]
    return make(len(names), dtype, seed, scale, **scheme_constraints(names, kind))


@pytest.mark.parametrize("kind", CONSTRAINED)
def test_log_partition_marginals_nll_decode_against_brute_force(kind):
    crf = constrained_crf(kind)
    K = crf.num_tags
    em, tags, L = batch(K, crf=crf)
    E = nd(em, "float64")
    logz = crf.log_partition(E, L).asnumpy()
    marg = crf.marginals(E, L).asnumpy()
    nll = crf(E, nd(tags, "int32"), nd(L, "int64")).asnumpy()
    gold = crf.score(E, nd(tags, "int32"), L).asnumpy()
    paths, scores = crf.decode(E, L)
    for b, n in enumerate(L):
        z, m, best, best_score = brute(crf, em[b], n)
        g = path_score(crf, em[b], tags[b, :n])
        np.testing.assert_allclose(logz[b], z, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(marg[b], m, atol=1e-12)
        np.testing.assert_allclose(gold[b], g, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(nll[b], z - g, rtol=1e-10, atol=1e-12)
        np.testing.assert_array_equal(paths[b], best)
        np.testing.assert_allclose(scores[b], best_score, rtol=1e-12, atol=1e-12)
        assert allowed_path(crf, paths[b])


def test_forbidden_parameters_get_zero_gradient_and_nll_matches_unconstrained_brute_force_only_if_allowed():
    crf = constrained_crf("BIO")
    em, tags, L = batch(crf.num_tags, crf=crf)
    with autograd.record():
        loss = crf(nd(em, "float64"), nd(tags, "int32"), nd(L, "int64")).sum()
    loss.backward()
    assert np.all(crf.transitions.grad().asnumpy()[~crf.allowed] == 0)
    assert np.any(crf.transitions.grad().asnumpy()[crf.allowed] != 0)
    # marginals of I-tags at step 0 are exactly 0 (forbidden start)
    marg = crf.marginals(nd(em, "float64"), L).asnumpy()
    assert np.all(marg[:, 0, ~crf.allowed_start] == 0)


@pytest.mark.parametrize("kind", [None, "BIO"])
def test_finite_differences_of_every_parameter_and_the_emissions(kind):
    crf = constrained_crf(kind, seed=3)
    K = crf.num_tags
    em, tags, L = batch(K, T=3, lengths=(3, 2, 1), seed=4, crf=crf)
    w = np.array([0.7, -1.3, 2.0])
    E = nd(em, "float64")
    E.attach_grad()
    with autograd.record():
        loss = (crf(E, nd(tags, "int32"), nd(L, "int64")) * nd(w, "float64")).sum()
    loss.backward()

    def f():
        return float((crf(E, nd(tags, "int32"), nd(L, "int64")).asnumpy() * w).sum())

    h = 1e-6
    for name in ("transitions", "start", "end"):
        p = getattr(crf, name)
        grad = p.grad().asnumpy().copy()
        base = p.data().asnumpy().copy()
        num = np.zeros_like(base)
        for idx in np.ndindex(base.shape):
            for sign in (1, -1):
                x = base.copy()
                x[idx] += sign * h
                p.set_data(nd(x, "float64"))
                num[idx] += sign * f() / (2 * h)
        p.set_data(nd(base, "float64"))
        np.testing.assert_allclose(grad, num, atol=1e-7, err_msg=name)
    grad = E.grad.asnumpy().copy()
    num = np.zeros_like(em)
    for idx in np.ndindex(em.shape):
        for sign in (1, -1):
            x = em.copy()
            x[idx] += sign * h
            E[:] = nd(x, "float64")
            num[idx] += sign * f() / (2 * h)
    np.testing.assert_allclose(grad, num, atol=1e-7)
    assert np.all(grad[2, 1:] == 0)          # past the length: no gradient


def test_hmm_cross_check():
    """start = log pi, transitions = log A, emissions = log B[:, obs]: NLL of a path is
    log P(obs) - log P(obs, path) of the HMM, and decode is the HMM's Viterbi path and score."""
    rng = np.random.default_rng(7)
    N, M, T = 4, 5, 12
    A, B, pi = (rng.dirichlet(np.ones(n), size=s) for n, s in ((N, N), (M, N), (N, 1)))
    pi = pi[0]
    hmm = hmmop.HMM.from_probabilities(A, B, pi, dtype="float64")
    lengths = np.array([12, 7, 1, 9])
    obs = [rng.integers(0, M, n) for n in lengths]
    crf = CRF(N, dtype="float64")
    crf.initialize()
    crf.transitions.set_data(nd(np.log(A), "float64"))
    crf.start.set_data(nd(np.log(pi), "float64"))
    crf.end.set_data(mx.nd.zeros(N, dtype="float64"))
    em = np.zeros((len(obs), T, N))
    for b, o in enumerate(obs):
        em[b, :len(o)] = np.log(B[:, o]).T
    tags = rng.integers(0, N, (len(obs), T))
    nll = crf(nd(em, "float64"), nd(tags, "int32"), nd(lengths, "int64")).asnumpy()
    log_obs = hmm.score_sequences(obs)
    for b, o in enumerate(obs):
        s = tags[b, :len(o)]
        joint = np.log(pi[s[0]]) + np.log(B[s, o]).sum() + np.log(A[s[:-1], s[1:]]).sum()
        np.testing.assert_allclose(nll[b], log_obs[b] - joint, rtol=1e-10)
    paths, scores = crf.decode(nd(em, "float64"), lengths)
    _, hmm_paths = hmm.decode(obs)
    for b in range(len(obs)):
        np.testing.assert_array_equal(paths[b], hmm_paths[b])
    log_prob, _ = hmmop.inference.viterbi(A, B, pi, np.concatenate(obs), lengths=lengths)
    np.testing.assert_allclose(scores, log_prob, rtol=1e-12)


def test_float32_matches_float64_and_engines_agree():
    em, tags, L = batch(5, T=20, lengths=(20, 13, 1, 0, 7), seed=5, scale=3.0)
    out = {}
    for dtype in ("float32", "float64"):
        for engine in ("fused", "custom"):
            crf = constrained_crf("BIO", dtype=dtype, seed=2)
            crf2 = CRF(5, engine=engine, dtype=dtype, **scheme_constraints(BIO_NAMES))
            crf2.initialize()
            for n in ("transitions", "start", "end"):
                getattr(crf2, n).set_data(getattr(crf, n).data())
            ok = np.where(np.arange(20)[None] < L[:, None], 0, 0)    # allowed: tag O everywhere
            out[dtype, engine] = crf2(nd(em, dtype), nd(ok, "int32"), nd(L, "int64")).asnumpy()
            crf2.hybridize()
            np.testing.assert_array_equal(crf2(nd(em, dtype), nd(ok, "int32"), nd(L, "int64")).asnumpy(),
                                          out[dtype, engine])
    np.testing.assert_allclose(out["float32", "fused"], out["float64", "fused"], rtol=1e-5)
    np.testing.assert_array_equal(out["float32", "fused"], out["float32", "custom"])
    np.testing.assert_allclose(out["float64", "fused"], out["float64", "custom"], rtol=1e-14)


@pytest.mark.parametrize("scale", [30.0, 300.0])
def test_constraints_at_large_scales_stay_exact(scale):
    """Emissions of scale 30-300 with BIO zeros in A (float32 states fall out of the scaled recursion's
    range, which the driver detects): log Z and the NLL match brute force computed in float64."""
    crf = constrained_crf("BIO", seed=11)
    em, tags, L = batch(crf.num_tags, T=5, lengths=(5, 4, 5), seed=12, scale=scale, crf=crf)
    for dtype in ("float64", "float32"):
        c = CRF(crf.num_tags, dtype=dtype, **scheme_constraints(BIO_NAMES))
        c.initialize()
        for n in ("transitions", "start", "end"):
            getattr(c, n).set_data(getattr(crf, n).data().astype(dtype))
        logz = c.log_partition(nd(em.astype(dtype), dtype), L).asnumpy()
        ref = [brute(crf, em[b].astype(dtype).astype(np.float64), n)[0] for b, n in enumerate(L)]
        np.testing.assert_allclose(logz, ref, rtol=1e-6 if dtype == "float32" else 1e-12)


def _huge(kind, seed):
    crf = constrained_crf(kind, dtype="float32", seed=seed)
    em, tags, L = batch(crf.num_tags, T=30, lengths=(30, 17, 2), seed=2, scale=1e4, crf=crf)
    E = nd(em, "float32")
    E.attach_grad()
    with autograd.record():
        loss = crf(E, nd(tags, "int32"), nd(L, "int64")).sum()
    loss.backward()
    assert np.isfinite(loss.asnumpy()).all()
    for g in (E.grad, crf.transitions.grad(), crf.start.grad(), crf.end.grad()):
        assert np.isfinite(g.asnumpy()).all()
    assert np.abs(E.grad.asnumpy()).max() <= 1 + 1e-6            # marginals - one-hot gold
    paths, scores = crf.decode(E, L)
    assert np.isfinite(scores).all() and all(allowed_path(crf, p) for p in paths)
    return crf


def test_huge_scores_with_constraints_give_finite_gradients():
    _huge("BIO", 1)


def test_huge_scores_give_finite_losses_and_gradients():
    """Untrained-network scale and beyond (1e4) without constraints (no zeros in A)."""
    _huge(None, 1)
    # transitions spread over 10^4 (beyond exp's range in double): decode divides the scores, still exact
    big = make(3, seed=9, scale=5000.0)
    em2, _, L2 = batch(3, T=4, lengths=(4, 3), seed=10, scale=5000.0)
    paths, scores = big.decode(nd(em2, "float64"), L2)
    for b, n in enumerate(L2):
        _, _, best, best_score = brute(big, em2[b], n)
        np.testing.assert_array_equal(paths[b], best)
        np.testing.assert_allclose(scores[b], best_score, rtol=1e-12)


def test_scheme_constraints():
    c = scheme_constraints(BIO_NAMES, "BIO")
    assert c["allowed_start"].tolist() == [True, True, False, True, False]
    assert c["allowed_end"].all()
    A = c["allowed"]
    assert A[1, 2] and A[2, 2] and not A[0, 2] and not A[3, 2] and not A[4, 2] and A[4, 0] and A[2, 3]
    assert A[:, [0, 1, 3]].all()
    b = scheme_constraints(["O", "B-X", "I-X", "E-X", "S-X", "B-Y", "E-Y"], "bioes")
    A = b["allowed"]
    assert A[1, 2] and A[1, 3] and not A[1, 0] and not A[1, 4] and not A[1, 6] and not A[0, 2] and not A[3, 3]
    assert A[3, 0] and A[4, 5] and A[0, 4] and not A[5, 3] and A[5, 6]
    assert b["allowed_start"].tolist() == [True, True, False, False, True, True, False]
    assert b["allowed_end"].tolist() == [True, False, False, True, True, False, True]
    with pytest.raises(ValueError, match="neither 'O'"):
        scheme_constraints(["O", "X-PER"], "BIO")


def test_gluon_trainer_loop_learns():
    """Adam on embeddings + the hybridized CRF: the NLL falls; forbidden transitions never move."""
    crf = constrained_crf("BIO", dtype="float32", seed=3)
    em, tags, L = batch(crf.num_tags, T=10, lengths=(10, 8, 6, 3), seed=3, crf=crf)
    net = gluon.nn.Embedding(crf.num_tags, crf.num_tags)
    net.initialize(mx.init.Normal(0.1))
    tokens, args = nd(tags, "float32"), (nd(tags, "int32"), nd(L, "int64"))
    crf.hybridize()
    net.hybridize()
    params = crf.collect_params()
    params.update(net.collect_params())
    trainer = gluon.Trainer(params, "adam", {"learning_rate": 0.1})
    forbidden = crf.transitions.data().asnumpy()[~crf.allowed]
    losses = []
    for _ in range(25):
        with autograd.record():
            loss = crf(net(tokens), *args)
        loss.backward()
        trainer.step(len(L))
        losses.append(loss.sum().asscalar())
    assert losses[-1] < 0.1 * losses[0]
    np.testing.assert_array_equal(crf.transitions.data().asnumpy()[~crf.allowed], forbidden)


@pytest.mark.parametrize("kind", [None, "BIO"])
def test_grad_req_add_accumulates_when_hybridized(kind):
    """grad_req 'add' (gradient accumulation) on the parameters and the emissions: two backward passes give
    twice one pass's gradients, imperatively and hybridized (with and without static_alloc)."""
    ref = None
    for hybrid in (None, {}, {"static_alloc": True}, {"static_alloc": True, "static_shape": True}):
        crf = constrained_crf(kind, dtype="float32", seed=8)
        em, tags, L = batch(crf.num_tags, T=6, lengths=(6, 4, 1, 0), seed=9, crf=crf)
        req = "write" if ref is None else "add"
        crf.collect_params().setattr("grad_req", req)
        if hybrid is not None:
            crf.hybridize(**hybrid)
        E = nd(em, "float32")
        E.attach_grad(grad_req=req)
        for _ in range(1 if ref is None else 2):
            with autograd.record():
                loss = crf(E, nd(tags, "int32"), nd(L, "int64"))
            loss.backward()
        grads = [E.grad.asnumpy()] + [getattr(crf, n).grad().asnumpy() for n in ("transitions", "start", "end")]
        if ref is None:
            ref = grads
            continue
        for name, g, r in zip(("emissions", "transitions", "start", "end"), grads, ref):
            np.testing.assert_allclose(g, 2 * r, rtol=1e-5, atol=1e-6, err_msg=f"{name}, hybridize({hybrid})")


def test_gradient_flows_into_a_network():
    crf = constrained_crf(None, dtype="float32")
    net = gluon.nn.Dense(3, flatten=False)
    net.initialize(mx.init.Normal(0.5))
    x = nd(np.random.default_rng(0).normal(size=(2, 5, 4)), "float32")
    with autograd.record():
        loss = crf(net(x), nd([[0, 1, 2, 0, 1], [2, 2, 0, 0, 0]], "int32"), nd([5, 3], "int64")).sum()
    loss.backward()
    assert np.abs(net.weight.grad().asnumpy()).sum() > 0


@pytest.mark.skipif(not native.load(), reason="the native operator library is not loaded")
def test_hybridize_export_and_run_in_a_fresh_process(tmp_path):
    crf = constrained_crf("BIO", dtype="float32", seed=4)
    crf.hybridize()
    em, tags, L = batch(crf.num_tags, T=6, lengths=(6, 4, 1), seed=6, crf=crf)
    args = nd(em, "float32"), nd(tags, "int32"), nd(L, "int64")
    expected = crf(*args).asnumpy()
    crf.export(str(tmp_path / "crf"))
    code = textwrap.dedent(f"""
        import sys
        import mxnet as mx
        import numpy as np
        from mxnet import gluon
        mx.library.load({native.library_path()!r}, verbose=False)
        block = gluon.SymbolBlock.imports({str(tmp_path / "crf-symbol.json")!r}, ["data0", "data1", "data2"],
                                          {str(tmp_path / "crf-0000.params")!r})
        out = block(mx.nd.array({em.tolist()!r}), mx.nd.array({tags.tolist()!r}, dtype="int32"),
                    mx.nd.array({L.tolist()!r}, dtype="int64"))
        print(out.asnumpy().tolist())
        print("hmmop" in sys.modules)
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180,
                         cwd=str(tmp_path), env=env)
    assert out.returncode == 0, out.stderr
    values, imported = out.stdout.splitlines()
    np.testing.assert_allclose(np.array(eval(values), dtype=np.float32), expected, rtol=1e-6)
    assert imported == "False"


def test_bad_input_is_a_clear_error():
    crf = constrained_crf("BIO", dtype="float32")
    em, tags, L = batch(crf.num_tags, T=4, lengths=(4, 2), seed=1, crf=crf)
    E, Y, LL = nd(em, "float32"), nd(tags, "int32"), nd(L, "int64")

    def bad_tags(b, t, v):
        y = tags.copy()
        y[b, t] = v
        return nd(y, "int32")

    with pytest.raises(ValueError, match=r"tags\[1, 1\] = 7 is outside \[0, K\)"):
        crf(E, bad_tags(1, 1, 7), LL)
    with pytest.raises(ValueError, match="outside"):
        crf(E, bad_tags(0, 2, -1), LL)
    crf(E, bad_tags(1, 3, 99), LL)                       # past the length: ignored
    with pytest.raises(ValueError, match="not an allowed start tag"):
        crf(E, bad_tags(0, 0, 2), LL)
    y = tags.copy()
    y[0, :] = [0, 0, 4, 4]                               # O -> I-LOC
    with pytest.raises(ValueError, match=r"tags\[0, 1:3\] = 0 -> 4 is a forbidden transition"):
        crf(E, nd(y, "int32"), LL)
    with pytest.raises(ValueError, match=r"lengths\[0\] = 5 is outside \[0, T\] = \[0, 4\]"):
        crf(E, Y, nd([5, 2], "int64"))
    with pytest.raises(ValueError, match="lengths must have shape"):
        crf(E, Y, nd([4, 2, 1], "int64"))
    with pytest.raises(ValueError, match="tags must have shape"):
        crf(E, nd(tags[:1], "int32"), LL)
    with pytest.raises(ValueError, match="emissions must have shape"):
        crf(nd(em[:, :, :3], "float32"), Y, LL)
    with pytest.raises(TypeError, match="float32"):
        crf(nd(em, "float64"), Y, LL)
    with pytest.raises(ValueError, match="lengths"):
        crf.decode(E, [4, 9])
    with pytest.raises(ValueError, match="allowed must have shape"):
        CRF(3, allowed=np.ones((2, 2), bool))
    with pytest.raises(ValueError, match="at least one"):
        CRF(2, allowed_start=[False, False])


@pytest.mark.parametrize("kind", [None, "BIO"])
def test_k_best_against_brute_force(kind):
    """The k best allowed paths, best first, with their scores; -inf past the number of allowed paths."""
    crf = constrained_crf(kind, seed=5)
    K = crf.num_tags
    em, _, L = batch(K, T=4, lengths=(4, 3, 1, 0, 2), seed=6)
    k = 30
    paths, scores = crf.decode(nd(em, "float64"), L, k=k)
    assert scores.shape == (len(L), k)
    for b, n in enumerate(L):
        every = [p for p in itertools.product(range(K), repeat=n) if allowed_path(crf, p)]
        s = np.array([path_score(crf, em[b], p) for p in every])
        order = np.argsort(-s, kind="stable")[:k]
        got = len(order)
        np.testing.assert_allclose(scores[b, :got], s[order], rtol=1e-12, atol=1e-12)
        assert np.all(scores[b, got:] == -np.inf)
        assert len(paths[b]) == got
        for p, i in zip(paths[b], order):
            np.testing.assert_array_equal(p, every[i])
    best, best_scores = crf.decode(nd(em, "float64"), L)
    np.testing.assert_array_equal(best_scores, scores[:, 0])
    with pytest.raises(ValueError, match="k must be"):
        crf.decode(nd(em, "float64"), L, k=0)
