/* The dense forward and backward of lane plans (hmm_batch.c, HMM_LANES_MAX):
 * a sequence in each lane of a SIMD vector.  Included by hmm_batch.c after
 * the float64 instantiation of hmm_batch_impl.h (its vector type, vexp,
 * fmadd and stream); not a header of its own.
 *
 * Why: with states in the lanes (hmm_batch_impl.h), a step of a small model
 * spends most of its instructions per row on what a vector does not share -
 * the largest log-emission and the step's total (sums across lanes), 1 / c,
 * the running log-likelihood, branches per row - so at N = 10 (12 lanes of
 * 32-byte vectors) a row-step cost ~260 cycles, nearly the same whether the
 * block held 1 row or 10.  With a sequence in each lane every operation is
 * one vector operation for HMM_LANE_COUNT sequences: the maximum and the
 * total are sums over states (n vector operations, no reductions across
 * lanes), the matrix product n^2 multiply-adds with A's entries broadcast,
 * and only the rare events (a running product leaving its range, a row lost
 * to the range or NaN) leave the vectors.
 *
 * Layout: a block's rows (longest first) in groups of HMM_LANE_COUNT, group
 * g holding rows g * L .. g * L + L - 1 in its lanes; a group runs while its
 * first row runs (lanes of rows that have ended, or that are not there, are
 * computed and masked).  The forward stores each running group's emission row
 * E_t (n vectors: state i's over the lanes) one group after another
 * (h->estep_off: each block's first group-step), and alpha_hat at the end of
 * every HMM_LANES_SEG-th step (h->lstep_off: each block's first checkpoint
 * slot, in pred); the backward recomputes alpha_hat through each segment from
 * its checkpoint - a product with A per step, in cache - where storing pred as
 * well made the pass wait on memory, and recomputing E too (its exps) cost
 * more than reading it (measured, N=10, 10^6 steps, 2 threads: backward 28 ->
 * 17 ns a step with E stored).  The log-emissions are gathered from (and the
 * posteriors scattered to) the rows of the sequences, starts[b] + t.
 *
 * Arithmetic: the steps of the state-lane kernel (see FN(forward_block_body)
 * and FN(block_backward_body)) lane for lane, the sums over states taken in
 * state order, exp from a table where AVX-512 has it (lanes_exp); every
 * lane's operations are the same whatever the other lanes hold, so a
 * sequence's ll and dlogE are the same in any batch, bit for bit.  Only plans that are not weak run here (weak ones check every state
 * of every step: the state-lane kernel does), so no float32 and no guard. */

#define LV HMM_LANE_COUNT
#define LGROUPS (HMM_BATCH_ROWS / LV + 1)           /* groups of a block, at most */
typedef vec_f64 lvec;
typedef ivec_f64 livec;

static inline __attribute__((always_inline)) int lanes_any(livec m)
{
    int any = 0;
    for (int l = 0; l < LV; ++l)
        any |= m[l] != 0;
    return any;
}

/* a where m (all ones), else b */
static inline __attribute__((always_inline)) lvec lanes_sel(livec m, lvec a, lvec b)
{
    return (lvec)(((livec)a & m) | ((livec)b & ~m));
}

/* x[i] = row ... of each lane: logE[idx[l] + i] where live, else 0 (i < n). */
static inline __attribute__((always_inline)) void
lanes_gather(int n, const double *restrict logE, livec idx, livec live, lvec *restrict x)
{
#if defined(__AVX512F__) && HMM_VBYTES == 64
    const __mmask8 k = _mm512_test_epi64_mask((__m512i)live, (__m512i)live);
    for (int i = 0; i < n; ++i)
        x[i] = (lvec)_mm512_mask_i64gather_pd(_mm512_setzero_pd(), k, (__m512i)idx, logE + i, 8);
#elif defined(__AVX2__) && HMM_VBYTES == 32
    for (int i = 0; i < n; ++i)
        x[i] = (lvec)_mm256_mask_i64gather_pd(_mm256_setzero_pd(), logE + i, (__m256i)idx,
                                              (__m256d)live, 8);
#else
    for (int i = 0; i < n; ++i)
        for (int l = 0; l < LV; ++l)
            x[i][l] = live[l] ? logE[idx[l] + i] : 0.0;
#endif
}

