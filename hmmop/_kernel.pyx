# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Cython adapter of csrc/: buffers in, buffers out.

forward/backward (log-likelihood and its gradient) call the batch driver in C
(csrc/hmm_batch.h), which owns the batch loop and its threads and computes
in the parameters' dtype; forward_sequential/backward_sequential are the
reference, one sequence per OpenMP thread in double (csrc/hmm_kernel.h).
viterbi, posteriors and sample run the one-sequence kernel functions in
OpenMP threads with a static round-robin schedule (reproducible bit for bit
for a given thread count).  Observations come through prepare_obs: symbols
in [0, m), -2 for a missing step (coded as m in obs32, where the kernel finds
an extra row of emission probability 1 - the unknown symbol is marginalised
out), -1 padding.

Everything here works on NumPy-compatible buffers (zero-copy views of MXNet
NDArrays in practice); parameters are ``float`` or ``double``.
"""
from cython.parallel cimport prange, threadid
from libc.math cimport floor, INFINITY
from libc.stdint cimport int32_t, int64_t
cimport openmp
from cpython.mem cimport PyMem_Malloc, PyMem_Free

import numpy as np

cdef extern from "hmm_kernel.h" nogil:
    double hmm_forward_scaled(int n, int len, const double *A, const double *BT,
                              const double *pi, const int32_t *obs, double *pred,
                              Py_ssize_t pred_stride, double *scale, double *alpha)
    void hmm_backward_scaled(int n, int len, const double *AT, const double *BT,
                             const int32_t *obs, const double *pred,
                             const double *scale, double g, double *dA,
                             double *dBT, double *dpi, double *work)
    size_t HMM_BACKWARD_WORK(int n)

cdef extern from "hmm_batch.h" nogil:
    ctypedef struct hmm_batch:
        pass
    int HMM_FLOAT32, HMM_FLOAT64
    hmm_batch *hmm_batch_new(int n, int m, int64_t batch, int64_t T, const int32_t *obs,
                             const int64_t *lengths, int dtype)
    int hmm_batch_forward(hmm_batch *h, const void *A, const void *B, const void *pi,
                          double *ll, int num_threads)
    int hmm_batch_backward(hmm_batch *h, const double *gll, double *dA, double *dB,
                           double *dpi, int num_threads)
    void hmm_batch_free(hmm_batch *h)
    int hmm_batch_posteriors(int n, int64_t batch, const int32_t *obs, const int64_t *starts,
                             const int64_t *lengths, const double *A, const double *AT, const double *BT,
                             const double *pi, double *ll, double *gamma, int num_threads)
    void hmm_batch_sample(int n, int m, int64_t count, int len, const double *cumA, const double *cumB,
                          const double *cumpi, const double *u, int32_t *states, int32_t *obs,
                          int num_threads)
    int hmm_batch_viterbi(int n, int64_t batch, const int32_t *obs, const int64_t *starts,
                          const int64_t *lengths, const double *logA, const double *logBT,
                          const double *logpi, double *log_prob, int32_t *paths, int num_threads)

ctypedef fused real:
    float
    double

ctypedef fused obs_t:
    int32_t
    int64_t
    float
    double

ctypedef int (*get_data_fn)(void *handle, void **out) noexcept nogil
cdef get_data_fn _get_data = NULL


def bind_get_data(size_t address):
    """Register the address of MXNet's C function MXNDArrayGetData."""
    global _get_data
    _get_data = <get_data_fn>address


cdef extern from "Python.h":
    object PyMemoryView_FromMemory(char *mem, Py_ssize_t size, int flags)
    int PyBUF_WRITE


def data_memory(size_t handle, Py_ssize_t nbytes):
    """Writable memoryview of the first nbytes of an NDArray's data.

    handle: the NDArrayHandle as an integer.  A direct C call: unlike a
    ctypes call it keeps the GIL, which inside a CustomOp callback saves a
    wait for the main Python thread.
    """
    cdef void *ptr = NULL
    if _get_data == NULL:
        raise RuntimeError("bind_get_data() was not called")
    if _get_data(<void *>handle, &ptr) != 0:
        raise RuntimeError("MXNDArrayGetData failed")
    return PyMemoryView_FromMemory(<char *>ptr, nbytes, PyBUF_WRITE)


# MXNet's gradient request codes, in the order of mx.operator.CustomOp's req strings.
REQ_CODES = {'null': 0, 'write': 1, 'inplace': 2, 'add': 3}


def num_procs():
    """Processors available to OpenMP (the cores this process may run on).

    Not omp_get_max_threads(): importing mxnet sets the main thread's OpenMP
    thread count to 1, so that would say 1 whatever the machine.
    """
    return openmp.omp_get_num_procs()


