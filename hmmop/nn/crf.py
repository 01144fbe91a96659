"""CRF: a linear-chain conditional random field for gluon on the fused hmm_forward_dense.

    crf = CRF(num_tags)                      # or CRF(K, **scheme_constraints(names, "BIO"))
    crf.initialize()
    nll = crf(emissions, tags, lengths)      # (batch,) = log Z - gold score, differentiable
    paths, scores = crf.decode(emissions, lengths)          # k=5: the 5 best paths of each sequence
    logz, marg = crf.log_partition(emissions, lengths), crf.marginals(emissions, lengths)

Shapes: emissions (batch, T, K) float32/float64 scores from any network; tags (batch, T)
integers (anything at or past a sequence's length); lengths (batch,) integers in [0, T]
(None: every sequence T steps).  A path's score is pytorch-crf's:
    start[y_1] + sum_t emissions[t, y_t] + sum_{t>1} transitions[y_{t-1}, y_t] + end[y_L].

Parameters (gluon, of the block's dtype): transitions (K, K) (row: previous tag, column: next),
start (K,), end (K,); init: any gluon initialiser (default Uniform(0.1), as pytorch-crf).

Constraints: allowed (K, K), allowed_start (K,), allowed_end (K,) booleans.  A forbidden
transition/start/end is exactly impossible in the NLL, the log-partition, the marginals and
decoding (a structural zero of the HMM's A, a zero of pi, a -inf log-emission at the last step);
the parameters' entries there get an exactly zero gradient.  ``scheme_constraints`` builds them
for BIO and BIOES tag names.

How: log Z is hmm_forward_dense(A, pi, log_emission, lengths) with A = exp(transitions - c) * allowed
(c, the largest allowed transition score, added back once per transition), pi = allowed_start, and
log_emission = emissions + start at step 0 + end at each sequence's last step (one-hot of lengths -
1 built in the graph: hybridizable), so start, end and emissions may have any scale (the operator
shifts each step by its largest score).  Transition scores more than ~87 (float32; ~708 in float64)
below the largest allowed one count as forbidden in log Z.  d log Z / d emissions is the marginals.
The gold score is gathers of the same log-emissions (pick) and transitions (take, pick); the NLL takes c
off each gold transition instead of adding it back to log Z (about 33 MXNet operators in all).  Decoding
is the C Viterbi of hmmop._kernel (double) on the host copy; k best by Lawler's partition of the path
space, one batched Viterbi call per rank.  No Python loop over time or over sequences in training or decoding (only the
final lists of paths are built per sequence).
"""
import mxnet as mx
import numpy as np
from mxnet import gluon

from .. import _kernel
from ..ops import checks, native
from ..ops.threads import get_num_threads
from ..ops.dense import OP_TYPE

ENGINES = ("fused", "native", "custom")
_BIG = 1e30         # pushes forbidden transitions out of the max
_THREAD_WORK = 250000   # multiply-adds per decoding thread at least (as csrc/hmm_batch.c's HMM_THREAD_WORK)