/* dlogE[idx[l] + i] = x[i][l] where live (i < n). */
static inline __attribute__((always_inline)) void
lanes_scatter(int n, double *restrict dlogE, livec idx, livec live, const lvec *restrict x)
{
#if defined(__AVX512F__) && HMM_VBYTES == 64
    const __mmask8 k = _mm512_test_epi64_mask((__m512i)live, (__m512i)live);
    for (int i = 0; i < n; ++i)
        _mm512_mask_i64scatter_pd(dlogE + i, k, (__m512i)idx, (__m512d)x[i], 8);
#else
    for (int l = 0; l < LV; ++l)
        if (live[l])
            for (int i = 0; i < n; ++i)
                dlogE[idx[l] + i] = x[i][l];
#endif
}

/* The per-lane facts of a block's groups: each lane's length (0 past the
 * block's rows) and first row of logE times n. */
static void lanes_rows(const hmm_batch *h, int64_t blk, livec *lenv, livec *base)
{
    const int64_t first = h->first[blk];
    const int rows = (int)(h->first[blk + 1] - first);
    const int G = (rows + LV - 1) / LV;
    for (int g = 0; g < G; ++g)
        for (int l = 0; l < LV; ++l) {
            const int r = g * LV + l;
            const int64_t b = r < rows ? h->order[first + r] : -1;
            lenv[g][l] = b >= 0 ? h->lengths[b] : 0;
            base[g][l] = b >= 0 ? h->starts[b] * h->n : 0;
        }
}

/* exp(x) for x <= 0 (or -inf) where AVX-512 has a two-register permute: x =
 * (16 k + j) ln2 / 16 + r with |r| <= ln2 / 32, e^x = 2^k 2^(j/16) e^r, the
 * 2^(j/16) from a table of 16 (correctly rounded) and e^r by its Taylor
 * polynomial of degree 7 (its remainder below 2^-59): 13 multiply-adds where
 * vexp_f64 takes 18, which bound the lane kernel's forward.  Results below
 * e^-708 are 0, as vexp_f64's; within about 2 ulp of exp. */
static inline __attribute__((always_inline)) lvec lanes_exp(lvec x)
{
#if defined(__AVX512F__) && HMM_VBYTES == 64
    static const double tab[16] = {
        0x1.0000000000000p+0, 0x1.0b5586cf9890fp+0, 0x1.172b83c7d517bp+0, 0x1.2387a6e756238p+0,
        0x1.306fe0a31b715p+0, 0x1.3dea64c123422p+0, 0x1.4bfdad5362a27p+0, 0x1.5ab07dd485429p+0,
        0x1.6a09e667f3bcdp+0, 0x1.7a11473eb0187p+0, 0x1.8ace5422aa0dbp+0, 0x1.9c49182a3f090p+0,
        0x1.ae89f995ad3adp+0, 0x1.c199bdd85529cp+0, 0x1.d5818dcfba487p+0, 0x1.ea4afa2a490dap+0};
    const livec keep = x >= -708.0;                 /* all ones where the result is not 0 */
    x = lanes_sel(keep, x, (lvec){0} - 708.0);      /* below (or -inf): -708 */
    const double magic = 0x1.8p52;
    const lvec kf = (x * 23.083120654223414 + magic) - magic;      /* round(16 x / ln2) */
    lvec r = x - kf * 0.0433216094970703125;                        /* ln2 / 16, hi part (exact products) */
    r = r - kf * 8.9287926269338577e-08;                            /* and lo part */
    const livec k = __builtin_convertvector(kf, livec);
    const __m512d t = _mm512_permutex2var_pd(_mm512_loadu_pd(tab), (__m512i)(k & 15), _mm512_loadu_pd(tab + 8));
    lvec p = r * (1.0 / 5040.0) + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    const livec bits = ((k >> 4) + 1023) << 52;     /* 2^(k >> 4): x >= -708, so k >> 4 >= -1022 */
    return (lvec)((livec)((lvec)t * p * (lvec)bits) & keep);
#else
    return vexp_f64(x);
#endif
}