def per_thread(int nt, Py_ssize_t size, dtype):
    """(nt, >= size) scratch rows, one per thread, at least a cache line apart.

    Rows packed back to back share the cache line at their boundary, and
    threads writing their own scratch every step then fight over it (false
    sharing): that made two threads slower than one.
    """
    itemsize = np.dtype(dtype).itemsize
    line = 64 // itemsize
    return np.empty((nt, (size + line - 1) // line * line + line), dtype=dtype)


def prepare_obs(const obs_t[:, ::1] obs, int n_symbols):
    """Validate padded observations and convert them for the kernel.

    obs: (batch, T) of int32, int64, float32 or float64 holding integers in
    [0, n_symbols), or -2 for a missing observation, with optional trailing
    -1 padding per row.
    Returns (obs32 (batch, T) int32, lengths (batch,) int64): obs32 holds the
    symbols, n_symbols for a missing step, -1 on padding; a missing step
    counts in the length.
    Raises ValueError that names the first offending element obs[b, t].
    """
    cdef Py_ssize_t batch = obs.shape[0], T = obs.shape[1], b, t
    cdef Py_ssize_t bad_b = -1, bad_t = -1
    cdef int kind = 0          # 1: not an integer, 2: out of range, 3: symbol after padding
    cdef double v
    cdef int64_t L
    out = np.empty((batch, T), dtype=np.int32)
    lengths = np.empty(batch, dtype=np.int64)
    cdef int32_t[:, ::1] o = out
    cdef int64_t[::1] lens = lengths
    with nogil:
        for b in range(batch):
            L = T
            for t in range(T):
                v = <double>obs[b, t]
                if (obs_t is float or obs_t is double) and not (v == floor(v)):
                    kind = 1                       # also catches NaN and +-inf
                elif 0 <= v < n_symbols:
                    o[b, t] = <int32_t>v
                    continue
                elif v == -2:
                    o[b, t] = n_symbols
                    continue
                elif v == -1:
                    L = t
                    break
                else:
                    kind = 2
                bad_b = b
                bad_t = t
                break
            if kind:
                break
            for t in range(L, T):                  # the padding: only -1 from here
                if obs[b, t] != -1:
                    kind = 3                       # a symbol or -2 after padding
                    bad_b = b
                    bad_t = t
                    break
                o[b, t] = -1
            if kind:
                break
            lens[b] = L
    if kind:
        value = obs[bad_b, bad_t]
        where = f"obs[{bad_b}, {bad_t}] = {value!r}"
        if kind == 1:
            raise ValueError(f"{where} is not an integer: obs must hold integer symbols "
                             f"(int32, int64, or floats with integral values)")
        if kind == 2:
            raise ValueError(f"{where} is not a valid symbol: expected an integer in "
                             f"[0, {n_symbols}) (B has {n_symbols} symbol columns), -1 padding or -2 missing")
        raise ValueError(f"{where} follows -1 padding in row {bad_b}: padding must only "
                         f"fill the end of a row")
    return out, lengths


cdef class Workspace:
    """What the forward pass keeps for the backward pass of one call.

    AT64 (n, n) = A.T and BT64 (m + 1, n) = B.T are double copies of the
    parameters, laid out for the backward's inner loops; BT64's row m is all
    ones, the emission of a missing step (symbol m in obs32); pred
    (sum(lengths), n) and scale (sum(lengths),) hold the forward recursion of
    every sequence back to back, sequence b starting at row offsets[b]; ll
    (batch,) the per-sequence log-likelihoods in double.  Also all that
    posteriors needs.
    """
    cdef readonly object AT64, BT64, pred, scale, offsets, ll, obs32, lengths
    cdef readonly int n, m


def forward_sequential(const real[:, ::1] A, const real[:, ::1] B, const real[::1] pi,
                       const int32_t[:, ::1] obs32, const int64_t[::1] lengths, int num_threads):
    """Log-likelihood of each sequence, one sequence at a time, in double.

    The reference for forward (the batched path) and what posteriors needs.

    A (n, n), B (n, m), pi (n,) of float32 or float64; obs32 and lengths from
    prepare_obs (a missing step, symbol m, has emission probability 1 in
    every state).  Returns a Workspace whose ``ll`` (batch,) float64 is the
    result and which holds, in arrays of its own, all that backward and
    posteriors need.
    """
    cdef int n = A.shape[0], m = B.shape[1]
    cdef Py_ssize_t batch = obs32.shape[0], b, i, k
    cdef int nt = max(1, min(num_threads, batch))
    ws = Workspace()
    ws.n = n
    ws.m = m
    ws.obs32 = obs32
    ws.lengths = lengths
    offsets = np.zeros(batch + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    cdef int64_t total = offsets[batch]
    A64 = np.empty((n, n), dtype=np.float64)
    AT64 = np.empty((n, n), dtype=np.float64)
    BT64 = np.empty((m + 1, n), dtype=np.float64)    # row m: missing steps
    pi64 = np.empty(n, dtype=np.float64)
    pred = np.empty((total, n), dtype=np.float64)
    scale = np.empty(total, dtype=np.float64)
    alpha = per_thread(nt, n, np.float64)
    ll = np.zeros(batch, dtype=np.float64)
    cdef double[:, ::1] a64 = A64, at64 = AT64, bt64 = BT64, pr = pred, al = alpha
    cdef double[::1] p64 = pi64, sc = scale, out = ll
    cdef int64_t[::1] off = offsets
    cdef int tid
    with nogil:
        for i in range(n):
            p64[i] = pi[i]
            for k in range(n):
                a64[i, k] = A[i, k]
                at64[k, i] = A[i, k]
            for k in range(m):
                bt64[k, i] = B[i, k]
            bt64[m, i] = 1.0
        for b in prange(batch, num_threads=nt, schedule='static', chunksize=1):
            if lengths[b] > 0:
                tid = threadid()
                out[b] = hmm_forward_scaled(
                    n, <int>lengths[b], &a64[0, 0], &bt64[0, 0], &p64[0], &obs32[b, 0],
                    &pr[off[b], 0], n,
                    &sc[off[b]], &al[tid, 0])
    ws.AT64 = AT64
    ws.BT64 = BT64
    ws.pred = pred
    ws.scale = scale
    ws.offsets = offsets
    ws.ll = ll
    return ws


def backward_sequential(Workspace ws, const real[::1] gll, real[:, ::1] dA, real[:, ::1] dB,
                        real[::1] dpi, int req_A, int req_B, int req_pi, int num_threads):
    """Gradients of sum_b gll[b] * ll[b] with respect to A, B and pi.

    The reference for backward.  ws: a Workspace from forward_sequential.  gll (batch,) has the dtype of
    the gradients dA (n, n), dB (n, m), dpi (n,), which are written according
    to the MXNet request codes req_* (REQ_CODES: 0 skips, 1/2 overwrite,
    3 adds).  A sequence with ll = -inf (probability 0) or gll = 0
    contributes nothing.  The accumulated gradient of BT64's missing row
    (not a parameter) is dropped.
    """
    cdef int n = ws.n, m = ws.m
    cdef Py_ssize_t batch = gll.shape[0], b, i, k, r
    cdef int nt = max(1, min(num_threads, batch))
    # Per thread: dA (n*n), dBT with the missing row ((m+1)*n), dpi (n).
    cdef Py_ssize_t width = n * n + (m + 1) * n + n
    cdef Py_ssize_t opi = n * n + (m + 1) * n
    acc = per_thread(nt, width, np.float64)
    acc[...] = 0
    work = per_thread(nt, HMM_BACKWARD_WORK(n), np.float64)
    cdef double[:, ::1] ac = acc, wk = work
    cdef double[:, ::1] at64 = ws.AT64, bt64 = ws.BT64, pr = ws.pred
    cdef double[::1] sc = ws.scale, ll = ws.ll
    cdef const int32_t[:, ::1] obs32 = ws.obs32
    cdef const int64_t[::1] lengths = ws.lengths
    cdef int64_t[::1] off = ws.offsets
    cdef int tid
    cdef double g
    if req_A == 0 and req_B == 0 and req_pi == 0:
        return
    with nogil:
        for b in prange(batch, num_threads=nt, schedule='static', chunksize=1):
            g = gll[b]
            if lengths[b] > 0 and g != 0 and ll[b] != -INFINITY:
                tid = threadid()
                hmm_backward_scaled(
                    n, <int>lengths[b], &at64[0, 0], &bt64[0, 0], &obs32[b, 0],
                    &pr[off[b], 0], &sc[off[b]], g,
                    &ac[tid, 0], &ac[tid, n * n], &ac[tid, opi], &wk[tid, 0])
        for r in range(1, nt):
            for k in range(width):
                ac[0, k] += ac[r, k]
        if req_A:
            for i in range(n):
                for k in range(n):
                    if req_A == 3:
                        dA[i, k] += <real>ac[0, i * n + k]
                    else:
                        dA[i, k] = <real>ac[0, i * n + k]
        if req_B:
            for i in range(n):
                for k in range(m):
                    if req_B == 3:
                        dB[i, k] += <real>ac[0, n * n + k * n + i]
                    else:
                        dB[i, k] = <real>ac[0, n * n + k * n + i]
        if req_pi:
            for i in range(n):
                if req_pi == 3:
                    dpi[i] += <real>ac[0, opi + i]
                else:
                    dpi[i] = <real>ac[0, opi + i]


cdef class BatchWorkspace:
    """What forward (the batched path, csrc/hmm_batch.h) keeps for backward:
    the C plan, and the arrays it points into (kept alive here)."""
    cdef hmm_batch *plan
    cdef readonly object ll, obs32, lengths, dtype
    cdef readonly int n, m

    def __dealloc__(self):
        hmm_batch_free(self.plan)

    @property
    def offsets(self):
        """(batch + 1,) int64: sequence b's rows in a posteriors result."""
        offsets = np.zeros(len(self.lengths) + 1, dtype=np.int64)
        np.cumsum(self.lengths, out=offsets[1:])
        return offsets


def forward(const real[:, ::1] A, const real[:, ::1] B, const real[::1] pi,
            const int32_t[:, ::1] obs32, const int64_t[::1] lengths, int num_threads):
    """Log-likelihood of each sequence, by the batch driver in C.

    A (n, n), B (n, m), pi (n,) all float32 (computed in float32) or all
    float64 (in double); obs32 and lengths from prepare_obs.  Returns a
    BatchWorkspace whose ``ll`` (batch,) float64 is the result, for backward.
    """
    cdef int n = A.shape[0], m = B.shape[1]
    cdef int64_t batch = obs32.shape[0], T = obs32.shape[1]
    if B.shape[0] != n or A.shape[1] != n or pi.shape[0] != n or lengths.shape[0] != batch:
        raise ValueError("forward: A (n, n), B (n, m), pi (n,), lengths (batch,) do not fit")
    ws = BatchWorkspace()
    ws.n, ws.m = n, m
    ws.dtype = np.float32 if real is float else np.float64
    ws.obs32, ws.lengths = obs32.base, lengths.base     # the plan reads them until freed
    ws.ll = np.zeros(batch, dtype=np.float64)
    cdef double[::1] ll = ws.ll
    cdef int dtype = HMM_FLOAT32 if real is float else HMM_FLOAT64
    cdef int status
    cdef const int32_t *o = &obs32[0, 0] if batch and T else NULL
    cdef const int64_t *L = &lengths[0] if batch else NULL
    with nogil:
        ws.plan = hmm_batch_new(n, m, batch, T, o, L, dtype)
    if ws.plan == NULL:
        raise MemoryError("hmm_forward: no memory for the batch plan")
    with nogil:
        status = hmm_batch_forward(ws.plan, &A[0, 0], &B[0, 0], &pi[0], &ll[0] if batch else NULL,
                                   max(1, num_threads))
    if status != 0:
        raise MemoryError("hmm_forward: no memory for the forward pass")
    return ws


def backward(BatchWorkspace ws, const real[::1] gll, real[:, ::1] dA, real[:, ::1] dB,
             real[::1] dpi, int req_A, int req_B, int req_pi, int num_threads):
    """Gradients of sum_b gll[b] * ll[b] with respect to A, B and pi.

    ws: a BatchWorkspace from forward.  gll (batch,) has the dtype of the
    gradients dA (n, n), dB (n, m), dpi (n,), which are written according to
    the MXNet request codes req_* (REQ_CODES: 0 skips, 1/2 overwrite, 3 adds).
    A sequence with ll = -inf (probability 0) or gll = 0 contributes nothing.
    """
    if req_A == 0 and req_B == 0 and req_pi == 0:
        return
    cdef int n = ws.n, m = ws.m, status
    g64 = np.asarray(gll, dtype=np.float64)
    dA64 = np.empty((n, n), dtype=np.float64)
    dB64 = np.empty((n, m), dtype=np.float64)
    dpi64 = np.empty(n, dtype=np.float64)
    cdef const double[::1] g = g64
    cdef double[:, ::1] a = dA64, b = dB64
    cdef double[::1] p = dpi64
    with nogil:
        status = hmm_batch_backward(ws.plan, &g[0] if g.shape[0] else NULL, &a[0, 0], &b[0, 0], &p[0],
                                    max(1, num_threads))
    if status != 0:
        raise MemoryError("hmm_forward: no memory for the backward pass")
    store(np.asarray(dA).reshape(-1), dA64.reshape(-1), req_A)
    store(np.asarray(dB).reshape(-1), dB64.reshape(-1), req_B)
    store(dpi, dpi64, req_pi)


def store(real[::1] dst, const double[::1] src, int req):
    """dst (=, +=) src by MXNet request code (0 skips); src is cast to dst's dtype."""
    cdef Py_ssize_t i
    if req == 0:
        return
    with nogil:
        for i in range(dst.shape[0]):
            if req == 3:
                dst[i] += <real>src[i]
            else:
                dst[i] = <real>src[i]


def _log64(x):
    """log of x in double; log 0 = -inf without a warning."""
    with np.errstate(divide='ignore', invalid='ignore'):
        return np.log(np.asarray(x, dtype=np.float64))


def viterbi(const real[:, ::1] A, const real[:, ::1] B, const real[::1] pi,
            const int32_t[::1] obs32, const int64_t[::1] starts, const int64_t[::1] lengths,
            int num_threads):
    """Most probable state path of each sequence (Viterbi, in log space).

    A (n, n), B (n, m), pi (n,) of float32 or float64 (logs taken once, in
    double; zero probabilities are fine).  obs32: the symbols as from
    prepare_obs (n_symbols on a missing step: log emission 0 in every state),
    sequence b in obs32[starts[b] : starts[b] + lengths[b]] - a raveled
    (batch, T) padded array (starts b*T) or the sequences concatenated
    (starts: their offsets), so no padding is needed.
    Returns (log_prob (batch,) float64, paths int32 shaped like obs32): the
    best path's log joint probability log P(path, obs) and the path, at the
    sequence's own positions, -1 elsewhere.  An empty sequence gives 0.0.
    Ties are broken as hmmlearn 0.3.3 does (last state: lowest index;
    predecessors: highest index), so paths match hmmlearn's exactly.  An
    impossible sequence gives -inf and a meaningless path (hmm_kernel.h).
    """
    cdef int n = A.shape[0], m = B.shape[1]
    cdef Py_ssize_t batch, size
    batch, size = _check_layout("viterbi", n, B.shape[0], pi.shape[0], obs32, starts, lengths)
    logA = np.ascontiguousarray(_log64(A))
    logBT = np.zeros((m + 1, n), dtype=np.float64)  # row m: missing steps, log 1
    logBT[:m] = _log64(B).T
    logpi = _log64(pi)
    log_prob = np.empty(batch, dtype=np.float64)
    paths = np.full(size, -1, dtype=np.int32)
    cdef double[:, ::1] la = logA, lb = logBT
    cdef double[::1] lp = logpi, out = log_prob
    cdef int32_t[::1] pa = paths
    cdef int status
    if size == 0 or batch == 0:
        out[:] = 0.0
        return log_prob, paths
    with nogil:
        status = hmm_batch_viterbi(n, batch, &obs32[0], &starts[0], &lengths[0], &la[0, 0], &lb[0, 0],
                                   &lp[0], &out[0], &pa[0], max(1, num_threads))
    if status != 0:
        raise MemoryError("viterbi: out of memory for the back pointers")
    return log_prob, paths


def posteriors(const real[:, ::1] A, const real[:, ::1] B, const real[::1] pi,
               const int32_t[::1] obs32, const int64_t[::1] starts, const int64_t[::1] lengths,
               int num_threads):
    """State posteriors gamma[t, i] = P(state_t = i | obs) of every sequence, in double.

    A, B, pi (float32 or float64) and the layout of obs32 / starts / lengths as
    for viterbi.  Returns (ll (batch,) float64 log-likelihoods, gamma
    (len(obs32), n) float64): sequence b's rows at its own positions,
    starts[b] .. starts[b] + lengths[b] (NaN for a sequence of probability 0),
    other rows 0.
    """
    cdef int n = A.shape[0], m = B.shape[1]
    cdef Py_ssize_t batch, size
    batch, size = _check_layout("posteriors", n, B.shape[0], pi.shape[0], obs32, starts, lengths)
    A64 = np.ascontiguousarray(A, dtype=np.float64)
    AT64 = np.ascontiguousarray(A64.T)
    BT64 = np.ones((m + 1, n), dtype=np.float64)    # row m: missing steps, emission 1
    BT64[:m] = np.asarray(B, dtype=np.float64).T
    pi64 = np.ascontiguousarray(pi, dtype=np.float64)
    ll = np.zeros(batch, dtype=np.float64)
    gamma = np.zeros((size, n), dtype=np.float64)
    if size == 0 or batch == 0:
        return ll, gamma
    cdef double[:, ::1] a64 = A64, at64 = AT64, bt64 = BT64, g = gamma
    cdef double[::1] p64 = pi64, out = ll
    cdef int status
    with nogil:
        status = hmm_batch_posteriors(n, batch, &obs32[0], &starts[0], &lengths[0], &a64[0, 0], &at64[0, 0],
                                      &bt64[0, 0], &p64[0], &out[0], &g[0, 0], max(1, num_threads))
    if status != 0:
        raise MemoryError("posteriors: out of memory for the forward's rows")
    return ll, gamma


def _check_layout(name, int n, Py_ssize_t b_rows, Py_ssize_t pi_size, const int32_t[::1] obs32,
                  const int64_t[::1] starts, const int64_t[::1] lengths):
    """(batch, len(obs32)) after checking that the parameters fit and every sequence lies in obs32."""
    cdef Py_ssize_t batch = lengths.shape[0], size = obs32.shape[0], b
    if b_rows != n or pi_size != n or starts.shape[0] != batch:
        raise ValueError(f"{name}: A (n, n), B (n, m), pi (n,), starts and lengths (batch,) do not fit")
    for b in range(batch):
        if lengths[b] < 0 or starts[b] < 0 or starts[b] + lengths[b] > size:
            raise ValueError(f"{name}: sequence {b} (start {starts[b]}, length {lengths[b]}) "
                             f"is not inside obs32 ({size} symbols)")
    return batch, size


def _cumulative(name, x):
    """Row cumulative sums of a probability array x (k,) or (r, k), checked:
    finite, non-negative, each row summing to 1 within 1e-5."""
    x = np.asarray(x, dtype=np.float64)
    rows = x.reshape(1, x.shape[0]) if x.ndim == 1 else x
    if not np.all(np.isfinite(rows)) or np.any(rows < 0):
        raise ValueError(f"{name} must hold finite non-negative probabilities")
    cum = np.cumsum(rows, axis=1)
    sums = cum[:, rows.shape[1] - 1]
    bad = np.flatnonzero(np.abs(sums - 1.0) > 1e-5)
    if bad.size:
        where = "" if x.ndim == 1 else f" row {bad[0]}"
        raise ValueError(f"{name}{where} sums to {sums[bad[0]]!r}, not 1: "
                         f"it must be a probability distribution")
    return np.ascontiguousarray(cum.reshape(x.shape))


def sample(const double[:, ::1] A, const double[:, ::1] B, const double[::1] pi,
           const double[:, :, ::1] uniforms, int num_threads):
    """Sequences drawn from the HMM by inverse CDF, from given uniforms.

    A (n, n), B (n, m), pi (n,) float64 probabilities (rows summing to 1
    within 1e-5, else ValueError); uniforms (n_sequences, length, 2) float64
    in [0, 1): [b, t, 0] picks state t of sequence b, [b, t, 1] its symbol.
    The caller draws them (numpy's Generator), so the result is reproducible
    and the same for any thread count.  An index of probability 0 is never
    picked.  Returns (obs, states), each (n_sequences, length) int32.
    """
    cdef int n = A.shape[0], m = B.shape[1]
    cdef Py_ssize_t count = uniforms.shape[0], length = uniforms.shape[1], b
    if (n < 1 or m < 1 or A.shape[1] != n or B.shape[0] != n or pi.shape[0] != n
            or uniforms.shape[2] != 2):
        raise ValueError("sample: A (n, n), B (n, m), pi (n,), uniforms (count, length, 2) do not fit")
    cumA = _cumulative("A", A)
    cumB = _cumulative("B", B)
    cumpi = _cumulative("pi", pi)
    obs = np.empty((count, length), dtype=np.int32)
    states = np.empty((count, length), dtype=np.int32)
    cdef const double[:, ::1] ca = cumA, cb = cumB
    cdef const double[::1] cp = cumpi
    cdef int32_t[:, ::1] o = obs, s = states
    if length == 0 or count == 0:
        return obs, states
    with nogil:
        hmm_batch_sample(n, m, count, <int>length, &ca[0, 0], &cb[0, 0], &cp[0], &uniforms[0, 0, 0],
                         &s[0, 0], &o[0, 0], max(1, min(num_threads, count)))
    return obs, states


# -- dense emissions (hmm_forward_dense) -----------------------------------------------------
cdef extern from "hmm_batch.h" nogil:
    size_t HMM_STREAM_BYTES
    hmm_batch *hmm_batch_new_dense(int n, int64_t batch, int64_t size, const int64_t *starts,
                                   const int64_t *lengths, int dtype)
    int hmm_batch_forward_dense(hmm_batch *h, const void *A, const void *pi, const void *logE,
                                double *ll, int num_threads)
    int hmm_batch_backward_dense(hmm_batch *h, const double *gll, const void *logE, double *dA,
                                 double *dpi, void *dlogE, int num_threads)
    int hmm_batch_viterbi_dense(int n, int64_t batch, const int64_t *starts, const int64_t *lengths,
                                const double *logA, const double *logE, const double *logpi,
                                double *log_prob, int32_t *paths, int num_threads)


cdef class DenseWorkspace:
    """What forward_dense keeps for backward_dense: the C plan and the arrays it points into."""
    cdef hmm_batch *plan
    cdef readonly object ll, starts, lengths, dtype
    cdef readonly int n
    cdef readonly Py_ssize_t size

    def __dealloc__(self):
        hmm_batch_free(self.plan)


def _dense_layout(name, int n, Py_ssize_t size, starts, lengths):
    """starts, lengths as int64 arrays, checked: every sequence inside the size rows of logE."""
    starts = np.ascontiguousarray(starts, dtype=np.int64)
    lengths = np.ascontiguousarray(lengths, dtype=np.int64)
    if starts.ndim != 1 or starts.shape != lengths.shape:
        raise ValueError(f"{name}: starts and lengths must be (batch,) arrays of one shape")
    bad = np.flatnonzero((lengths < 0) | (starts < 0) | (starts + lengths > size))
    if bad.size:
        b = int(bad[0])
        raise ValueError(f"{name}: sequence {b} (start {starts[b]}, length {lengths[b]}) is not inside "
                         f"log_emission ({size} rows)")
    return starts, lengths


# Dense plans stream (non-temporal stores) their emission rows and, where its rows are whole 64-byte lines
# at a 64-byte aligned address, dlogE, when the array holds at least this many bytes (csrc/hmm_batch.h).
STREAM_BYTES = HMM_STREAM_BYTES


def forward_dense(const real[:, ::1] A, const real[::1] pi, const real[:, ::1] logE, starts, lengths,
                  int num_threads):
    """Log-likelihood of each sequence on dense log-emissions, by the batch driver in C.

    A (n, n), pi (n,), logE (size, n) all float32 (computed in float32) or all
    float64; sequence b is rows starts[b] .. starts[b] + lengths[b] of logE (a
    padded (batch, T, n) array reshaped: starts b*T).  Returns a
    DenseWorkspace whose ``ll`` (batch,) float64 is the result, for
    backward_dense (which needs logE again).
    """
    cdef int n = A.shape[0]
    cdef Py_ssize_t size = logE.shape[0]
    if A.shape[1] != n or pi.shape[0] != n or logE.shape[1] != n:
        raise ValueError("forward_dense: A (n, n), pi (n,), logE (size, n) do not fit")
    starts, lengths = _dense_layout("forward_dense", n, size, starts, lengths)
    cdef int64_t batch = lengths.shape[0]
    ws = DenseWorkspace()
    ws.n, ws.size = n, size
    ws.dtype = np.float32 if real is float else np.float64
    ws.starts, ws.lengths = starts, lengths         # the plan reads them until freed
    ws.ll = np.zeros(batch, dtype=np.float64)
    cdef double[::1] ll = ws.ll
    cdef const int64_t[::1] st = starts, L = lengths
    cdef int dtype = HMM_FLOAT32 if real is float else HMM_FLOAT64
    cdef int status
    with nogil:
        ws.plan = hmm_batch_new_dense(n, batch, size, &st[0] if batch else NULL, &L[0] if batch else NULL,
                                      dtype)
    if ws.plan == NULL:
        raise MemoryError("hmm_forward_dense: no memory for the batch plan")
    with nogil:
        status = hmm_batch_forward_dense(ws.plan, &A[0, 0], &pi[0], &logE[0, 0] if size else NULL,
                                         &ll[0] if batch else NULL, max(1, num_threads))
    if status != 0:
        raise MemoryError("hmm_forward_dense: no memory for the forward pass")
    return ws


def backward_dense(DenseWorkspace ws, const real[::1] gll, const real[:, ::1] logE, real[:, ::1] dA,
                   real[::1] dpi, real[:, ::1] dlogE, int req_A, int req_pi, int req_le, int num_threads):
    """Gradients of sum_b gll[b] * ll[b] w.r.t. A, pi and logE (the posteriors times gll).

    ws from forward_dense; logE: the same values as given to it; dA (n, n),
    dpi (n,), dlogE (size, n) of the plan's dtype, written by the MXNet
    request codes req_* (REQ_CODES: 0 skips, 1/2 overwrite, 3 adds; a
    written dlogE is 0 outside the sequences).
    """
    if req_A == 0 and req_pi == 0 and req_le == 0:
        return
    cdef int n = ws.n, status
    g64 = np.asarray(gll, dtype=np.float64)
    dA64 = np.empty((n, n), dtype=np.float64)
    dpi64 = np.empty(n, dtype=np.float64)
    cdef const double[::1] g = g64
    cdef double[:, ::1] a = dA64
    cdef double[::1] p = dpi64
    cdef real[:, ::1] target = dlogE
    if req_le == 3 or req_le == 0:                  # add (or no output): into a buffer of our own
        buffer = np.empty_like(np.asarray(dlogE)) if req_le == 3 else None
        target = buffer if req_le == 3 else None
    cdef void *out = NULL
    if target is not None and target.shape[0] > 0:
        out = &target[0, 0]
    with nogil:
        status = hmm_batch_backward_dense(ws.plan, &g[0] if g.shape[0] else NULL,
                                          &logE[0, 0] if logE.shape[0] else NULL,
                                          &a[0, 0], &p[0], out, max(1, num_threads))
    if status != 0:
        raise MemoryError("hmm_forward_dense: no memory for the backward pass")
    store(np.asarray(dA).reshape(-1), dA64.reshape(-1), req_A)
    store(dpi, dpi64, req_pi)
    if req_le == 3:
        np.add(np.asarray(dlogE), buffer, out=np.asarray(dlogE))


def viterbi_dense(A, pi, const double[:, ::1] logE, starts, lengths, int num_threads):
    """Most probable state path of each sequence on log-emissions (in double).

    A (n, n), pi (n,) probabilities (logs taken here; zeros are fine), logE
    (size, n) float64, sequence b its rows starts[b] .. + lengths[b].
    Returns (log_prob (batch,) float64 = log P(best path, obs), paths (size,)
    int32: each sequence's path at its own rows, -1 elsewhere).  Ties as
    hmmlearn breaks them (see viterbi).
    """
    logA = np.ascontiguousarray(_log64(A))
    logpi = np.ascontiguousarray(_log64(pi))
    cdef int n = logA.shape[0]
    cdef Py_ssize_t size = logE.shape[0]
    if logA.shape[1] != n or logpi.shape[0] != n or logE.shape[1] != n:
        raise ValueError("viterbi_dense: A (n, n), pi (n,), logE (size, n) do not fit")
    starts, lengths = _dense_layout("viterbi_dense", n, size, starts, lengths)
    cdef int64_t batch = lengths.shape[0]
    log_prob = np.zeros(batch, dtype=np.float64)
    paths = np.full(size, -1, dtype=np.int32)
    cdef double[:, ::1] la = logA
    cdef double[::1] lp = logpi, out = log_prob
    cdef int32_t[::1] pa = paths
    cdef const int64_t[::1] st = starts, L = lengths
    cdef int status
    if size == 0 or batch == 0:
        return log_prob, paths
    with nogil:
        status = hmm_batch_viterbi_dense(n, batch, &st[0], &L[0], &la[0, 0], &logE[0, 0], &lp[0],
                                         &out[0], &pa[0], max(1, num_threads))
    if status != 0:
        raise MemoryError("viterbi: out of memory for the back pointers")
    return log_prob, paths


def posteriors_dense(A, pi, logE, starts, lengths, int num_threads, gamma=None):
    """(ll (batch,), gamma (size, n), trans (n, n), start (n,)), all float64, on log-emissions.

    One forward-backward of the batch driver in double with gll = 1: gamma
    the state posteriors (0 outside the sequences, and for impossible ones,
    whose ll is -inf), trans = A * dll/dA and start = pi * dll/dpi the
    expected transition and initial counts summed over the sequences (the
    E-step).  A, pi non-negative; logE (size, n).  gamma: None, or a float64
    C-contiguous (size, n) array to write the posteriors into (an EM loop
    passes the same one each iteration: fresh memory of that size costs a
    page fault per 4 KB).
    """
    A64 = np.ascontiguousarray(A, dtype=np.float64)
    pi64 = np.ascontiguousarray(pi, dtype=np.float64)
    logE = np.ascontiguousarray(logE, dtype=np.float64)
    n = A64.shape[0]
    ws = forward_dense(A64, pi64, logE, starts, lengths, num_threads)
    if gamma is None:
        gamma = big_empty(logE.shape[0], logE.shape[1])     # the driver's cached blocks: no page faults
    elif gamma.shape != logE.shape or gamma.dtype != np.float64 or not gamma.flags.c_contiguous:
        raise ValueError(f"posteriors_dense: gamma must be a C-contiguous float64 array of shape {logE.shape}")
    dA = np.empty((n, n), dtype=np.float64)
    dpi = np.empty(n, dtype=np.float64)
    backward_dense(ws, np.ones(len(ws.ll), dtype=np.float64), logE, dA, dpi, gamma, 1, 1, 1, num_threads)
    return ws.ll, gamma, A64 * dA, pi64 * dpi


# -- the Gaussian family's passes over the data (csrc/hmm_gauss.h) ----------------------------
cdef extern from "hmm_gauss.h" nogil:
    int HMM_GAUSS_DIAG, HMM_GAUSS_FULL, HMM_GAUSS_TIED, HMM_GAUSS_ENOMEM
    int64_t hmm_gauss_loglik(int kind, int64_t n, int D, int N, const double *X, const double *c,
                             const double *P, const double *a, const double *b, const double *cst,
                             double *out, int64_t *n_missing, int num_threads)
    int64_t hmm_gauss_stats(int kind, int64_t n, int D, int N, const double *X, const double *gamma,
                            double *post, double *obs, double *second, int num_threads)
    int64_t hmm_gauss_scan(int64_t n, int D, const double *X, int check_all, int64_t *n_missing,
                           unsigned char *missing, int num_threads)

_GAUSS_KINDS = {"diag": HMM_GAUSS_DIAG, "full": HMM_GAUSS_FULL, "tied": HMM_GAUSS_TIED}


def gauss_loglik(kind, const double[:, ::1] X, const double[::1] c, P, a, const double[:, ::1] b,
                 const double[::1] cst, double[:, ::1] out, int num_threads, bint count_missing=False):
    """Log-densities out (n, N) of the rows of X (n, D) (csrc/hmm_gauss.h's hmm_gauss_loglik).

    kind "diag": a, b (N, D), P None; "full": P (N, D, D), b (N, D), a None; "tied": P (D, D),
    a, b (N, D).  c (D,), cst (N,).  All float64, C-contiguous.  Missing rows get 0.  Returns -1,
    or the first row that is neither finite nor wholly NaN (count_missing: (that, the number of
    missing rows)); MemoryError without scratch memory.
    """
    cdef int k = _GAUSS_KINDS[kind]
    cdef int64_t n = X.shape[0]
    cdef int D = X.shape[1], N = b.shape[0]
    cdef const double[::1] Pv, av
    cdef const double *pP = NULL
    cdef const double *pa = NULL
    cdef int64_t status
    if (c.shape[0] != D or b.shape[1] != D or cst.shape[0] != N or out.shape[0] != n or out.shape[1] != N):
        raise ValueError("gauss_loglik: X (n, D), c (D,), b (N, D), cst (N,), out (n, N) do not fit")
    if k != HMM_GAUSS_DIAG:
        Pv = np.ascontiguousarray(P, dtype=np.float64).reshape(-1)
        if Pv.shape[0] != (N * D * D if k == HMM_GAUSS_FULL else D * D):
            raise ValueError("gauss_loglik: P must be (N, D, D) for full, (D, D) for tied")
        pP = &Pv[0]
    if k != HMM_GAUSS_FULL:
        av = np.ascontiguousarray(a, dtype=np.float64).reshape(-1)
        if av.shape[0] != N * D:
            raise ValueError("gauss_loglik: a must be (N, D)")
        pa = &av[0]
    cdef int64_t missing = 0
    if n == 0:
        status = -1
        if count_missing:
            return status, missing
        return status
    with nogil:
        status = hmm_gauss_loglik(k, n, D, N, &X[0, 0], &c[0], pP, pa, &b[0, 0], &cst[0], &out[0, 0],
                                  &missing, max(1, num_threads))
    if status == HMM_GAUSS_ENOMEM:
        raise MemoryError("gauss_loglik: out of memory")
    if count_missing:
        return status, missing
    return status


def gauss_stats(kind, const double[:, ::1] X, const double[:, ::1] gamma, double[::1] post, double[:, ::1] obs,
                second, int num_threads):
    """post (N,), obs (N, D), second += the E-step sums of the observed rows of X (n, D) with gamma (n, N)
    (csrc/hmm_gauss.h's hmm_gauss_stats): second (N, D) for "diag", (N, D, D) "full", (D, D) "tied",
    float64 C-contiguous.  Returns -1, or the first row whose column 0 is NaN but not the whole row
    (nothing added then); MemoryError without scratch memory."""
    cdef int k = _GAUSS_KINDS[kind]
    cdef int64_t n = X.shape[0]
    cdef int D = X.shape[1], N = gamma.shape[1]
    cdef double[::1] sv = second.reshape(-1)
    cdef int64_t status
    expected = N * D if k == HMM_GAUSS_DIAG else N * D * D if k == HMM_GAUSS_FULL else D * D
    if (gamma.shape[0] != n or post.shape[0] != N or obs.shape[0] != N or obs.shape[1] != D
            or sv.shape[0] != expected or not np.shares_memory(second, np.asarray(sv))):
        raise ValueError("gauss_stats: X (n, D), gamma (n, N), post (N,), obs (N, D), second do not fit")
    if n == 0:
        return -1
    with nogil:
        status = hmm_gauss_stats(k, n, D, N, &X[0, 0], &gamma[0, 0], &post[0], &obs[0, 0], &sv[0],
                                 max(1, num_threads))
    if status == HMM_GAUSS_ENOMEM:
        raise MemoryError("gauss_stats: out of memory")
    return status


def gauss_scan(const double[:, ::1] X, bint check_all, int num_threads, missing=None):
    """(first bad row or -1, number of missing rows) of X (n, D) float64 (csrc/hmm_gauss.h's
    hmm_gauss_scan); missing: None or a bool (n,) array set True on the wholly NaN rows."""
    cdef int64_t n = X.shape[0], count = 0, bad
    cdef int D = X.shape[1]
    cdef unsigned char[::1] m
    cdef unsigned char *pm = NULL
    if missing is not None:
        if missing.dtype != np.bool_ or missing.shape != (n,):
            raise ValueError("gauss_scan: missing must be a bool (n,) array")
        m = missing.view(np.uint8)
        if n:
            pm = &m[0]
    if n == 0 or D == 0:
        return -1, 0
    with nogil:
        bad = hmm_gauss_scan(n, D, &X[0, 0], check_all, &count, pm, max(1, num_threads))
    return bad, count


# -- whole EM loops of a categorical HMM (csrc/hmm_em.h) -------------------------------------
cdef extern from "hmm_em.h" nogil:
    int HMM_EM_TOL_NONE, HMM_EM_TOL_INCREASE, HMM_EM_TOL_ABS
    int HMM_EM_CONVERGED, HMM_EM_NONFINITE
    int HMM_EM_ENOMEM, HMM_EM_EBADSYMBOL, HMM_EM_ELAYOUT
    ctypedef struct hmm_em_options:
        int learn
        const double *prior_A
        const double *prior_B
        const double *prior_pi
        const unsigned char *mask_A
        const unsigned char *mask_B
        const unsigned char *mask_pi
        int objective_prior
        int tol_rule
        double tol
    ctypedef struct hmm_em_result:
        int iterations
        int stop
        double last
        int64_t bad
    int hmm_em_categorical(int n, int m, int64_t batch, int64_t size, const int32_t *rows,
                           const int64_t *starts, const int64_t *lengths, double *A, double *B, double *pi,
                           const hmm_em_options *opt, int n_iter, double *history, hmm_em_result *res,
                           int num_threads)
    ctypedef struct hmm_em_task:
        int n, m
        int64_t batch
        const int64_t *starts
        const int64_t *lengths
        double *A
        double *B
        double *pi
        const hmm_em_options *opt
        int n_iter
        double *history
        hmm_em_result res
        int status
    void hmm_em_categorical_many(int64_t ntasks, hmm_em_task *tasks, int64_t size, const int32_t *rows,
                                 int num_threads)

_EM_BITS = {"A": 1, "B": 2, "pi": 4}        # hmm_em.h's HMM_EM_A, HMM_EM_B, HMM_EM_PI


cdef const double *_em_prior(dict prior, name, shape, list keep) except? NULL:
    if prior is None or prior.get(name) is None:
        return NULL
    a = np.ascontiguousarray(np.broadcast_to(np.asarray(prior[name], dtype=np.float64), shape))
    keep.append(a)
    cdef const double[::1] v = a.reshape(-1)
    return &v[0]


cdef const unsigned char *_em_mask(dict mask, name, shape, list keep) except? NULL:
    if mask is None or mask.get(name) is None:
        return NULL
    value = np.asarray(mask[name])
    if value.shape != shape:
        raise ValueError(f"em_categorical: mask[{name!r}] must have shape {shape}, got {value.shape}")
    a = np.ascontiguousarray(value, dtype=bool).view(np.uint8)
    keep.append(a)
    cdef const unsigned char[::1] v = a.reshape(-1)
    return &v[0]


def em_categorical(double[:, ::1] A, double[:, ::1] B, double[::1] pi, const int32_t[::1] rows, starts,
                   lengths, int n_iter, learn=("A", "B", "pi"), dict prior=None, dict mask=None,
                   objective_prior=(), tol=None, tol_rule="increase", int num_threads=1):
    """Up to n_iter EM iterations of a categorical HMM, the whole loop in C (csrc/hmm_em.h).

    A (N, N), B (N, M), pi (N,) float64 C-contiguous: the start, updated in
    place.  rows (size,) int32: symbols in [0, M) or -2 (missing), sequence b
    at rows[starts[b]:starts[b] + lengths[b]].  learn: the names among "A",
    "B", "pi" the M-step updates; prior: None or {name: Dirichlet
    concentrations (broadcast to the parameter's shape)}; mask: None or
    {name: bool of the parameter's shape, False at a structural zero};
    objective_prior: the names whose log-prior sum((a - 1) log p) the objective
    adds to the log-likelihood.  tol: None (never stop early) or a number;
    tol_rule "increase" stops after the first iteration k with h[k] - h[k-1] <
    tol (hmmlearn's), "abs" with |h[k] - h[k-1]| < tol.  Returns (history
    (k,) float64: the objective at each E-step, stop: "ran out", "converged"
    or "non-finite", last: the non-finite objective of E-step k (the
    parameters are then those that gave it), else None).  ValueError for a
    symbol outside [0, M) and not -2, or a sequence outside rows.
    """
    cdef int n = A.shape[0], m = B.shape[1]
    if A.shape[1] != n or B.shape[0] != n or pi.shape[0] != n or m < 1:
        raise ValueError("em_categorical: A (N, N), B (N, M), pi (N,) do not fit")
    if n_iter < 0:
        raise ValueError(f"em_categorical: n_iter must be >= 0, got {n_iter}")
    if tol_rule not in ("increase", "abs"):
        raise ValueError(f"em_categorical: tol_rule must be 'increase' or 'abs', got {tol_rule!r}")
    starts = np.ascontiguousarray(starts, dtype=np.int64)
    lengths = np.ascontiguousarray(lengths, dtype=np.int64)
    if starts.ndim != 1 or starts.shape != lengths.shape:
        raise ValueError("em_categorical: starts and lengths must be (batch,) arrays of one shape")
    cdef const int64_t[::1] st = starts, L = lengths
    cdef hmm_em_options opt
    cdef list keep = []
    _em_options(&opt, n, m, learn, prior, mask, objective_prior, tol, tol_rule, keep)
    history = np.empty(max(n_iter, 1), dtype=np.float64)
    cdef double[::1] h = history
    cdef hmm_em_result res
    cdef int64_t batch = st.shape[0], size = rows.shape[0]
    cdef int status
    with nogil:
        status = hmm_em_categorical(n, m, batch, size, &rows[0] if size else NULL, &st[0] if batch else NULL,
                                    &L[0] if batch else NULL, &A[0, 0], &B[0, 0], &pi[0], &opt, n_iter, &h[0],
                                    &res, max(1, num_threads))
    if status == HMM_EM_EBADSYMBOL:
        raise ValueError(f"rows[{res.bad}] = {rows[res.bad]} is not a symbol in [0, {m}) or -2 (missing)")
    if status == HMM_EM_ELAYOUT:
        raise ValueError(f"em_categorical: sequence {res.bad} (start {starts[res.bad]}, length "
                         f"{lengths[res.bad]}) is not inside rows ({size} rows)")
    if status != 0:
        raise MemoryError("em_categorical: out of memory")
    return _em_outcome(history, res)


cdef object _em_outcome(history, hmm_em_result res):
    stop = ("converged" if res.stop == HMM_EM_CONVERGED else "non-finite" if res.stop == HMM_EM_NONFINITE
            else "ran out")
    return history[:res.iterations], stop, (res.last if res.stop == HMM_EM_NONFINITE else None)


cdef int _em_options(hmm_em_options *opt, int n, int m, learn, dict prior, dict mask, objective_prior, tol,
                     tol_rule, list keep) except -1:
    """Fill *opt (its arrays kept alive in ``keep``), as em_categorical's arguments say."""
    shapes = {"A": (n, n), "B": (n, m), "pi": (n,)}
    opt.learn = sum(_EM_BITS[name] for name in learn)
    opt.objective_prior = sum(_EM_BITS[name] for name in objective_prior)
    opt.prior_A = _em_prior(prior, "A", shapes["A"], keep)
    opt.prior_B = _em_prior(prior, "B", shapes["B"], keep)
    opt.prior_pi = _em_prior(prior, "pi", shapes["pi"], keep)
    opt.mask_A = _em_mask(mask, "A", shapes["A"], keep)
    opt.mask_B = _em_mask(mask, "B", shapes["B"], keep)
    opt.mask_pi = _em_mask(mask, "pi", shapes["pi"], keep)
    opt.tol_rule = HMM_EM_TOL_NONE if tol is None else (HMM_EM_TOL_INCREASE if tol_rule == "increase"
                                                        else HMM_EM_TOL_ABS)
    opt.tol = 0.0 if tol is None else float(tol)
    return 0


def em_categorical_many(list tasks, const int32_t[::1] rows, int num_threads=1):
    """Many categorical EM loops in one C call (csrc/hmm_em.h, hmm_em_categorical_many), in parallel.

    tasks: a list of dicts, each em_categorical's arguments for one model: A (n, n), B (n, m), pi (n,)
    float64 C-contiguous (updated in place), starts, lengths (its sequences in the shared ``rows``),
    n_iter, and optionally learn, prior, mask, objective_prior, tol, tol_rule (em_categorical's
    defaults).  Returns one (history, stop, last) per task, as em_categorical's; each task's result
    is what em_categorical gives it alone.  ValueError naming the task for bad input.
    """
    cdef int64_t ntasks = len(tasks), size = rows.shape[0], k
    cdef hmm_em_task *c_tasks = <hmm_em_task *> PyMem_Malloc(sizeof(hmm_em_task) * max(ntasks, 1))
    cdef hmm_em_options *c_opts = <hmm_em_options *> PyMem_Malloc(sizeof(hmm_em_options) * max(ntasks, 1))
    cdef list keep = [], histories = []
    cdef double[:, ::1] A, B
    cdef double[::1] pi, h
    cdef const int64_t[::1] st, L
    cdef int n, m
    if c_tasks == NULL or c_opts == NULL:
        PyMem_Free(c_tasks)
        PyMem_Free(c_opts)
        raise MemoryError("em_categorical_many: out of memory")
    try:
        for k, task in enumerate(tasks):
            A, B, pi = task["A"], task["B"], task["pi"]
            n, m = A.shape[0], B.shape[1]
            if A.shape[1] != n or B.shape[0] != n or pi.shape[0] != n or m < 1:
                raise ValueError(f"em_categorical_many: task {k}: A (N, N), B (N, M), pi (N,) do not fit")
            n_iter = int(task["n_iter"])
            if n_iter < 0:
                raise ValueError(f"em_categorical_many: task {k}: n_iter must be >= 0, got {n_iter}")
            tol_rule = task.get("tol_rule", "increase")
            if tol_rule not in ("increase", "abs"):
                raise ValueError(f"em_categorical_many: task {k}: tol_rule must be 'increase' or 'abs'")
            starts = np.ascontiguousarray(task["starts"], dtype=np.int64)
            lengths = np.ascontiguousarray(task["lengths"], dtype=np.int64)
            if starts.ndim != 1 or starts.shape != lengths.shape:
                raise ValueError(f"em_categorical_many: task {k}: starts and lengths must be (batch,) arrays "
                                 f"of one shape")
            history = np.empty(max(n_iter, 1), dtype=np.float64)
            keep += [A, B, pi, starts, lengths, history]
            histories.append(history)
            _em_options(&c_opts[k], n, m, task.get("learn", ("A", "B", "pi")), task.get("prior"),
                        task.get("mask"), task.get("objective_prior", ()), task.get("tol"), tol_rule, keep)
            st, L, h = starts, lengths, history
            c_tasks[k].n, c_tasks[k].m = n, m
            c_tasks[k].batch = st.shape[0]
            c_tasks[k].starts = &st[0] if st.shape[0] else NULL
            c_tasks[k].lengths = &L[0] if st.shape[0] else NULL
            c_tasks[k].A, c_tasks[k].B, c_tasks[k].pi = &A[0, 0], &B[0, 0], &pi[0]
            c_tasks[k].opt = &c_opts[k]
            c_tasks[k].n_iter = n_iter
            c_tasks[k].history = &h[0]
        with nogil:
            hmm_em_categorical_many(ntasks, c_tasks, size, &rows[0] if size else NULL, max(1, num_threads))
        out = []
        for k in range(ntasks):
            status = c_tasks[k].status
            if status == HMM_EM_EBADSYMBOL:
                raise ValueError(f"rows[{c_tasks[k].res.bad}] = {rows[c_tasks[k].res.bad]} is not a symbol in "
                                 f"[0, {c_tasks[k].m}) or -2 (missing)")
            if status == HMM_EM_ELAYOUT:
                raise ValueError(f"em_categorical_many: task {k}: sequence {c_tasks[k].res.bad} is not inside "
                                 f"rows ({size} rows)")
            if status != 0:
                raise MemoryError("em_categorical_many: out of memory")
            out.append(_em_outcome(histories[k], c_tasks[k].res))
        return out
    finally:
        PyMem_Free(c_tasks)
        PyMem_Free(c_opts)


cdef extern from "hmm_em.h" nogil:
    ctypedef struct hmm_em_dense:
        pass
    hmm_em_dense *hmm_em_dense_new(int n, int64_t batch, int64_t size, const int64_t *starts,
                                   const int64_t *lengths, int num_threads)
    int hmm_em_dense_step(hmm_em_dense *e, double *A, double *pi, const double *logE, double *gamma,
                          const hmm_em_options *opt, double *value)
    void hmm_em_dense_free(hmm_em_dense *e)


cdef extern from "hmm_batch.h" nogil:
    void *hmm_big_alloc(size_t nbytes, size_t *got)
    void hmm_big_free(void *p, size_t got)


cdef class _BigBlock:
    """A float64 (rows, cols) C-contiguous block from the driver's cache of large blocks
    (hmm_big_alloc), given back to it when the last array on it goes."""
    cdef void *p
    cdef size_t got
    cdef Py_ssize_t shape[2]
    cdef Py_ssize_t strides[2]

    def __cinit__(self, Py_ssize_t rows, Py_ssize_t cols):
        self.shape[0], self.shape[1] = rows, cols
        self.strides[0], self.strides[1] = cols * sizeof(double), sizeof(double)
        self.p = hmm_big_alloc(<size_t>rows * cols * sizeof(double), &self.got)
        if self.p == NULL:
            raise MemoryError(f"out of memory for a ({rows}, {cols}) float64 array")

    def __dealloc__(self):
        if self.p != NULL:
            hmm_big_free(self.p, self.got)

    def __getbuffer__(self, Py_buffer *buf, int flags):
        buf.buf = self.p
        buf.obj = self
        buf.len = self.shape[0] * self.shape[1] * sizeof(double)
        buf.itemsize = sizeof(double)
        buf.readonly = 0
        buf.ndim = 2
        buf.format = "d"
        buf.shape = self.shape
        buf.strides = self.strides
        buf.suboffsets = NULL
        buf.internal = NULL

    def __releasebuffer__(self, Py_buffer *buf):
        pass


def big_empty(Py_ssize_t rows, Py_ssize_t cols):
    """An uninitialised float64 (rows, cols) C-contiguous array like np.empty's, on memory from the
    C driver's cache of large blocks (csrc/hmm_batch.h, hmm_big_alloc): an EM loop's (n, N)
    log-emissions and posteriors, reused across fits without the page faults of fresh memory."""
    if rows * cols * <Py_ssize_t>sizeof(double) < (1 << 20):
        return np.empty((rows, cols), dtype=np.float64)
    return np.asarray(_BigBlock(rows, cols))


cdef class EMDense:
    """EM's core part for any emission family (csrc/hmm_em.h): one plan over a data layout, kept
    across iterations; step() is one E-step (ll, posteriors) and the M-step of A and pi.

    EMDense(n, size, starts, lengths, learn, prior, mask, objective_prior, num_threads): sequence
    b at rows starts[b] .. starts[b] + lengths[b] of the (size, n) log-emissions; learn,
    objective_prior: names among "A", "pi"; prior, mask: None or {name: array} as for
    em_categorical.
    """
    cdef hmm_em_dense *plan
    cdef hmm_em_options opt
    cdef list keep
    cdef readonly object starts, lengths
    cdef readonly int n
    cdef readonly Py_ssize_t size

    def __init__(self, int n, Py_ssize_t size, starts, lengths, learn=("A", "pi"), dict prior=None,
                 dict mask=None, objective_prior=(), int num_threads=1):
        self.starts, self.lengths = _dense_layout("EMDense", n, size, starts, lengths)
        self.n, self.size, self.keep = n, size, []
        shapes = {"A": (n, n), "pi": (n,)}
        self.opt.learn = sum(_EM_BITS[name] for name in learn if name in shapes)
        self.opt.objective_prior = sum(_EM_BITS[name] for name in objective_prior if name in shapes)
        self.opt.prior_A = _em_prior(prior, "A", shapes["A"], self.keep)
        self.opt.prior_pi = _em_prior(prior, "pi", shapes["pi"], self.keep)
        self.opt.prior_B = NULL
        self.opt.mask_A = _em_mask(mask, "A", shapes["A"], self.keep)
        self.opt.mask_pi = _em_mask(mask, "pi", shapes["pi"], self.keep)
        self.opt.mask_B = NULL
        self.opt.tol_rule = HMM_EM_TOL_NONE
        self.opt.tol = 0.0
        cdef const int64_t[::1] st = self.starts, L = self.lengths
        cdef int64_t batch = st.shape[0]
        with nogil:
            self.plan = hmm_em_dense_new(n, batch, size, &st[0] if batch else NULL, &L[0] if batch else NULL,
                                         max(1, num_threads))
        if self.plan == NULL:
            raise MemoryError("EMDense: out of memory")

    def __dealloc__(self):
        hmm_em_dense_free(self.plan)

    def step(self, double[:, ::1] A, double[::1] pi, const double[:, ::1] logE, double[:, ::1] gamma):
        """The objective (float) at A (n, n), pi (n,), logE (size, n) float64; where it is finite,
        gamma (size, n) gets the posteriors and A, pi their M-step, in place."""
        cdef int n = self.n
        if (A.shape[0] != n or A.shape[1] != n or pi.shape[0] != n or logE.shape[0] != self.size
                or logE.shape[1] != n or gamma.shape[0] != self.size or gamma.shape[1] != n):
            raise ValueError(f"EMDense.step: A ({n}, {n}), pi ({n},), logE and gamma ({self.size}, {n}) do not fit")
        cdef double value = 0.0
        cdef int status
        cdef const double *le = &logE[0, 0] if self.size else NULL
        cdef double *g = &gamma[0, 0] if self.size else NULL
        with nogil:
            status = hmm_em_dense_step(self.plan, &A[0, 0], &pi[0], le, g, &self.opt, &value)
        if status != 0:
            raise MemoryError("EMDense.step: out of memory")
        return value


# -- the Gaussian-mixture family's per-row pass (csrc/hmm_mix.h) ------------------------------
cdef extern from "hmm_mix.h" nogil:
    int hmm_mix_logsumexp(int64_t n, int N, int K, const double *comp, double *out, double *resp,
                          int num_threads)
    int hmm_mix_stats_diag(int64_t n, int N, int K, int D, const double *X, const double *c,
                           const double *q, const double *gamma, double *post, double *s0, double *s1,
                           double *s2, int num_threads)
    int hmm_mix_loglik_diag(int64_t n, int N, int K, int D, const double *X, const double *c,
                            const double *a, const double *b, const double *cst, double *out, double *resp,
                            int num_threads)


def mix_logsumexp(const double[:, ::1] comp, int n_mix, double[:, ::1] out, resp, int num_threads):
    """out (n, N) = log-sum-exp of each state's n_mix = K components of comp (n, N*K); resp: None or
    a float64 (n, N*K) C-contiguous array (comp itself allowed) that gets each component's
    responsibility within its state (csrc/hmm_mix.h's hmm_mix_logsumexp).  All float64; MemoryError
    without scratch memory."""
    cdef int64_t n = comp.shape[0]
    cdef int K = n_mix
    if K < 1 or comp.shape[1] % K != 0:
        raise ValueError("mix_logsumexp: comp must be (n, N*K) with K = n_mix >= 1")
    cdef int N = comp.shape[1] // K
    if out.shape[0] != n or out.shape[1] != N:
        raise ValueError("mix_logsumexp: out must be (n, N) for comp (n, N*K)")
    cdef double[:, ::1] rv
    cdef double *pr = NULL
    if resp is not None:
        rv = resp
        if rv.shape[0] != n or rv.shape[1] != N * K:
            raise ValueError("mix_logsumexp: resp must be (n, N*K) like comp")
        if n:
            pr = &rv[0, 0]
    if n == 0 or N == 0:
        return
    cdef int status
    with nogil:
        status = hmm_mix_logsumexp(n, N, K, &comp[0, 0], &out[0, 0], pr, max(1, num_threads))
    if status != 0:
        raise MemoryError("mix_logsumexp: out of memory")


def mix_stats_diag(const double[:, ::1] X, const double[::1] c, const double[:, ::1] q,
                   const double[:, ::1] gamma, double[::1] post, double[::1] s0, double[:, ::1] s1,
                   double[:, ::1] s2, int num_threads):
    """Add the diagonal-form E-step sums of X (n, D) to post (N,), s0 (S,), s1 and s2 (S, D), S = N*K,
    from q (n, S) (responsibilities within each state), gamma (n, N) and the centre c (D,)
    (csrc/hmm_mix.h's hmm_mix_stats_diag; wholly NaN rows skipped).  All float64, C-contiguous;
    MemoryError without scratch memory."""
    cdef int64_t n = X.shape[0]
    cdef int D = X.shape[1], N = gamma.shape[1]
    cdef Py_ssize_t S = q.shape[1]
    if (N < 1 or S % N != 0 or q.shape[0] != n or gamma.shape[0] != n or c.shape[0] != D or post.shape[0] != N
            or s0.shape[0] != S or s1.shape[0] != S or s1.shape[1] != D or s2.shape[0] != S or s2.shape[1] != D):
        raise ValueError("mix_stats_diag: X (n, D), c (D,), q (n, S), gamma (n, N), post (N,), s0 (S,), "
                         "s1 and s2 (S, D) do not fit")
    if n == 0 or D == 0:
        return
    cdef int K = S // N
    cdef int status
    with nogil:
        status = hmm_mix_stats_diag(n, N, K, D, &X[0, 0], &c[0], &q[0, 0], &gamma[0, 0], &post[0], &s0[0],
                                    &s1[0, 0], &s2[0, 0], max(1, num_threads))
    if status != 0:
        raise MemoryError("mix_stats_diag: out of memory")


def mix_loglik_diag(const double[:, ::1] X, const double[::1] c, const double[:, ::1] a, const double[:, ::1] b,
                    const double[::1] cst, int n_mix, double[:, ::1] out, resp, int num_threads):
    """out (n, N) = log sum_k exp(comp[:, i*K + k]) of the diagonal-form component log-densities
    comp[t, s] = cst[s] + sum_d (a[d, s] y_d + b[d, s]) y_d, y = X[t] - c (X (n, D), c (D,), a and b
    (D, N*K), cst (N*K,)); resp: None or an (n, N*K) array for the responsibilities within each state
    (csrc/hmm_mix.h's hmm_mix_loglik_diag).  All float64, C-contiguous; MemoryError without scratch memory."""
    cdef int64_t n = X.shape[0]
    cdef int D = X.shape[1], K = n_mix
    cdef Py_ssize_t S = cst.shape[0]
    if K < 1 or S % K != 0:
        raise ValueError("mix_loglik_diag: cst must be (N*K,) with K = n_mix >= 1")
    cdef int N = S // K
    if (c.shape[0] != D or a.shape[0] != D or a.shape[1] != S or b.shape[0] != D or b.shape[1] != S
            or out.shape[0] != n or out.shape[1] != N):
        raise ValueError("mix_loglik_diag: X (n, D), c (D,), a and b (D, N*K), cst (N*K,), out (n, N) do not fit")
    cdef double[:, ::1] rv
    cdef double *pr = NULL
    if resp is not None:
        rv = resp
        if rv.shape[0] != n or rv.shape[1] != S:
            raise ValueError("mix_loglik_diag: resp must be (n, N*K)")
        if n:
            pr = &rv[0, 0]
    if n == 0 or N == 0 or D == 0:
        return
    cdef int status
    with nogil:
        status = hmm_mix_loglik_diag(n, N, K, D, &X[0, 0], &c[0], &a[0, 0], &b[0, 0], &cst[0], &out[0, 0], pr,
                                     max(1, num_threads))
    if status != 0:
        raise MemoryError("mix_loglik_diag: out of memory")


# ---- Many models in one call (a model axis on hmm_forward; csrc/hmm_many.h) -------------------

cdef extern from "hmm_many.h" nogil:
    ctypedef struct hmm_many:
        pass
    hmm_many *hmm_many_new(int k, int n, int m, int64_t batch, int64_t T, const int32_t *obs,
                           const int64_t *lengths, const int64_t *model, int dtype, int64_t *bad)
    int hmm_many_forward(hmm_many *h, const void *A, const void *B, const void *pi, double *ll,
                         int num_threads)
    int hmm_many_backward(hmm_many *h, const double *gll, double *dA, double *dB, double *dpi,
                          int num_threads)
    hmm_many *hmm_many_new_dense(int k, int n, int64_t batch, int64_t T, const int64_t *lengths,
                                 const int64_t *model, int dtype, int64_t *bad)
    int hmm_many_forward_dense(hmm_many *h, const void *A, const void *pi, const void *logE, double *ll,
                               int num_threads)
    int hmm_many_backward_dense(hmm_many *h, const double *gll, const void *logE, double *dA, double *dpi,
                                void *dlogE, int num_threads)
    void hmm_many_free(hmm_many *h)


cdef class ManyWorkspace:
    """What forward_many (forward_many_dense) keeps for backward_many (backward_many_dense): the C
    plan and the arrays it points into."""
    cdef hmm_many *plan
    cdef readonly object ll, obs32, lengths, dtype
    cdef readonly int k, n, m
    cdef readonly bint dense

    def __dealloc__(self):
        hmm_many_free(self.plan)


cdef _model_view(model, int64_t batch, const int64_t **mp, name):
    """model as a checked int64 array (None stays None), *mp its data (NULL for None or batch 0)."""
    cdef const int64_t[::1] mv
    mp[0] = NULL
    if model is None:
        return None
    model = np.ascontiguousarray(model, dtype=np.int64)
    if model.shape != (batch,):
        raise ValueError(f"{name}: model must have shape ({batch},), got {model.shape}")
    mv = model
    if batch:
        mp[0] = &mv[0]
    return model


def _check_many_plan(ManyWorkspace ws, model, int64_t bad, op):
    """ValueError for a model index out of range (bad >= 0), MemoryError for no plan; else nothing."""
    if ws.plan != NULL:
        return
    if bad >= 0:
        raise ValueError(f"model[{bad}] = {model[bad]} is not a model index in [0, K) = [0, {ws.k})")
    raise MemoryError(f"{op}: no memory for the model-axis plan")


def forward_many(const real[:, :, ::1] A, const real[:, :, ::1] B, const real[:, ::1] pi,
                 const int32_t[:, ::1] obs32, const int64_t[::1] lengths, model, int num_threads):
    """Log-likelihoods under K models at once, by csrc/hmm_many.c (one batch plan per model).

    A (K, n, n), B (K, n, m), pi (K, n) all float32 or all float64; obs32 and lengths from
    prepare_obs; model None (every model scores every sequence: ll (K, batch)) or (batch,)
    int64 indices in [0, K) (sequence b by model model[b]: ll (batch,)).  Returns a
    ManyWorkspace whose ``ll`` (float64) is the result, for backward_many.  Each model's
    numbers are those of forward() on its own sequences, bit for bit.
    """
    cdef int k = A.shape[0], n = A.shape[1], m = B.shape[2]
    cdef int64_t batch = obs32.shape[0], T = obs32.shape[1], bad = -1
    if (A.shape[2] != n or B.shape[0] != k or B.shape[1] != n or pi.shape[0] != k or pi.shape[1] != n
            or lengths.shape[0] != batch or k < 1):
        raise ValueError("forward_many: A (K, n, n), B (K, n, m), pi (K, n), lengths (batch,) do not fit")
    cdef const int64_t *mp = NULL
    model = _model_view(model, batch, &mp, "forward_many")
    ws = ManyWorkspace()
    ws.k, ws.n, ws.m = k, n, m
    ws.dtype = np.float32 if real is float else np.float64
    ws.obs32, ws.lengths = obs32.base, lengths.base     # the plan reads them until freed
    shape = (int(batch),) if model is not None else (int(k), int(batch))
    ws.ll = np.zeros(shape, dtype=np.float64)
    cdef double[::1] ll = ws.ll.reshape(-1)
    cdef int dtype = HMM_FLOAT32 if real is float else HMM_FLOAT64
    cdef int status
    cdef const int32_t *o = &obs32[0, 0] if batch and T else NULL
    cdef const int64_t *L = &lengths[0] if batch else NULL
    with nogil:
        ws.plan = hmm_many_new(k, n, m, batch, T, o, L, mp, dtype, &bad)
    _check_many_plan(ws, model, bad, "hmm_forward")
    with nogil:
        status = hmm_many_forward(ws.plan, &A[0, 0, 0], &B[0, 0, 0], &pi[0, 0],
                                  &ll[0] if ll.shape[0] else NULL, max(1, num_threads))
    if status != 0:
        raise MemoryError("hmm_forward: no memory for the forward pass")
    return ws


def backward_many(ManyWorkspace ws, const real[::1] gll, real[::1] dA, real[::1] dB, real[::1] dpi,
                  int req_A, int req_B, int req_pi, int num_threads):
    """Gradients of sum gll * ll (gll flattened, ll's size) with respect to A, B and pi.

    dA (K * n * n,), dB (K * n * m,), dpi (K * n,): the gradients flattened, of gll's dtype,
    written by the MXNet request codes req_* (0 skips, 1/2 overwrite, 3 adds).  A model with no
    sequences gets zero.
    """
    if req_A == 0 and req_B == 0 and req_pi == 0:
        return
    cdef int k = ws.k, n = ws.n, m = ws.m, status
    if gll.shape[0] != ws.ll.size:
        raise ValueError(f"backward_many: gll has {gll.shape[0]} entries, ll {ws.ll.size}")
    g64 = np.asarray(gll, dtype=np.float64)
    dA64 = np.empty(k * n * n, dtype=np.float64)
    dB64 = np.empty(k * n * m, dtype=np.float64)
    dpi64 = np.empty(k * n, dtype=np.float64)
    cdef const double[::1] g = g64
    cdef double[::1] a = dA64, b = dB64, p = dpi64
    with nogil:
        status = hmm_many_backward(ws.plan, &g[0] if g.shape[0] else NULL, &a[0], &b[0], &p[0],
                                   max(1, num_threads))
    if status != 0:
        raise MemoryError("hmm_forward: no memory for the backward pass")
    store(dA, dA64, req_A)
    store(dB, dB64, req_B)
    store(dpi, dpi64, req_pi)


def forward_many_dense(const real[:, :, ::1] A, const real[:, ::1] pi, const real[:, :, ::1] logE, lengths,
                       model, int num_threads):
    """Log-likelihoods of K dense models at once, by csrc/hmm_many.c (one dense batch plan per model).

    A (K, n, n), pi (K, n), logE all float32 or all float64; lengths (batch,) in [0, T]; model None
    (every model scores every sequence: logE (K * batch, T, n), model k's scores of the batch in
    rows k * batch ..; ll (K, batch)) or (batch,) int64 indices in [0, K) (logE (batch, T, n), each
    sequence's scores under its own model; ll (batch,)).  Returns a ManyWorkspace whose ``ll``
    (float64) is the result, for backward_many_dense (which needs logE again).  Each model's
    numbers are those of forward_dense() on its own sequences, bit for bit.
    """
    cdef int k = A.shape[0], n = A.shape[1]
    lengths = np.ascontiguousarray(lengths, dtype=np.int64)
    cdef int64_t batch = lengths.shape[0], T = logE.shape[1], bad = -1
    cdef int64_t rows = batch if model is not None else k * batch
    if (A.shape[2] != n or pi.shape[0] != k or pi.shape[1] != n or logE.shape[0] != rows
            or logE.shape[2] != n or lengths.ndim != 1 or k < 1):
        raise ValueError("forward_many_dense: A (K, n, n), pi (K, n), logE (K * batch or batch, T, n), "
                         "lengths (batch,) do not fit")
    if ((lengths < 0) | (lengths > T)).any():
        raise ValueError(f"forward_many_dense: lengths must lie in [0, T] = [0, {T}]")
    cdef const int64_t *mp = NULL
    model = _model_view(model, batch, &mp, "forward_many_dense")
    ws = ManyWorkspace()
    ws.k, ws.n, ws.m, ws.dense = k, n, 0, True
    ws.dtype = np.float32 if real is float else np.float64
    ws.lengths = lengths                                # the plan reads them until freed
    shape = (int(batch),) if model is not None else (int(k), int(batch))
    ws.ll = np.zeros(shape, dtype=np.float64)
    cdef double[::1] ll = ws.ll.reshape(-1)
    cdef const int64_t[::1] L = lengths
    cdef int dtype = HMM_FLOAT32 if real is float else HMM_FLOAT64
    cdef int status
    with nogil:
        ws.plan = hmm_many_new_dense(k, n, batch, T, &L[0] if batch else NULL, mp, dtype, &bad)
    _check_many_plan(ws, model, bad, "hmm_forward_dense")
    with nogil:
        status = hmm_many_forward_dense(ws.plan, &A[0, 0, 0], &pi[0, 0], &logE[0, 0, 0] if rows else NULL,
                                        &ll[0] if ll.shape[0] else NULL, max(1, num_threads))
    if status != 0:
        raise MemoryError("hmm_forward_dense: no memory for the forward pass")
    return ws


def backward_many_dense(ManyWorkspace ws, const real[::1] gll, const real[:, :, ::1] logE, real[::1] dA,
                        real[::1] dpi, real[:, :, ::1] dlogE, int req_A, int req_pi, int req_le, int num_threads):
    """Gradients of sum gll * ll (gll flattened, ll's size) with respect to A, pi and logE.

    ws from forward_many_dense; logE: the same values as given to it; dA (K * n * n,), dpi (K * n,)
    the gradients flattened and dlogE shaped as logE (gll times the posteriors, 0 outside the
    sequences), of gll's dtype, written by the MXNet request codes req_* (0 skips, 1/2 overwrite, 3
    adds).  A model with no sequences gets zero.
    """
    if req_A == 0 and req_pi == 0 and req_le == 0:
        return
    if not ws.dense:
        raise ValueError("backward_many_dense: the workspace is not a dense plan's")
    cdef int k = ws.k, n = ws.n, status
    if gll.shape[0] != ws.ll.size:
        raise ValueError(f"backward_many_dense: gll has {gll.shape[0]} entries, ll {ws.ll.size}")
    g64 = np.asarray(gll, dtype=np.float64)
    dA64 = np.empty(k * n * n, dtype=np.float64)
    dpi64 = np.empty(k * n, dtype=np.float64)
    cdef const double[::1] g = g64
    cdef double[::1] a = dA64, p = dpi64
    cdef real[:, :, ::1] target = dlogE
    if req_le == 3 or req_le == 0:                  # add (or no output): into a buffer of our own
        buffer = np.empty_like(np.asarray(dlogE)) if req_le == 3 else None
        target = buffer if req_le == 3 else None
    cdef void *out = NULL
    if target is not None and target.shape[0] > 0:
        out = &target[0, 0, 0]
    with nogil:
        status = hmm_many_backward_dense(ws.plan, &g[0] if g.shape[0] else NULL,
                                         &logE[0, 0, 0] if logE.shape[0] else NULL, &a[0], &p[0], out,
                                         max(1, num_threads))
    if status != 0:
        raise MemoryError("hmm_forward_dense: no memory for the backward pass")
    store(dA, dA64, req_A)
    store(dpi, dpi64, req_pi)
    if req_le == 3:
        np.add(np.asarray(dlogE), buffer, out=np.asarray(dlogE))