class CRF(gluon.HybridBlock):
    """Linear-chain CRF; see the module docstring.

    num_tags: K.  allowed (K, K), allowed_start (K,), allowed_end (K,): boolean constraints (None:
    everything allowed).  init: initialiser of the three parameters.  dtype: 'float32'/'float64'.
    engine: 'fused' (the native op on a CPU context where it is loaded, else the CustomOp),
    'native' or 'custom'.  check: check tags/lengths on the host before each imperative call.
    """

    def __init__(self, num_tags, allowed=None, allowed_start=None, allowed_end=None, init=None,
                 dtype="float32", engine="fused", check=True, **kwargs):
        super().__init__(**kwargs)
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
        K = int(num_tags)
        if K < 1:
            raise ValueError(f"num_tags must be at least 1, got {num_tags}")
        self.num_tags, self.engine, self.check, self._dtype = K, engine, bool(check), np.dtype(dtype).name
        if engine == "native" and not native.load():
            raise RuntimeError(f"engine 'native' is not available: {native.unavailable_reason()}")
        self.allowed = _bool_mask(allowed, (K, K), "allowed")
        self.allowed_start = _bool_mask(allowed_start, (K,), "allowed_start")
        self.allowed_end = _bool_mask(allowed_end, (K,), "allowed_end")
        if not self.allowed_start.any() or not self.allowed_end.any():
            raise ValueError("allowed_start and allowed_end must each allow at least one tag")
        self._native = self._native_for(mx.cpu())
        init = mx.init.Uniform(0.1) if init is None else init
        with self.name_scope():
            self.transitions = self.params.get("transitions", shape=(K, K), dtype=dtype, init=init)
            self.start = self.params.get("start", shape=(K,), dtype=dtype, init=init)
            self.end = self.params.get("end", shape=(K,), dtype=dtype, init=init)
            # constraints as constants (inputs of the graph, so an exported model holds them), only
            # where something is forbidden
            self.masks = tuple(name for name, m in (("trans_mask", self.allowed), ("start_mask", self.allowed_start),
                                                    ("end_mask", self.allowed_end)) if not m.all())
            for name, m in (("trans_mask", self.allowed), ("start_mask", self.allowed_start),
                            ("end_mask", self.allowed_end)):
                if name in self.masks:
                    setattr(self, name, self.params.get_constant(name, mx.nd.array(m, dtype=dtype)))

    # -- engine choice (as HMMBlock) --------------------------------------------------------------
    def _native_for(self, ctx):
        if self.engine == "native":
            if ctx.device_type != "cpu":
                raise ValueError(f"engine 'native' runs on the CPU only, not on {ctx}; use 'fused'")
            return True
        return self.engine == "fused" and ctx.device_type == "cpu" and native.load()

    def forward(self, emissions, tags, lengths=None):
        """nll (batch,) = log Z - gold score; checks the inputs first (NDArrays, check=True)."""
        if isinstance(emissions, mx.nd.NDArray):
            lengths = self._lengths(emissions, lengths)
            if self.check:
                self.check_inputs(emissions, lengths, tags)
            use = self._native_for(emissions.context)
            if use != self._native:
                self._native = use
                self._clear_cached_op()
        return super().forward(emissions, tags, lengths)

    def hybrid_forward(self, F, emissions, tags, lengths, **params):
        # log Z - gold = (ll + n_trans * shift) - gold = ll - (gold with every transition score less shift):
        # the gold path has n_trans transitions, so the shift is taken off the gathered transitions instead
        # of being added back to log Z (fewer operators; the same value)
        le, ar, ts, _, ll = self._forward(F, emissions, lengths, params)
        return ll - self._path_score(F, le, tags, lengths, ts, ar)

    # -- the pieces, for F = mx.nd or mx.sym -------------------------------------------------------
    # MXNet spends ~10-40 us per operator whatever its size (more on a busy machine: most of its CPU kernels
    # open an OpenMP region), so these use few - about 33 for the NLL, was 60: the gold score is one pick of
    # the operator's log-emissions (start and end included) plus one pick of the rows take(transitions,
    # previous tags), masked by SequenceMask; the transitions' shift is taken off the gold's transitions.
    def _log_emissions(self, F, emissions, lengths, p):
        """(le (batch, T, K) = emissions + start at step 0 + end at each sequence's last step, last (batch, T)
        the one-hot of length - 1, ar (1, T) the step indices)."""
        ar = F.reshape(F.contrib.arange_like(emissions, axis=1), (1, -1))          # (1, T)
        last = F.broadcast_equal(ar, F.reshape(F.cast(lengths, self._dtype), (-1, 1)) - 1)
        # (not one dot of a (batch, T, 2) indicator with stack(start, end): hybridized, with grad_req 'add',
        # MXNet 1.9.1 adds that dot's gradient into start and end twice from the second backward on)
        le = F.broadcast_add(emissions, F.broadcast_mul(F.reshape(ar == 0, (1, -1, 1)),
                                                        F.reshape(p["start"], (1, 1, -1))))
        le = le + F.broadcast_mul(F.expand_dims(last, axis=2), F.reshape(p["end"], (1, 1, -1)))
        return le, last, ar

    def _forward(self, F, emissions, lengths, p):
        """(le and ar as _log_emissions', ts = transitions - shift, shift (1, 1), ll (batch,)): ll is
        hmm_forward_dense's log-likelihood with A = exp(ts) (times the constraints), that is log Z - n_trans *
        shift with n_trans = max(length - 1, 0)."""
        le, last, ar = self._log_emissions(F, emissions, lengths, p)
        trans = p["transitions"]
        if "trans_mask" in p:
            mask = p["trans_mask"]
            shift = F.BlockGrad(F.max(trans + (mask - 1) * _BIG, keepdims=True))     # (1, 1)
            ts = F.broadcast_sub(trans, shift)
            # where, not * mask: d log Z / dA at a zero of A is the polynomial's partial derivative,
            # which may be astronomically large (inf: far likelier emissions behind the forbidden
            # transition), and inf * 0 is NaN; where passes 0 to a forbidden entry (exp(0) there)
            A = F.where(mask, F.exp(ts * mask), F.zeros_like(ts))
        else:
            shift = F.BlockGrad(F.max(trans, keepdims=True))
            ts = F.broadcast_sub(trans, shift)
            A = F.exp(ts)
        pi = p["start_mask"] if "start_mask" in p else F.ones_like(p["start"])     # no gradient either way
        le_op = le
        if "end_mask" in p:                  # log 0 = -inf: a forbidden tag at the last step
            gate = 1 - F.broadcast_mul(F.expand_dims(last, axis=2), F.reshape(1 - p["end_mask"], (1, 1, -1)))
            le_op = le + F.BlockGrad(F.log(gate))
        if self._native_for(emissions.context) if F is mx.nd else self._native:
            # the op itself, without native.forward_dense's guards (an identity per input): they keep its
            # always-overwritten gradients right where MXNet would add into them (a leaf with grad_req 'add',
            # an input feeding 8 or more operators); here A, pi and le_op are intermediates each feeding the
            # op alone, and lengths, start_mask are not differentiated
            ll = getattr(F, native.DENSE_OP_NAME)(A, pi, le_op, lengths)
        else:
            ll = F.Custom(A, pi, le_op, lengths, op_type=OP_TYPE)
        return le, ar, ts, shift, ll

    def _path_score(self, F, le, tags, lengths, trans, ar):
        """sum over t < length of le[t, y_t] + sum over 1 <= t < length of trans[y_{t-1}, y_t] (batch,)."""
        y = F.cast(tags, self._dtype)
        prev = F.slice_axis(F.concat(F.slice_axis(y, axis=1, begin=0, end=1), y, dim=1), axis=1, begin=0, end=-1)
        moved = F.pick(F.take(trans, prev), y, axis=2)           # (batch, T) trans[y_{t-1}, y_t]; step 0: y_0 -> y_0
        moved = F.broadcast_mul(moved, ar >= 1)
        # SequenceMask: 0 at the steps at or past each length whatever the padding holds, and a 0 gradient
        total = F.SequenceMask(F.pick(le, y, axis=2) + moved, lengths, use_sequence_length=True, axis=1)
        return F.sum(total, axis=1)

    def _log_partition(self, F, emissions, lengths, p):
        *_, shift, ll = self._forward(F, emissions, lengths, p)
        n_trans = F.relu(F.cast(lengths, self._dtype) - 1)
        return ll + F.broadcast_mul(n_trans, F.reshape(shift, (1,)))

    def _gold(self, F, emissions, tags, lengths, p):
        le, _, ar = self._log_emissions(F, emissions, lengths, p)
        return self._path_score(F, le, tags, lengths, p["transitions"], ar)

    # -- imperative entry points -----------------------------------------------------------------
    def _values(self, ctx):
        return {name: getattr(self, name).data(ctx) for name in ("transitions", "start", "end") + self.masks}

    def _lengths(self, emissions, lengths):
        """lengths as an int64 NDArray on emissions' context (None: all T)."""
        batch, T = emissions.shape[:2]
        if lengths is None:
            return mx.nd.full((batch,), T, dtype="int64", ctx=emissions.context)
        if not isinstance(lengths, mx.nd.NDArray):
            lengths = mx.nd.array(np.asarray(lengths), dtype="int64", ctx=emissions.context)
        return lengths

    def log_partition(self, emissions, lengths=None):
        """log Z (batch,) NDArray: log of the sum over all allowed tag paths of exp(score)."""
        lengths = self._lengths(emissions, lengths)
        if self.check:
            self.check_inputs(emissions, lengths)
        return self._log_partition(mx.nd, emissions, lengths, self._values(emissions.context))

    def score(self, emissions, tags, lengths=None):
        """The gold score (batch,) NDArray of tag paths ``tags`` (batch, T)."""
        lengths = self._lengths(emissions, lengths)
        if self.check:
            self.check_inputs(emissions, lengths, tags)
        return self._gold(mx.nd, emissions, tags, lengths, self._values(emissions.context))

    def marginals(self, emissions, lengths=None):
        """P(y_t = k | emissions) (batch, T, K) NDArray, 0 at steps past a sequence's length:
        d log Z / d emissions (autograd.grad; no parameter's .grad is touched)."""
        lengths = self._lengths(emissions, lengths)
        if self.check:
            self.check_inputs(emissions, lengths)
        x = emissions.copy()
        x.attach_grad()
        with mx.autograd.record(train_mode=False):
            z = self._log_partition(mx.nd, x, lengths, self._values(emissions.context))
        return mx.autograd.grad(z, [x], retain_graph=False)[0]

    def decode(self, emissions, lengths=None, k=None):
        """Best allowed tag paths by Viterbi in C (double) on the host copy of emissions.

        k None: (paths, scores) - a list with each sequence's best path (int64 array of its length) and
        the scores (batch,) float64 NumPy; ties broken as hmmlearn's Viterbi breaks them.  k >= 1: the k
        best paths - (paths: a list per sequence of up to k arrays, best first; scores (batch, k) float64,
        -inf where a sequence has fewer than k allowed paths), by Lawler's partition of the path space
        (each part's best is one more batched Viterbi call on emissions set to -inf: k calls in all).
        """
        batch, T = emissions.shape[:2]
        if lengths is None:
            L = np.full((batch,), T, dtype=np.int64)
        else:     # host copies only: no NDArray made (a list truncated to integers, as _lengths does)
            L = lengths.asnumpy() if isinstance(lengths, mx.nd.NDArray) else np.asarray(lengths).astype(np.int64)
        if self.check:
            self.check_inputs(emissions, L)
        em = emissions.asnumpy()
        finite = np.isfinite(em).all()
        if not finite:
            checks.check_log_emission_values(em, L.astype(np.int64))
        em = em.astype(np.float64, copy=False)     # asnumpy's copy is ours: modified in place below
        L = L.astype(np.int64, copy=False)
        trans, start, end = (getattr(self, n).data().asnumpy().astype(np.float64)
                             for n in ("transitions", "start", "end"))
        K = em.shape[2]
        steps = np.arange(T)
        inside = steps[None, :] < L[:, None]
        # Viterbi's argmax is unchanged by dividing every score by c > 0: keep exp(transitions) in
        # double's range whatever their scale.
        every = self.allowed.all()
        allowed_vals = trans if every else trans[self.allowed]
        top = float(allowed_vals.max()) if allowed_vals.size else 0.0
        spread = top - float(allowed_vals.min()) if allowed_vals.size else 0.0
        c = max(1.0, spread / 600.0)
        A = np.exp((trans - top) / c)
        if not every:
            A[~self.allowed] = 0.0
        pi = self.allowed_start.astype(np.float64)
        le = em
        le[:, 0, :] += start
        rows = np.flatnonzero(L > 0)
        le[rows, L[rows] - 1] += end if self.allowed_end.all() else np.where(self.allowed_end, end, -np.inf)
        if not finite:
            le[~inside] = 0.0         # padding may hold anything (the kernel reads only inside)
        if c != 1.0:
            le /= c
        # threads as the batch driver's passes take them (csrc/hmm_batch.c, HMM_THREAD_WORK): no more than
        # about 250k multiply-adds each, nor than groups of 4 sequences; a small batch (32 x 50 at K=9) runs
        # faster on one than it waits for a second, above all on a busy machine.  Paths and scores do not
        # depend on the thread count.
        threads = int(min(get_num_threads(), max(1, int(L.sum()) * K * K // _THREAD_WORK), max(1, (batch + 3) // 4)))

        def viterbi(x, n_steps):
            """(scores (n,), paths (n, T)) of the n sequences x (n, T, K) of lengths n_steps."""
            n = len(n_steps)
            lp, paths = _kernel.viterbi_dense(A, pi, np.ascontiguousarray(x.reshape(n * T, K)),
                                              np.arange(n, dtype=np.int64) * T, n_steps, threads)
            return lp * c + np.maximum(n_steps - 1, 0) * top, paths.reshape(n, T).astype(np.int64)

        scores, paths = viterbi(le, L)
        if k is None:
            return [paths[b, :L[b]] for b in range(batch)], scores
        k = int(k)
        if k < 1:
            raise ValueError(f"k must be a positive number of paths, got {k}")
        rows, tags = np.arange(batch), np.arange(K)
        # candidates (batch, C): the best path of each part of the path space not yet output; a part is
        # "the tags of path before step m fixed, tags excl excluded at step m"
        c_score, c_path = scores[:, None], paths[:, None, :]
        c_m, c_excl = np.zeros((batch, 1), dtype=np.int64), np.zeros((batch, 1, K), dtype=bool)
        out_scores, out_paths = np.full((batch, k), -np.inf), np.full((batch, k, T), -1, dtype=np.int64)
        for r in range(k):
            pick = np.argmax(c_score, axis=1)
            s = c_score[rows, pick]
            ok = s > -np.inf
            out_scores[ok, r], out_paths[ok, r] = s[ok], c_path[rows, pick][ok]
            if r == k - 1:
                break
            c_score[rows, pick] = -np.inf
            q, m, excl = c_path[rows, pick], c_m[rows, pick], c_excl[rows, pick]
            b_i, j_i = np.nonzero(ok[:, None] & (steps[None, :] >= m[:, None]) & inside)
            # the popped part splits into: prefix q[:j] fixed and q[j] excluded at step j (j >= m; at j = m
            # also the part's own exclusions)
            new_score = np.full((batch, T), -np.inf)
            new_path = np.full((batch, T, T), -1, dtype=np.int64)
            new_excl = np.zeros((batch, T, K), dtype=bool)
            if len(b_i):
                n = len(b_i)
                child = le[b_i]
                is_q = tags[None, None, :] == q[b_i][:, :, None]                        # (n, T, K)
                child[(steps[None, :] < j_i[:, None])[:, :, None] & ~is_q] = -np.inf
                x = is_q[np.arange(n), j_i] | np.where((j_i == m[b_i])[:, None], excl[b_i], False)
                at_j = child[np.arange(n), j_i]
                at_j[x] = -np.inf
                child[np.arange(n), j_i] = at_j
                sc, ps = viterbi(child, L[b_i])
                new_score[b_i, j_i], new_path[b_i, j_i], new_excl[b_i, j_i] = sc, ps, x
            c_score = np.concatenate([c_score, new_score], axis=1)
            c_path = np.concatenate([c_path, new_path], axis=1)
            c_m = np.concatenate([c_m, np.broadcast_to(steps, (batch, T))], axis=1)
            c_excl = np.concatenate([c_excl, new_excl], axis=1)
        return [[out_paths[b, r, :L[b]] for r in range(k) if out_scores[b, r] > -np.inf]
                for b in range(batch)], out_scores

    # -- checks ------------------------------------------------------------------------------------
    def check_inputs(self, emissions, lengths, tags=None):
        """ValueError/TypeError naming the first bad input: emissions (batch, T, K) of the block's dtype,
        lengths (batch,) integers in [0, T] (an NDArray or a NumPy array), tags (batch, T) in [0, K) and
        allowed, inside the lengths.  The constraints' checks are skipped where nothing is forbidden."""
        K = self.num_tags
        if not isinstance(emissions, mx.nd.NDArray):
            raise TypeError(f"emissions must be an NDArray, got {type(emissions).__name__}")
        if emissions.ndim != 3 or emissions.shape[2] != K:
            raise ValueError(f"emissions must have shape (batch, T, K) = (batch, T, {K}), got {emissions.shape}")
        if np.dtype(emissions.dtype).name != self._dtype:
            raise TypeError(f"emissions must be {self._dtype} like the CRF's parameters, got "
                            f"{np.dtype(emissions.dtype).name}")
        batch, T = emissions.shape[:2]
        if lengths.shape != (batch,):
            raise ValueError(f"lengths must have shape (batch,) = ({batch},) like emissions, got {lengths.shape}")
        L = lengths.asnumpy() if isinstance(lengths, mx.nd.NDArray) else np.asarray(lengths)
        if L.dtype.kind == "f" and not np.all(L == np.round(L)):
            raise ValueError(f"lengths must hold integers, got {L.tolist()}")
        L = L.astype(np.int64)
        bad = np.flatnonzero((L < 0) | (L > T))
        if bad.size:
            raise ValueError(f"lengths[{bad[0]}] = {L[bad[0]]} is outside [0, T] = [0, {T}]")
        if tags is None:
            return
        if not isinstance(tags, mx.nd.NDArray):
            raise TypeError(f"tags must be an NDArray, got {type(tags).__name__}")
        if tags.shape != (batch, T):
            raise ValueError(f"tags must have shape (batch, T) = ({batch}, {T}) like emissions, got {tags.shape}")
        y = tags.asnumpy()
        inside = np.arange(T)[None, :] < L[:, None]
        if y.dtype.kind == "f" and not np.all(y[inside] == np.round(y[inside])):
            raise ValueError("tags must hold integers")
        y = np.where(inside, y, 0).astype(np.int64)            # 0 past the lengths
        out = (y < 0) | (y >= K)
        if out.any():
            b, t = np.argwhere(out)[0]
            raise ValueError(f"tags[{b}, {t}] = {y[b, t]} is outside [0, K) = [0, {K})")
        rows = np.flatnonzero(L > 0)
        if not self.allowed_start.all():
            bad = rows[~self.allowed_start[y[rows, 0]]]
            if bad.size:
                raise ValueError(f"tags[{bad[0]}, 0] = {y[bad[0], 0]} is not an allowed start tag")
        if not self.allowed_end.all():
            bad = rows[~self.allowed_end[y[rows, L[rows] - 1]]]
            if bad.size:
                b = bad[0]
                raise ValueError(f"tags[{b}, {L[b] - 1}] = {y[b, L[b] - 1]} is not an allowed end tag "
                                 f"(the last of length {L[b]})")
        if not self.allowed.all():
            forbidden = inside[:, 1:] & ~self.allowed[y[:, :-1], y[:, 1:]]
            if forbidden.any():
                b, t = np.argwhere(forbidden)[0]
                raise ValueError(f"tags[{b}, {t}:{t + 2}] = {y[b, t]} -> {y[b, t + 1]} is a forbidden "
                                 f"transition")


def _bool_mask(value, shape, name):
    if value is None:
        return np.ones(shape, dtype=bool)
    value = np.asarray(value)
    if value.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {value.shape}")
    if value.dtype != bool and not np.isin(value, (0, 1)).all():
        raise ValueError(f"{name} must be boolean (or 0/1)")
    return value.astype(bool)


def scheme_constraints(tag_names, scheme="BIO"):
    """{'allowed': (K, K), 'allowed_start': (K,), 'allowed_end': (K,)} boolean constraints of a tagging
    scheme, for CRF(K, **scheme_constraints(names)).

    tag_names: K names, 'O' or PREFIX-LABEL ('B-PER').  scheme 'BIO': I-X only after B-X or I-X (and
    not first).  'BIOES': I-X/E-X only after B-X or I-X; after O, E-X, S-X only O, B-Y, S-Y; first tag
    O, B-X or S-X; last tag O, E-X or S-X.
    """
    scheme = scheme.upper()
    if scheme not in ("BIO", "BIOES"):
        raise ValueError(f"scheme must be 'BIO' or 'BIOES', got {scheme!r}")
    parsed = []
    for name in tag_names:
        if name == "O":
            parsed.append(("O", None))
            continue
        prefix, _, label = str(name).partition("-")
        if not label or prefix not in scheme or prefix == "O":
            raise ValueError(f"tag name {name!r} is neither 'O' nor {'/'.join(scheme.replace('O', ''))}-LABEL")
        parsed.append((prefix, label))
    K = len(parsed)
    allowed = np.zeros((K, K), dtype=bool)
    for i, (p, a) in enumerate(parsed):
        for j, (q, b) in enumerate(parsed):
            if scheme == "BIO":
                allowed[i, j] = q in ("O", "B") or (p in ("B", "I") and a == b)
            else:
                inside_open = p in ("B", "I")
                if q in ("I", "E"):
                    allowed[i, j] = inside_open and a == b
                else:
                    allowed[i, j] = not inside_open
    start = np.array([p in ("O", "B", "S") for p, _ in parsed])
    end = np.array([p in ("O", "E", "S") if scheme == "BIOES" else True for p, _ in parsed])
    return {"allowed": allowed, "allowed_start": start, "allowed_end": end}