/* y[c] = sum_k x[k] M[k rs + c cs] for c < n (n vectors; M's entries
 * broadcast), each y[c] one chain of multiply-adds over k in order:
 * alpha_hat A (rs = n, cs = 1) and A u (rs = 1, cs = n). */
static inline __attribute__((always_inline)) void
lanes_product(const int n, const double *restrict M, const int rs, const int cs, const lvec *restrict x,
              lvec *restrict y)
{
    #pragma GCC unroll 16
    for (int c = 0; c < n; ++c)
        y[c] = x[0] * (M[(size_t)c * cs] - (lvec){0});
    #pragma GCC unroll 16
    for (int k = 1; k < n; ++k) {
        const lvec xk = x[k];
        #pragma GCC unroll 16
        for (int c = 0; c < n; ++c)
            y[c] = fmadd_f64(xk, M[(size_t)k * rs + (size_t)c * cs] - (lvec){0}, y[c]);
    }
}

/* p = pred_t (n vectors): pi at t = 0, else alpha_hat_{t-1} A from a (the
 * forward and the backward's recomputation both, so they agree bit for bit). */
static inline __attribute__((always_inline)) void
lanes_pred(const int n, int64_t t, const double *restrict A, const double *restrict pi,
           const lvec *restrict a, lvec *restrict p)
{
    if (t == 0) {
        #pragma GCC unroll 16
        for (int j = 0; j < n; ++j)
            p[j] = pi[j] - (lvec){0};
    } else {
        lanes_product(n, A, n, 1, a, p);
    }
}

/* One forward step of one group (the state-lane forward's, lane by lane):
 * a (n vectors) holds alpha_hat_{t-1} (t > 0) and gets pred_t * E_t, e (n
 * vectors) gets E_t = exp(logE_t - m_t); returns the step's total c_t, with
 * m_t in *mx and the lanes whose log-emissions hold a NaN in *nan.  row:
 * each lane's row of logE times n; live: the lanes whose sequence runs. */
static inline __attribute__((always_inline)) lvec
lanes_step(const int n, int64_t t, const double *restrict A, const double *restrict pi,
           const double *restrict logE, livec row, livec live, lvec *restrict a, lvec *restrict e,
           lvec *mx_out, livec *nan_out)
{
    lvec p[HMM_LANES_MAX], x[HMM_LANES_MAX];
    lanes_pred(n, t, A, pi, a, p);
    /* the lanes read as many streams through logE: ask for step t + 8 (as the
     * state-lane forward, where rows of <= 128 bytes measured a gain) */
    if (n * (int)sizeof(double) <= 128)
        for (int l = 0; l < LV; ++l)
            if (live[l]) {
                __builtin_prefetch(logE + row[l] + 8 * n);
                __builtin_prefetch(logE + row[l] + 9 * n - 1);
            }
    lanes_gather(n, logE, row, live, x);
    lvec mx = (lvec){0} - (double)INFINITY;
    livec nan = {0};
    #pragma GCC unroll 16
    for (int i = 0; i < n; ++i) {
        mx = lanes_sel(x[i] > mx, x[i], mx);
        nan |= x[i] != x[i];
    }
    /* a row all -inf: its E is 0 (exp(-inf - 0)), its total 0 */
    const lvec m0 = lanes_sel(mx == -(double)INFINITY, (lvec){0}, mx);
    lvec c = {0};
    #pragma GCC unroll 16
    for (int i = 0; i < n; ++i) {
        e[i] = lanes_exp(x[i] - m0);
        a[i] = p[i] * e[i];
        c += a[i];
    }
    *mx_out = mx;
    *nan_out = nan;
    return c;
}

/* Forward of block blk: ll of its sequences (a sequence whose step total
 * leaves [2^-900, 2^900], or with a NaN, is left to the double reference in
 * redo), each step's emission rows E, and alpha_hat at the end of every
 * HMM_LANES_SEG-th step as the checkpoints from which the backward recomputes
 * each segment.  alpha: LGROUPS * n vectors of scratch. */
static inline __attribute__((always_inline)) void
lanes_forward_body(const int n, hmm_batch *h, int64_t blk, lvec *restrict alpha)
{
    const int64_t first = h->first[blk];
    const int rows = (int)(h->first[blk + 1] - first);
    if (rows <= 0)
        return;
    const int G = (rows + LV - 1) / LV;
    const int64_t *seq = h->order + first;
    lvec *ck = (lvec *)h->pred + h->lstep_off[blk] * n;      /* checkpoint slot s * G + g */
    lvec *Eb = (lvec *)h->E + h->estep_off[blk] * n;          /* step t's group g at (off + g) * n */
    const int stream = h->stream_E;
    const double *logE = h->logE, *A = h->A64, *pi = h->pi64;
    livec lenv[LGROUPS], base[LGROUPS], dead[LGROUPS];
    lvec ll[LGROUPS], prod[LGROUPS], shift[LGROUPS];
    lanes_rows(h, blk, lenv, base);
    for (int g = 0; g < G; ++g) {
        dead[g] = (livec){0};
        ll[g] = (lvec){0};
        prod[g] = (lvec){0} + 1.0;
        shift[g] = (lvec){0};
    }
    const int64_t T0 = lenv[0][0];
    int active = G;                                 /* groups running at step t */
    int64_t off = 0;                                /* step t's first group-step in E */
    for (int64_t t = 0; t < T0; off += active, ++t) {
        while (lenv[active - 1][0] <= t)
            --active;
        for (int g = 0; g < active; ++g) {
            lvec *restrict a = alpha + g * n;
            const livec live = lenv[g] > t;
            lvec e[HMM_LANES_MAX], mx;
            livec nan;
            const lvec c = lanes_step(n, t, A, pi, logE, base[g] + t * n, live, a, e, &mx, &nan);
            lvec *restrict Eg = Eb + (off + g) * n;  /* E for the backward (whole aligned vectors) */
            for (int i = 0; i < n; ++i) {
                if (stream)
                    stream_f64((double *)(Eg + i), e[i]);
                else
                    Eg[i] = e[i];
            }
            /* so small (or large) that the step needs the reference's second shift; NaN */
            const livec inrange = (c >= 0x1p-900) & (c <= 0x1p900);
            dead[g] |= live & (nan | ~inrange);
            const livec keep = live & ~dead[g];
            const lvec inv = 1.0 / lanes_sel(keep, c, (lvec){0} + 1.0);
            #pragma GCC unroll 16
            for (int i = 0; i < n; ++i)
                a[i] = (lvec)((livec)(a[i] * inv) & keep);
            /* As hmm_forward_scaled: log of running products of the c_t. */
            shift[g] += (lvec)((livec)mx & keep);
            const livec mul = keep & (c > 0x1p-400) & (c < 0x1p400);
            prod[g] = lanes_sel(mul, prod[g] * c, prod[g]);
            const livec out = keep & ~mul;
            if (lanes_any(out))
                for (int l = 0; l < LV; ++l)
                    if (out[l])
                        ll[g][l] += log(c[l]);
            const livec far = (prod[g] < 0x1p-500) | (prod[g] > 0x1p500);
            if (lanes_any(far))
                for (int l = 0; l < LV; ++l)
                    if (far[l]) {
                        ll[g][l] += log(prod[g][l]);
                        prod[g][l] = 1.0;
                    }
        }
        if ((t + 1) % HMM_LANES_SEG == 0 && t + 1 < T0)     /* alpha_hat entering segment (t+1)/SEG */
            for (int g = 0; g < active; ++g)
                memcpy(ck + ((t + 1) / HMM_LANES_SEG * G + g) * n, alpha + g * n, sizeof(lvec) * n);
    }
    if (stream)
        stream_fence_f64();
    for (int r = 0; r < rows; ++r) {
        const int g = r / LV, l = r % LV;
        if (!dead[g][l])
            h->ll[seq[r]] = ll[g][l] + log(prod[g][l]) + shift[g][l];
        else
            h->redo[seq[r]] = 1;
    }
}

/* Backward of block blk into the group accumulator acc (laid out as the
 * state-lane kernel's: dA (np, np), dBT (1, np), dpi (np)), segment by
 * segment from the last: each segment's alpha_hat again from its checkpoint
 * and the stored E (the forward's operations, so its values, held in cache
 * rather than written to memory and read back), then its steps backwards.
 * As FN(block_backward_body), with
 *   gamma_t = alpha_hat_t * beta_hat_t,  u_t = E_t * beta_hat_t / c_t,
 *   dA += g alpha_hat_{t-1} (x) u_t,  dpi += g u_0,  beta_hat_{t-1} = A u_t.
 * mem: lanes_work_bytes. */
static inline __attribute__((always_inline)) void
lanes_backward_body(const int n, const hmm_batch *h, int64_t blk, const double *gll, double *acc,
                    lvec *restrict mem)
{
    const int np = h->np;
    const int64_t first = h->first[blk];
    const int rows = (int)(h->first[blk + 1] - first);
    if (rows <= 0)
        return;
    const int G = (rows + LV - 1) / LV;
    const int64_t *seq = h->order + first;
    const lvec *ck = (const lvec *)h->pred + h->lstep_off[blk] * n;
    const lvec *Eb = (const lvec *)h->E + h->estep_off[blk] * n;
    const double *A = h->A64, *pi = h->pi64;
    double *dlogE = h->dlogE;
    /* scratch: W, U, the recomputed alpha, the checkpoint (LGROUPS x n each), dA, dpi, and
     * the segment's alpha_hat, g u (SEG x LGROUPS x n each) and 1 / c (SEG x LGROUPS); its E
     * is read where the forward stored it (eoff) */
    lvec *W = mem, *U = W + LGROUPS * n, *cur = U + LGROUPS * n, *prevA = cur + LGROUPS * n;
    lvec *dA = prevA + LGROUPS * n, *dpi = dA + (size_t)n * n;
    lvec *segA = dpi + n, *segU = segA + HMM_LANES_SEG * LGROUPS * n;
    lvec *segC = segU + HMM_LANES_SEG * LGROUPS * n;
    int acts[HMM_LANES_SEG];                        /* groups running at each step of the segment */
    int64_t eoff[HMM_LANES_SEG];                    /* each step's first group-step in E */
    livec lenv[LGROUPS], base[LGROUPS], keepv[LGROUPS];
    lvec gv[LGROUPS];
    lanes_rows(h, blk, lenv, base);
    for (int g = 0; g < G; ++g)
        for (int l = 0; l < LV; ++l) {
            const int r = g * LV + l;
            const int64_t b = r < rows ? seq[r] : -1;
            const int skip = b < 0 || gll[b] == 0.0 || h->ll[b] == -INFINITY || h->redo[b];
            keepv[g][l] = skip ? 0 : -1;
            gv[g][l] = skip ? 0.0 : gll[b];
        }
    for (int k = 0; k < G * n; ++k)
        W[k] = U[k] = (lvec){0};
    for (int k = 0; k < n * n + n; ++k)
        dA[k] = (lvec){0};
    const int64_t T0 = lenv[0][0];
    for (int64_t s = (T0 - 1) / HMM_LANES_SEG; s >= 0; --s) {
        const int64_t t0 = s * HMM_LANES_SEG, t1 = t0 + HMM_LANES_SEG < T0 ? t0 + HMM_LANES_SEG : T0;
        /* the segment's forward again, from alpha_hat_{t0 - 1} */
        int active = G;
        while (lenv[active - 1][0] <= t0)
            --active;
        if (s > 0)
            for (int g = 0; g < active; ++g)
                for (int i = 0; i < n; ++i) {
                    cur[g * n + i] = ck[(s * G + g) * n + i];
                    /* (the rows without a gradient: 0, as the segment's own alpha_hat) */
                    prevA[g * n + i] = (lvec)((livec)cur[g * n + i] & keepv[g]);
                }
        int64_t off = 0;                            /* step t0's first group-step in E */
        for (int g = 0; g < G; ++g)
            off += lenv[g][0] < t0 ? lenv[g][0] : t0;
        for (int64_t t = t0; t < t1; off += active, ++t) {
            while (lenv[active - 1][0] <= t)
                --active;
            eoff[t - t0] = off;
            for (int g = 0; g < active; ++g) {
                const livec live = lenv[g] > t, keep = live & keepv[g];
                lvec *restrict a = cur + g * n;
                const lvec *restrict Eg = Eb + (off + g) * n;
                /* the forward's step again from its emission row: pred_t = alpha_{t-1} A (pi at
                 * t = 0), a = pred_t * E_t, c its total - lanes_step's operations, in its order */
                lvec p[HMM_LANES_MAX];
                lanes_pred(n, t, A, pi, a, p);
                /* E is read upwards within a segment, the segments downwards: ask for 4 steps on */
                for (int k = 0; k < n * LV; k += 64 / (int)sizeof(double))
                    __builtin_prefetch((const double *)(Eg + 4 * (int64_t)active * n) + k);
                lvec c = {0};
                #pragma GCC unroll 16
                for (int i = 0; i < n; ++i) {
                    a[i] = p[i] * Eg[i];
                    c += a[i];
                }
                const lvec inv = 1.0 / lanes_sel(keep, c, (lvec){0} + 1.0);
                segC[(t - t0) * LGROUPS + g] = inv;
                lvec *restrict sa = segA + ((t - t0) * LGROUPS + g) * n;
                #pragma GCC unroll 16
                for (int i = 0; i < n; ++i)
                    sa[i] = a[i] = (lvec)((livec)(a[i] * inv) & keep);
            }
        }
        /* and its steps backwards */
        for (int64_t t = t1 - 1; t >= t0; --t) {
            int act = active;                       /* groups running at step t */
            while (act < G && lenv[act][0] > t)
                ++act;
            active = act;
            for (int g = 0; g < act; ++g) {
                const livec live = lenv[g] > t, keep = live & keepv[g];
                const livec row = base[g] + t * n;
                const lvec *restrict at = segA + ((t - t0) * LGROUPS + g) * n;
                const lvec *restrict et = Eb + (eoff[t - t0] + g) * n;
                const lvec ic = segC[(t - t0) * LGROUPS + g];           /* 1 / c_t */
                lvec *restrict w = W + g * n, *restrict u = U + g * n;
                const livec start = lenv[g] == t + 1;                   /* beta_hat_{T-1} = 1 */
                if (lanes_any(start))
                    for (int i = 0; i < n; ++i)
                        w[i] = lanes_sel(start, (lvec){0} + 1.0, w[i]);
                /* the lanes write as many streams through dlogE, backwards: ask for
                 * step t - 8 (as the state-lane backward) */
                if (n * (int)sizeof(double) <= 128)
                    for (int l = 0; l < LV; ++l)
                        if (live[l]) {
                            __builtin_prefetch(dlogE + row[l] - 8 * n, 1);
                            __builtin_prefetch(dlogE + row[l] - 7 * n - 1, 1);
                        }
                const lvec gf = gv[g];
                lvec gm[HMM_LANES_MAX];
                #pragma GCC unroll 16
                for (int i = 0; i < n; ++i) {
                    gm[i] = (lvec)((livec)(at[i] * w[i] * gf) & keep);    /* g * gamma_t */
                    u[i] = (lvec)((livec)(et[i] * (w[i] * ic)) & keep);
                }
                lanes_scatter(n, dlogE, row, live, gm);
                if (t == 0) {
                    #pragma GCC unroll 16
                    for (int i = 0; i < n; ++i)
                        dpi[i] = fmadd_f64(gf, u[i], dpi[i]);
                    continue;
                }
                lvec *restrict gu = segU + ((t - t0) * LGROUPS + g) * n;     /* for dA, below */
                #pragma GCC unroll 16
                for (int i = 0; i < n; ++i)
                    gu[i] = u[i] * gf;
            }
            acts[t - t0] = act;
            if (t == 0)
                continue;
            for (int g = 0; g < act; ++g) {         /* beta_hat_{t-1} = A u_t: chains over j in order */
                lvec *restrict w = W + g * n;
                const lvec *restrict u = U + g * n;
                lvec sw[HMM_LANES_MAX];
                lanes_product(n, A, 1, n, u, sw);
                #pragma GCC unroll 16
                for (int i = 0; i < n; ++i)
                    w[i] = sw[i];
            }
        }
        /* dA += sum over the segment's steps t > 0 and groups of alpha_hat_{t-1} (x) g u_t,
         * in register tiles of 4 x 4 states (the rows of X: alpha_hat_{t0 - 1}, the
         * checkpoint, then the segment's own) */
        const int64_t tb = t0 > 0 ? t0 : 1;
        for (int i0 = 0; i0 < n; i0 += 4)         /* (not unrolled: compile time; measured the same) */
            for (int j0 = 0; j0 < n; j0 += 4) {
                lvec d[4][4];
                #pragma GCC unroll 4
                for (int ii = 0; ii < 4; ++ii)
                    #pragma GCC unroll 4
                    for (int jj = 0; jj < 4; ++jj)
                        d[ii][jj] = i0 + ii < n && j0 + jj < n ? dA[(size_t)(i0 + ii) * n + j0 + jj] : (lvec){0};
                for (int64_t t = tb; t < t1; ++t)
                    for (int g = 0; g < acts[t - t0]; ++g) {
                        const lvec *restrict x = t > t0 ? segA + ((t - 1 - t0) * LGROUPS + g) * n : prevA + g * n;
                        const lvec *restrict y = segU + ((t - t0) * LGROUPS + g) * n;
                        #pragma GCC unroll 4
                        for (int ii = 0; ii < 4; ++ii)
                            if (i0 + ii < n) {
                                const lvec xi = x[i0 + ii];
                                #pragma GCC unroll 4
                                for (int jj = 0; jj < 4; ++jj)
                                    if (j0 + jj < n)
                                        d[ii][jj] = fmadd_f64(xi, y[j0 + jj], d[ii][jj]);
                            }
                    }
                #pragma GCC unroll 4
                for (int ii = 0; ii < 4; ++ii)
                    #pragma GCC unroll 4
                    for (int jj = 0; jj < 4; ++jj)
                        if (i0 + ii < n && j0 + jj < n)
                            dA[(size_t)(i0 + ii) * n + j0 + jj] = d[ii][jj];
            }
    }
    double *aA = acc, *api = acc + (size_t)np * np + np;        /* (m + 1 = 1 row of BT) */
    for (int i = 0; i < n; ++i) {
        for (int j = 0; j < n; ++j) {
            double sum = 0.0;
            for (int l = 0; l < LV; ++l)
                sum += dA[(size_t)i * n + j][l];
            aA[(size_t)i * np + j] += sum;
        }
        double sum = 0.0;
        for (int l = 0; l < LV; ++l)
            sum += dpi[i][l];
        api[i] += sum;
    }
}

/* The bodies above for each n as a constant (loops unrolled, rows of
 * vectors in registers). */
#define LANES_CASES(X) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12) \
                       X(13) X(14) X(15) X(16)
static void lanes_forward_block(hmm_batch *h, int64_t blk, lvec *restrict alpha)
{
#define CASE_(N_) case N_: lanes_forward_body(N_, h, blk, alpha); break;
    switch (h->n) {
    LANES_CASES(CASE_)
    }
#undef CASE_
}

static void lanes_backward_block(const hmm_batch *h, int64_t blk, const double *gll, double *acc,
                                 lvec *restrict mem)
{
#define CASE_(N_) case N_: lanes_backward_body(N_, h, blk, gll, acc, mem); break;
    switch (h->n) {
    LANES_CASES(CASE_)
    }
#undef CASE_
}
#undef LANES_CASES

/* task(h, k, scratch, ctx) for k in [0, count), in any order, on nt threads
 * (the calling thread alone with the plan's own scratch when nt <= 1), each
 * thread with lanes_work_bytes of scratch.  -1 if out of memory or if a task
 * returned nonzero. */
typedef int (*lanes_task)(hmm_batch *h, int64_t k, lvec *scratch, void *ctx);

static int lanes_run(hmm_batch *h, int64_t count, lanes_task task, void *ctx, int nt)
{
    if (nt <= 1) {
        lvec *mem = (lvec *)plan_work_f64(h);
        if (!mem)
            return -1;
        int fail = 0;
        for (int64_t k = 0; k < count; ++k)
            fail |= task(h, k, mem, ctx) != 0;
        return fail ? -1 : 0;
    }
    int fail = 0;
    #pragma omp parallel num_threads(nt)
    {
        lvec *mem = alloc64(lanes_work_bytes(h));
        if (!mem) {
            #pragma omp atomic write
            fail = 1;
        }
        #pragma omp for schedule(dynamic, 1)
        for (int64_t k = 0; k < count; ++k)
            if (mem && task(h, k, mem, ctx) != 0) {
                #pragma omp atomic write
                fail = 1;
            }
        free(mem);
    }
    return fail ? -1 : 0;
}

static int lanes_forward_task(hmm_batch *h, int64_t blk, lvec *alpha, void *ctx)
{
    (void)ctx;
    lanes_forward_block(h, blk, alpha);
    return 0;
}

static int lanes_redo_task(hmm_batch *h, int64_t b, lvec *scratch, void *ctx)
{
    (void)scratch;
    (void)ctx;
    return forward_redo_f64(h, b);
}

/* The forward of a lane plan (h prepared by its state-lane variant, not
 * weak): blocks on nt threads, then the rows left to the double reference. */
static int lanes_forward(hmm_batch *h, int nt)
{
    const int status = lanes_run(h, h->nblocks, lanes_forward_task, NULL, nt);
    const int redo = lanes_run(h, h->batch, lanes_redo_task, NULL, nt);
    return status || redo ? -1 : 0;
}

typedef struct {
    const double *gll;
    double *acc;
    int64_t groups;
} lanes_backward_ctx;

/* Group gi of the backward (as FN(backward_group): blocks gi, gi + groups,
 * ... in order into its accumulator, then its sequences left to the double
 * reference). */
static int lanes_backward_group(hmm_batch *h, int64_t gi, lvec *mem, void *ctx)
{
    const lanes_backward_ctx *c = ctx;
    double *a = c->acc + gi * acc_width(h);
    int fail = 0;
    for (int64_t blk = gi; blk < h->nblocks; blk += c->groups)
        lanes_backward_block(h, blk, c->gll, a, mem);
    for (int64_t blk = gi; blk < h->nblocks; blk += c->groups)
        for (int64_t k = h->first[blk]; k < h->first[blk + 1]; ++k) {
            const int64_t b = h->order[k];
            if (h->redo[b] && c->gll[b] != 0.0 && h->ll[b] != -INFINITY
                    && backward_double(h, b, c->gll[b], a) != 0)
                fail = 1;
        }
    return fail ? -1 : 0;
}

static int lanes_backward(hmm_batch *h, const double *gll, double *acc, int64_t groups, int nt)
{
    lanes_backward_ctx ctx = {gll, acc, groups};
    return lanes_run(h, groups, lanes_backward_group, &ctx, nt);
}

#undef LV
#undef LGROUPS
