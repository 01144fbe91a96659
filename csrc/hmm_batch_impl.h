/* The blocked forward and backward of hmm_batch.c for one compute dtype and
 * vector width.  Included by hmm_batch.c with REAL = float / double, SUF =
 * f32 / f64 (f32n / f64n: 32-byte vectors, narrow plans) and IS_FLOAT32 =
 * 1 / 0; not a header of its own.
 *
 * Layouts inside a block of `rows` sequences (longest first): at step t the
 * rows still running are a prefix, the first `active` ones, so every product
 * below runs on those only, and pred (active, np) and scale (active,) - the
 * inverse 1 / c_t of each step's total, which the backward multiplies by - of
 * the steps are stored one after another (what the block's symbols need,
 * however unequal its lengths).
 * States are padded to np (whole SIMD vectors) with zeros in A, B and pi, so
 * padded states stay at probability 0 and no loop needs a tail. */

#define CAT2_(a, b) a##_##b
#define CAT_(a, b) CAT2_(a, b)
#define FN(name) CAT_(name, SUF)
#define VEC FN(vec)
#define VL ((int)(HMM_VBYTES / sizeof(REAL)))

typedef REAL VEC __attribute__((vector_size(HMM_VBYTES)));
#define IVEC FN(ivec)
#if IS_FLOAT32
typedef int32_t IVEC __attribute__((vector_size(HMM_VBYTES)));   /* VEC's lanes as integers */
#else
typedef int64_t IVEC __attribute__((vector_size(HMM_VBYTES)));
#endif

/* x * y + z rounded once.  Written out where the target has FMA: GCC's
 * tuning for this machine (znver4, "avoid FMA chains") otherwise splits a
 * lone accumulation chain - the tile of one row and one 32-byte vector -
 * into a multiply and an add, and that row would round differently from the
 * same row in a tile of several (found by the alone-or-in-a-batch test). */
static inline __attribute__((always_inline)) VEC FN(fmadd)(VEC x, VEC y, VEC z)
{
#if defined(__FMA__) && HMM_VBYTES == 32
#if IS_FLOAT32
    return (VEC)_mm256_fmadd_ps((__m256)x, (__m256)y, (__m256)z);
#else
    return (VEC)_mm256_fmadd_pd((__m256d)x, (__m256d)y, (__m256d)z);
#endif
#elif defined(__AVX512F__) && HMM_VBYTES == 64
#if IS_FLOAT32
    return (VEC)_mm512_fmadd_ps((__m512)x, (__m512)y, (__m512)z);
#else
    return (VEC)_mm512_fmadd_pd((__m512d)x, (__m512d)y, (__m512d)z);
#endif
#else
    return x * y + z;
#endif
}

/* C (R x CV vectors) = sum_k L(r, k) * M[k, :] with L(r, k) = L[r*lr + k*lk]:
 * the register tile of every product here (R <= 8 rows, CV <= 4 vectors,
 * constants at each call so that the accumulators live in registers).  Each
 * element is one multiply-add chain over k in order, whatever R and CV, so a
 * row's result does not depend on the rows beside it in a block. */
static inline __attribute__((always_inline)) void
FN(tile)(const int R, const int CV, int K, const REAL *restrict L, ptrdiff_t lr,
         ptrdiff_t lk, const REAL *restrict M, ptrdiff_t ms, REAL *restrict C,
         ptrdiff_t cs)
{
    VEC acc[8][4];
    for (int r = 0; r < R; ++r)
        for (int q = 0; q < CV; ++q)
            acc[r][q] = (VEC){0};
    for (int k = 0; k < K; ++k) {
        const VEC *restrict mk = (const VEC *)(M + k * ms);
        VEC b[4];
        for (int q = 0; q < CV; ++q)
            b[q] = mk[q];
        for (int r = 0; r < R; ++r) {
            const VEC a = L[r * lr + k * lk] - (VEC){0};       /* broadcast (x - 0 is x, -0 too) */
            for (int q = 0; q < CV; ++q)
                acc[r][q] = FN(fmadd)(a, b[q], acc[r][q]);
        }
    }
    for (int r = 0; r < R; ++r)
        for (int q = 0; q < CV; ++q)
            ((VEC *)(C + r * cs))[q] = acc[r][q];
}

/* C (rows, nv vectors) = L (rows, K) . M (K, nv vectors), strides as in tile:
 * column chunks of HMM_MAXCV vectors outside (that slice of M stays in L1),
 * tiles of rows inside: 8 rows for chunks of 1-2 vectors, 4 for wider ones -
 * enough independent multiply-add chains to cover the FMA latency (N=16:
 * 8-row tiles made the product ~1.5x faster than 4-row ones), at most 16
 * accumulators. */
static void FN(gemm)(int rows, int nv, int K, const REAL *L, ptrdiff_t lr,
                     ptrdiff_t lk, const REAL *M, ptrdiff_t ms, REAL *C, ptrdiff_t cs)
{
    for (int j0 = 0; j0 < nv; j0 += HMM_MAXCV) {
        const int cv = nv - j0 < HMM_MAXCV ? nv - j0 : HMM_MAXCV;
        const REAL *Mj = M + j0 * VL;
#if defined(__AVX512F__) && HMM_VBYTES == 32
        const int RT = cv <= 3 ? 8 : 4;     /* 32 registers: 8 x 3 accumulators fit (N = 9..12 narrow) */
#else
        const int RT = cv <= 2 ? 8 : 4;
#endif
        for (int r0 = 0; r0 < rows; r0 += RT) {
            const int R = rows - r0 < RT ? rows - r0 : RT;
            const REAL *Lr = L + r0 * lr;
            REAL *Cr = C + r0 * cs + j0 * VL;
#define TILE_(R_, CV_) case R_ * 8 + CV_: FN(tile)(R_, CV_, K, Lr, lr, lk, Mj, ms, Cr, cs); break
            switch (R * 8 + cv) {
                TILE_(8, 1); TILE_(8, 2); TILE_(7, 1); TILE_(7, 2);
                TILE_(6, 1); TILE_(6, 2); TILE_(5, 1); TILE_(5, 2);
#if defined(__AVX512F__) && HMM_VBYTES == 32
                TILE_(8, 3); TILE_(7, 3); TILE_(6, 3); TILE_(5, 3);
#endif
                TILE_(4, 1); TILE_(4, 2); TILE_(4, 3); TILE_(4, 4);
                TILE_(3, 1); TILE_(3, 2); TILE_(3, 3); TILE_(3, 4);
                TILE_(2, 1); TILE_(2, 2); TILE_(2, 3); TILE_(2, 4);
                TILE_(1, 1); TILE_(1, 2); TILE_(1, 3); TILE_(1, 4);
            }
#undef TILE_
        }
    }
}

/* d[0:VL] += g * x, in double (d need not be aligned): in whole vectors,
 * since element by element the conversions cost as much as a product. */
static inline __attribute__((always_inline)) void FN(add_double)(double *d, double g, VEC x)
{
    typedef double dvec __attribute__((vector_size(HMM_VBYTES), aligned(8)));
#if IS_FLOAT32
    typedef float hvec __attribute__((vector_size(HMM_VBYTES / 2)));
    hvec lo, hi;
    memcpy(&lo, &x, sizeof lo);
    memcpy(&hi, (char *)&x + sizeof lo, sizeof hi);
    dvec *dd = (dvec *)d;
    dd[0] += g * __builtin_convertvector(lo, dvec);
    dd[1] += g * __builtin_convertvector(hi, dvec);
#else
    *(dvec *)d += g * x;
#endif
}
#define add_to_double FN(add_double)

/* A non-temporal store of one vector at d, aligned to the vector (see
 * "Streaming stores" in hmm_batch.c); an ordinary store without AVX. */
static inline __attribute__((always_inline)) void FN(stream)(REAL *d, VEC x)
{
#if HMM_VBYTES == 64 && defined(__AVX512F__)
#if IS_FLOAT32
    _mm512_stream_ps(d, (__m512)x);
#else
    _mm512_stream_pd(d, (__m512d)x);
#endif
#elif HMM_VBYTES == 32 && defined(__AVX__)
#if IS_FLOAT32
    _mm256_stream_ps(d, (__m256)x);
#else
    _mm256_stream_pd(d, (__m256d)x);
#endif
#else
    memcpy(d, &x, sizeof x);
#endif
}

/* Orders the streaming stores before what follows (their readers). */
static inline __attribute__((always_inline)) void FN(stream_fence)(void)
{
#if defined(__SSE__)
    _mm_sfence();
#endif
}

/* exp(x) for x <= 0 (or -inf), a vector at a time: x = k ln2 + r with
 * |r| <= ln2 / 2, e^r by its Taylor polynomial (degree 6 for float32, 13 for
 * double: below an ulp), 2^k put into the exponent bits.  Results under the
 * smallest normal number are 0 (an emission 2^-126 below the step's largest
 * one cannot change a float32 sum; the float32 guard of the forward sends
 * sequences that need it to double anyway).  libm's exp does not vectorise
 * here, and the dense forward takes one per state and step. */
static inline __attribute__((always_inline)) VEC FN(vexp)(VEC x)
{
#if IS_FLOAT32
    const REAL lo = -87.0f, magic = 0x1.8p23f;
    const REAL c[] = {1.0f / 720, 1.0f / 120, 1.0f / 24, 1.0f / 6, 0.5f, 1.0f, 1.0f};
    const int nc = 7, mant = 23, bias = 127;
#else
    const REAL lo = -708.0, magic = 0x1.8p52;
    const REAL c[] = {1.0 / 6227020800.0, 1.0 / 479001600.0, 1.0 / 39916800.0, 1.0 / 3628800.0,
                      1.0 / 362880.0, 1.0 / 40320.0, 1.0 / 5040.0, 1.0 / 720.0, 1.0 / 120.0,
                      1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0};
    const int nc = 14, mant = 52, bias = 1023;
#endif
    const IVEC keep = x >= lo;                      /* all ones where the result is not 0 */
    const VEC lov = (VEC){0} + lo;
    x = (VEC)(((IVEC)x & keep) | ((IVEC)lov & ~keep));   /* below lo (or -inf): lo */
    VEC kf = (x * (REAL)1.4426950408889634 + magic) - magic;     /* round(x / ln2) */
    VEC r = x - kf * (REAL)0.693145751953125;                      /* ln2, hi part */
    r = r - kf * (REAL)1.4286068203094172321e-06;                  /* and lo part */
    VEC p = r * c[0] + c[1];
    for (int i = 2; i < nc; ++i)
        p = p * r + c[i];
    const IVEC bits = (__builtin_convertvector(kf, IVEC) + bias) << mant;
    return (VEC)((IVEC)(p * (VEC)bits) & keep);
}

/* The guard of a dense plan (see hmm_batch.h, "States far behind"), from
 * the double copies A64, pi64: h->weak = 0 where every
 * entry of A and of pi lies in [lo, lo * R] for lo their smallest entry, at
 * least HMM_WEAK_LO; then a state the scaled forward drops (its share of the
 * step below ~2^-95 in float32, 2^-920 in float64) has a posterior below
 * n * R times that share (any path through it has a kept rival that follows
 * it from the next step on, at most R times less likely), far below the
 * rounding.  Otherwise (zeros, tiny or widely spread entries: a CRF with
 * constraints) h->weak = 1: the forward checks every state of nonzero
 * probability against the floors below and sends a sequence where one falls
 * short to the double reference, with the same check in double, and from
 * there to log space (logA64, logAT64, logpi64, made then: plan_logs). */
#if IS_FLOAT32
#define HMM_WEAK_LO 0x1p-30
#define HMM_WEAK_R 0x1p30
#define HMM_FLOOR 0x1p-110f     /* the guard's floors: products stay normal numbers, */
#else                           /* with 2^16 (float64: 2^22) to spare */
#define HMM_WEAK_LO 0x1p-100
#define HMM_WEAK_R 0x1p40
#define HMM_FLOOR 0x1p-1000
#endif
static int FN(prepare_guard)(hmm_batch *h)
{
    const int n = h->n;
    double amin = INFINITY, amax = 0.0, apos = INFINITY, pmin = INFINITY, pmax = 0.0;
    int nan = 0;
    for (size_t k = 0; k < (size_t)n * n; ++k) {
        const double a = h->A64[k];
        nan |= a != a;
        amin = a < amin ? a : amin;
        amax = a > amax ? a : amax;
        if (a > 0.0 && a < apos)
            apos = a;
    }
    for (int i = 0; i < n; ++i) {
        const double p = h->pi64[i];
        nan |= p != p;
        pmin = p < pmin ? p : pmin;
        pmax = p > pmax ? p : pmax;
    }
    h->weak = nan || !(amin >= HMM_WEAK_LO && amax <= amin * HMM_WEAK_R
                       && pmin >= HMM_WEAK_LO && pmax <= pmin * HMM_WEAK_R);
    /* alpha_hat at least floor / (A's smallest nonzero entry): its products with A stay >= floor */
    const double small = apos < 1.0 ? apos : 1.0;
    h->floor_alpha = HMM_FLOOR / small;
    h->floor_alpha64 = 0x1p-1000 / small;
    h->have_logs = 0;               /* (taken by the first sequence that needs them: plan_logs) */
    return 0;
}
#undef HMM_WEAK_LO
#undef HMM_WEAK_R

/* Padded copies of the parameters in the compute dtype (and, for float32 and
 * dense plans, double copies for the reference functions), in one block made
 * by the plan's first forward and kept; pred and scale (and E) likewise: their
 * sizes are the plan's (see "Fixed costs" in hmm_batch.c). */
static int FN(prepare)(hmm_batch *h, const REAL *A, const REAL *B, const REAL *pi)
{
    const int n = h->n, m = h->m, np = h->np;
    const int doubles = IS_FLOAT32 || h->dense;      /* for the double reference */
    if (!h->params) {
        if (!(h->params = alloc64(params_layout(h, NULL))))
            return -1;
        params_layout(h, h->params);
    }
    REAL *Ap = h->Ap, *ATp = h->ATp, *BTp = h->BTp, *pip = h->pip;
    memset(Ap, 0, sizeof(REAL) * np * np);
    memset(ATp, 0, sizeof(REAL) * np * np);
    memset(BTp, 0, sizeof(REAL) * (size_t)(m + 1) * np);
    memset(pip, 0, sizeof(REAL) * np);
    for (int i = 0; i < n; ++i) {
        pip[i] = pi[i];
        for (int j = 0; j < n; ++j) {
            Ap[(size_t)i * np + j] = A[(size_t)i * n + j];
            ATp[(size_t)j * np + i] = A[(size_t)i * n + j];
        }
        for (int k = 0; k < m; ++k)
            BTp[(size_t)k * np + i] = B[(size_t)i * m + k];
        BTp[(size_t)m * np + i] = 1;                /* a missing step */
    }
    if (doubles) {
        for (int i = 0; i < n; ++i) {
            h->pi64[i] = pi[i];
            for (int j = 0; j < n; ++j) {
                h->A64[(size_t)i * n + j] = A[(size_t)i * n + j];
                h->AT64[(size_t)j * n + i] = A[(size_t)i * n + j];
            }
            for (int k = 0; k < m; ++k)
                h->BT64[(size_t)k * n + i] = B[(size_t)i * m + k];
            h->BT64[(size_t)m * n + i] = 1.0;
        }
    }
    if (h->dense && FN(prepare_guard)(h) != 0)
        return -1;
#if IS_FLOAT32
    h->use_lanes = 0;
#else
    h->use_lanes = h->lanes && !h->weak;        /* a sequence in each lane (hmm_batch_lanes.h) */
#endif
    /* pred, scale and E of the kernel that runs: the lane kernel keeps its checkpoints in pred
     * and nothing else (a small plan's block holds either) */
    const size_t pred_bytes = sizeof(REAL) * (h->use_lanes ? lanes_pred_elems(h) : pred_elems(h));
    if (!h->small && h->pred && h->pred_bytes < pred_bytes) {
        big_free(h->pred, h->pred_bytes);
        h->pred = NULL;
    }
    if (!h->pred)
        h->pred = big_alloc(pred_bytes, &h->pred_bytes);
#if !IS_FLOAT32
    if (h->use_lanes) {         /* and E, the emission rows, in its layout */
        const size_t bytes = sizeof(double) * lanes_E_elems(h);
        if (!h->small && h->E && h->E_bytes < bytes) {
            big_free(h->E, h->E_bytes);
            h->E = NULL;
        }
        if (!h->E)
            h->E = big_alloc(bytes, &h->E_bytes);
        h->stream_E = !h->small && bytes >= HMM_STREAM_BYTES;
        return h->pred && h->E ? 0 : -1;
    }
#endif
    if (!h->scale)
        h->scale = big_alloc(sizeof(REAL) * h->step_off[h->nblocks], &h->scale_bytes);
    if (h->dense && !h->small && h->E && h->E_bytes < sizeof(REAL) * pred_elems(h)) {
        big_free(h->E, h->E_bytes);             /* (a lane plan's E, smaller) */
        h->E = NULL;
    }
    if (h->dense && !h->E) {    /* the emission rows exp(logE - shift), laid out as pred */
        const size_t bytes = sizeof(REAL) * pred_elems(h);
        h->E = big_alloc(bytes, &h->E_bytes);
        h->stream_E = !h->small && bytes >= HMM_STREAM_BYTES;   /* (big_alloc's blocks are aligned) */
    }
    if (!h->pred || !h->scale || (h->dense && !h->E))
        return -1;
    return 0;
}

/* The scratch of a pass on the calling thread alone, kept with the plan (see
 * work_bytes).  NULL if out of memory. */
static REAL *FN(plan_work)(hmm_batch *h)
{
    if (!h->work)
        h->work = alloc64(work_bytes(h));
    return h->work;
}

/* The emission row of a dense step into er (np, zero-padded):
 * exp(le - max(le)); returns max(le) (-inf: a row of zeros).  Lanes past n
 * are -inf (exp: 0).  fin (np / VL vectors) or NULL: where le > -inf. */
static inline __attribute__((always_inline)) REAL FN(dense_row)(int n, int np, const REAL *restrict le,
                                                                REAL *restrict er, IVEC *restrict fin)
{
    const int nv = np / VL;
    VEC *restrict ev = (VEC *)er;
    VEC mv = (VEC){0} - (REAL)INFINITY;
    IVEC nan = {0};
    for (int v = 0; v < nv; ++v) {
        VEC x;
        if ((v + 1) * VL <= n) {
            memcpy(&x, le + v * VL, sizeof x);      /* one unaligned vector load */
        } else {
            for (int l = 0; l < VL; ++l)
                x[l] = v * VL + l < n ? le[v * VL + l] : -(REAL)INFINITY;
        }
        ev[v] = x;
        if (fin)                        /* (the guard's: which log-emissions are finite) */
            fin[v] = x > -(REAL)INFINITY;
        const IVEC gt = x > mv;
        mv = (VEC)(((IVEC)x & gt) | ((IVEC)mv & ~gt));
        nan |= x != x;
    }
    int any_nan = 0;
    for (int l = 0; l < VL; ++l)
        any_nan |= nan[l] != 0;
    if (any_nan) {                      /* NaN in, NaN out: the caller sends the row to the reference */
        for (int v = 0; v < nv; ++v)
            ev[v] = (VEC){0};
        return (REAL)NAN;
    }
    /* the lanes' maximum by halving (log2 VL steps, not VL - 1) */
    REAL lanes[VL];
    memcpy(lanes, &mv, sizeof lanes);
    for (int w = VL / 2; w >= 1; w /= 2)
        for (int l = 0; l < w; ++l)
            lanes[l] = lanes[l + w] > lanes[l] ? lanes[l + w] : lanes[l];
    const REAL mx = lanes[0];
    if (mx == -(REAL)INFINITY) {
        for (int v = 0; v < nv; ++v)
            ev[v] = (VEC){0};
        return mx;
    }
    for (int v = 0; v < nv; ++v)
        ev[v] = FN(vexp)(ev[v] - mx);
    return mx;
}

/* The guard of weak plans (FN(prepare_guard)): flags |= the lanes of the
 * states of nonzero probability - pred p > 0 and a finite log-emission (fin,
 * from dense_row; lanes past n have p = 0) - whose term a = p * E is below
 * the floor or below floor_alpha * c (E cut to 0 by vexp included).  Vector
 * operations only: the flags of a row are reduced once, at the end of its
 * block. */
static inline __attribute__((always_inline)) void
FN(guard_flags)(int np, const VEC *restrict p, const VEC *restrict a, const IVEC *restrict fin,
                REAL c, REAL floor_alpha, IVEC *restrict flags)
{
    const int nv = np / VL;
    const REAL f = floor_alpha * c, thr = f > HMM_FLOOR ? f : HMM_FLOOR;
    const VEC tv = (VEC){0} + thr;
    IVEC bad = *flags;
    for (int v = 0; v < nv; ++v)
        bad |= (p[v] > 0) & (a[v] < tv) & fin[v];
    *flags = bad;
}
#undef HMM_FLOOR

/* Forward of block blk: pred, scale, and ll of its sequences (float32, and
 * dense plans of both dtypes: a sequence whose step probability leaves the
 * safe range is marked in redo and left to the double reference).  alpha:
 * rows * np scratch.  dense: a constant at each call (two specialisations):
 * the emission row of a step is E's (computed here from logE, and kept for
 * the backward) rather than BT's row of the symbol. */
static inline __attribute__((always_inline)) void
FN(forward_block_body)(const int dense, const int guard, hmm_batch *h, int64_t blk,
                       REAL *restrict alpha)
{
    const int n = h->n, np = h->np, nv = np / VL;
    const int64_t first = h->first[blk], T = h->T;
    const int rows = (int)(h->first[blk + 1] - first);
    const int64_t *seq = h->order + first;
    REAL *pred = (REAL *)h->pred + h->step_off[blk] * np;
    REAL *scale = (REAL *)h->scale + h->step_off[blk];
    REAL *Eb = dense ? (REAL *)h->E + h->step_off[blk] * np : NULL;
    const REAL *logE = h->logE;
    const REAL *Ap = h->Ap, *BTp = h->BTp, *pip = h->pip;
    if (rows <= 0)
        return;
    int len[HMM_BATCH_ROWS];
    double ll[HMM_BATCH_ROWS], prod[HMM_BATCH_ROWS], shift[HMM_BATCH_ROWS];
    unsigned char dead[HMM_BATCH_ROWS];
    IVEC flags[HMM_BATCH_ROWS];                     /* guard: each row's lanes found short */
    IVEC *fin = guard ? (IVEC *)(alpha + (size_t)HMM_BATCH_ROWS * np) : NULL;  /* (scratch row) */
    /* streaming: E's row is made in a scratch row (in L1), then streamed out */
    const int stream_E = dense && h->stream_E;
    REAL *erow = alpha + (size_t)(HMM_BATCH_ROWS + 1) * np;
    const REAL floor_alpha = (REAL)h->floor_alpha;
    for (int r = 0; r < rows; ++r) {
        len[r] = (int)h->lengths[seq[r]];
        ll[r] = 0.0;
        prod[r] = 1.0;
        shift[r] = 0.0;
        dead[r] = 0;
        if (guard)
            flags[r] = (IVEC){0};
    }
    int active = rows;
    size_t off = 0;                                 /* step t's first row in pred, scale */
    for (int t = 0; t < len[0]; off += active, ++t) {
        while (len[active - 1] <= t)
            --active;
        REAL *P = pred + off * np;
        REAL *c_t = scale + off;
        if (t == 0) {
            for (int r = 0; r < active; ++r)
                memcpy(P + (size_t)r * np, pip, sizeof(REAL) * np);
        } else {
            FN(gemm)(active, nv, n, alpha, np, 1, Ap, np, P, np);  /* pred_t = alpha_{t-1} A */
        }
        for (int r = 0; r < active; ++r) {
            VEC *restrict a = (VEC *)(alpha + (size_t)r * np);
            const VEC *restrict p = (const VEC *)(P + (size_t)r * np);
            const VEC *restrict e;
            if (dense) {
                REAL *er = Eb + (off + r) * np;
                const REAL *le = logE + (h->starts[seq[r]] + t) * n;
                /* the rows of a block read as many streams through logE: ask for step t + 8
                 * where a row is at most two cache lines (measured at N=10, float64, one
                 * thread, 10^6 steps: forward 54 -> 48 ms; at N=64 the prefetches cost) */
                if (n * (int)sizeof(REAL) <= 128) {
                    __builtin_prefetch(le + 8 * n);
                    __builtin_prefetch(le + 9 * n - 1);
                }
                const REAL m = FN(dense_row)(n, np, le, stream_E ? erow : er, guard ? fin : NULL);
                if (stream_E) {
                    for (int v = 0; v < nv; ++v)
                        FN(stream)(er + v * VL, ((const VEC *)erow)[v]);
                    er = erow;
                }
                shift[r] += m;
                if (m != m)
                    dead[r] = 1;                    /* NaN: the reference says so (ll NaN) */
                e = (const VEC *)er;
            } else {
                e = (const VEC *)(BTp + (size_t)h->obs[seq[r] * T + t] * np);
            }
            VEC s = {0};
            for (int v = 0; v < nv; ++v) {
                const VEC x = p[v] * e[v];
                a[v] = x;
                s += x;
            }
            REAL c = 0;
            for (int l = 0; l < VL; ++l)
                c += s[l];
#if IS_FLOAT32
            /* float32 would lose it (or has: +inf, NaN): the row goes to double */
            const int lost = !(c >= 0x1p-100f && c <= 0x1p100f);
#else
            /* dense: so small that the step needs the reference's second shift */
            const int lost = dense ? !(c >= 0x1p-900 && c <= 0x1p900) : c == 0.0;
#endif
            if (guard && !lost && !dead[r])         /* weak plans: a state lost to the range? */
                FN(guard_flags)(np, p, a, fin, c, floor_alpha, &flags[r]);
            if (dead[r] || lost) {                  /* the row runs on as zeros */
                dead[r] = 1;
                c_t[r] = 0;                         /* (never read: no backward)*/
                for (int v = 0; v < nv; ++v)
                    a[v] = (VEC){0};
                continue;
            }
            const REAL inv = 1 / c;
            c_t[r] = inv;                           /* what the backward divides by, as 1/c */
            for (int v = 0; v < nv; ++v)
                a[v] *= inv;
            /* As hmm_forward_scaled: log of running products of the c_t. */
            const double cd = c;
            if (cd > 0x1p-400 && cd < 0x1p400) {
                prod[r] *= cd;
                if (prod[r] < 0x1p-500 || prod[r] > 0x1p500) {
                    ll[r] += log(prod[r]);
                    prod[r] = 1.0;
                }
            } else {
                ll[r] += log(cd);
            }
        }
    }
    if (stream_E)
        FN(stream_fence)();
    for (int r = 0; r < rows; ++r) {
        if (guard) {                                /* a state lost: the row goes to double */
            uint64_t words[HMM_VBYTES / 8], any = 0;
            memcpy(words, &flags[r], sizeof words);
            for (int k = 0; k < HMM_VBYTES / 8; ++k)
                any |= words[k];
            dead[r] |= any != 0;
        }
        if (!dead[r])
            h->ll[seq[r]] = ll[r] + log(prod[r]) + shift[r];
        else if (IS_FLOAT32 || dense)
            h->redo[seq[r]] = 1;
        else
            h->ll[seq[r]] = -INFINITY;
    }
}

static void FN(forward_block)(hmm_batch *h, int64_t blk, REAL *restrict alpha)
{
    FN(forward_block_body)(0, 0, h, blk, alpha);
}

static void FN(forward_block_dense)(hmm_batch *h, int64_t blk, REAL *restrict alpha)
{
    FN(forward_block_body)(1, 0, h, blk, alpha);
}

static void FN(forward_block_dense_guard)(hmm_batch *h, int64_t blk, REAL *restrict alpha)
{
    FN(forward_block_body)(1, 1, h, blk, alpha);
}

/* Categorical plans whose states fit one vector (np == VL: N <= 4 in double, N <= 8 in float32 -
 * small models, EM restarts, the model axis) run the same block bodies compiled for that case: the
 * test below tells the compiler np (hence every loop over a row's vectors runs once), nothing else
 * changes - the same operations in the same order, so the same results, bit for bit. */
static void FN(forward_block_1v)(hmm_batch *h, int64_t blk, REAL *restrict alpha)
{
    if (h->np == VL)
        FN(forward_block_body)(0, 0, h, blk, alpha);
}

/* Block blk of the forward, by the plan's kind.  alpha: (HMM_BATCH_ROWS + 1) * np scratch. */
static void FN(forward_one)(hmm_batch *h, int64_t blk, REAL *alpha)
{
    if (h->dense && h->weak)
        FN(forward_block_dense_guard)(h, blk, alpha);
    else if (h->dense)
        FN(forward_block_dense)(h, blk, alpha);
    else if (h->np == VL)
        FN(forward_block_1v)(h, blk, alpha);
    else
        FN(forward_block)(h, blk, alpha);
}

/* Sequence b again in double if the blocked forward left it so (redo); -1 if out of memory. */
static int FN(forward_redo)(hmm_batch *h, int64_t b)
{
    if (!h->redo[b])
        return 0;
    if (forward_double(h, b, &h->ll[b]) != 0)
        return -1;
    if (h->ll[b] == -INFINITY)
        h->redo[b] = 0;                     /* impossible: no gradient */
    return 0;
}

static int FN(forward)(hmm_batch *h, const REAL *A, const REAL *B, const REAL *pi, int nt)
{
    if (FN(prepare)(h, A, B, pi) != 0)
        return -1;
    for (int64_t b = 0; b < h->batch; ++b) {
        h->ll[b] = 0.0;
        h->redo[b] = 0;
    }
#if !IS_FLOAT32
    if (h->use_lanes)       /* a sequence in each lane (hmm_batch_lanes.h; FN(prepare) chose) */
        return lanes_forward(h, nt);
#endif
    const int redo = IS_FLOAT32 || h->dense;
    if (nt <= 1) {          /* the same blocks and sequences in order, on this thread, with no team */
        REAL *alpha = FN(plan_work)(h);
        if (!alpha)
            return -1;
        for (int64_t blk = 0; blk < h->nblocks; ++blk)
            FN(forward_one)(h, blk, alpha);
        int fail = 0;
        if (redo)
            for (int64_t b = 0; b < h->batch; ++b)
                fail |= FN(forward_redo)(h, b) != 0;
        return fail ? -1 : 0;
    }
    int fail = 0;
    #pragma omp parallel num_threads(nt)
    {
        REAL *alpha = alloc64(sizeof(REAL) * (HMM_BATCH_ROWS + 2) * h->np);   /* + the guard's, E's rows */
        if (!alpha) {
            #pragma omp atomic write
            fail = 1;
        }
        /* Any thread may take any block: a block's results do not depend on it. */
        #pragma omp for schedule(dynamic, 1)
        for (int64_t blk = 0; blk < h->nblocks; ++blk)
            if (alpha)
                FN(forward_one)(h, blk, alpha);
        free(alpha);
        if (redo) {
            #pragma omp for schedule(dynamic, 1)
            for (int64_t b = 0; b < h->batch; ++b)
                if (FN(forward_redo)(h, b) != 0) {
                    #pragma omp atomic write
                    fail = 1;
                }
        }
    }
    return fail ? -1 : 0;
}

/* Scratch of one thread for block_backward. */
typedef struct {
    REAL *W, *U;        /* (rows, np): beta_hat_t (the gradient weight folded out), u_t */
    REAL *X, *G;        /* (HMM_WINDOW * rows, np): alpha_hat_{t-1} and g * u_t rows of the window */
    REAL *dA;           /* (np, np): the window's sum X^T G */
} FN(scratch);

/* acc's dA += the window's outer products, through the compute dtype. */
static void FN(flush)(const hmm_batch *h, FN(scratch) *s, int kw, double *aA)
{
    const int n = h->n, np = h->np;
    FN(gemm)(n, np / VL, kw, s->X, 1, np, s->G, np, s->dA, np);
    for (int i = 0; i < n; ++i) {
        double *restrict d = aA + (size_t)i * np;
        const REAL *restrict w = s->dA + (size_t)i * np;
        for (int j = 0; j < n; ++j)
            d[j] += w[j];
    }
}

/* Derivation: that of hmm_backward_scaled (hmm_kernel.c), with beta_hat run
 * unweighted and each sequence's weight g applied to what it adds (so the
 * float32 recursion never holds g's scale), rows of a block side by side:
 *   r_t = beta_hat_t / c_t,  u_t = B[:, o_t] * r_t
 *   dB[:, o_t] += g pred_t * r_t,  dpi += g u_0,  dA += g alpha_hat_{t-1} (x) u_t
 *   beta_hat_{t-1} = A u_t   (for all rows: U . A^T). */
static inline __attribute__((always_inline)) void
FN(block_backward_body)(const int dense, const hmm_batch *h, int64_t blk, const double *gll,
                        double *acc, FN(scratch) *s)
{
    const int n = h->n, m = h->m, np = h->np, nv = np / VL;
    const int64_t first = h->first[blk], T = h->T;
    const int rows = (int)(h->first[blk + 1] - first);
    const int64_t *seq = h->order + first;
    const REAL *pred = (const REAL *)h->pred + h->step_off[blk] * np;
    const REAL *scale = (const REAL *)h->scale + h->step_off[blk];
    const REAL *ATp = h->ATp, *BTp = h->BTp;
    const REAL *Eb = dense ? (const REAL *)h->E + h->step_off[blk] * np : NULL;
    REAL *dlogE = h->dlogE;
    double *aA = acc, *aBT = acc + (size_t)np * np, *api = aBT + (size_t)(m + 1) * np;
    if (rows <= 0)
        return;
    int len[HMM_BATCH_ROWS];
    double g[HMM_BATCH_ROWS];
    unsigned char skip[HMM_BATCH_ROWS];
    for (int r = 0; r < rows; ++r) {
        len[r] = (int)h->lengths[seq[r]];
        g[r] = gll[seq[r]];
        skip[r] = g[r] == 0.0 || h->ll[seq[r]] == -INFINITY || h->redo[seq[r]];
    }
    const int cap = HMM_WINDOW * HMM_BATCH_ROWS;
    const int stream = dense && h->stream_dlogE;
    int kw = 0, active = 0, prev = 0;
    size_t off = h->step_off[blk + 1] - h->step_off[blk];     /* the rows after step t */
    for (int t = len[0] - 1; t >= 0; --t) {
        while (active < rows && len[active] > t)
            ++active;
        for (prev = active; prev < rows && len[prev] > t - 1; ++prev)
            ;                                       /* rows running at step t - 1 */
        off -= active;
        const REAL *P = pred + off * np, *c = scale + off;
        const REAL *Pp = P - (size_t)prev * np, *cp = c - prev;   /* step t - 1, used if t > 0 */
        const REAL *Et = dense ? Eb + off * np : NULL, *Ep = dense ? Et - (size_t)prev * np : NULL;
        if (t > 0 && kw + active > cap) {
            FN(flush)(h, s, kw, aA);
            kw = 0;
        }
        for (int r = 0; r < active; ++r) {
            VEC *restrict u = (VEC *)(s->U + (size_t)r * np);
            VEC *restrict w = (VEC *)(s->W + (size_t)r * np);
            VEC *restrict x = (VEC *)(s->X + (size_t)(kw + r) * np);
            VEC *restrict gu = (VEC *)(s->G + (size_t)(kw + r) * np);
            if (skip[r]) {
                if (dense)          /* no gradient: its rows are 0 (a redo sequence's come later) */
                    memset(dlogE + (h->starts[seq[r]] + t) * n, 0, sizeof(REAL) * n);
                for (int v = 0; v < nv; ++v)
                    u[v] = (VEC){0};
                if (t > 0)
                    for (int v = 0; v < nv; ++v)
                        x[v] = gu[v] = (VEC){0};
                continue;
            }
            if (t == len[r] - 1)                    /* beta_hat_{T-1} = 1 */
                for (int j = 0; j < np; ++j)
                    s->W[(size_t)r * np + j] = j < n;
            const VEC *restrict p = (const VEC *)(P + (size_t)r * np);
            const REAL ic = c[r];                   /* 1 / c_t (stored so by the forward) */
            const double gr = g[r];
            if (dense) {
                /* g * gamma_t = g * pred_t * E_t * r_t, written in the plan's dtype */
                const VEC *restrict e = (const VEC *)(Et + (size_t)r * np);
                REAL *restrict dst = dlogE + (h->starts[seq[r]] + t) * n;
                /* the rows of a block write as many streams through dlogE, backwards,
                 * which the hardware prefetcher does not follow: ask for step t - 8 (a
                 * prefetch outside the array is harmless).  Measured at N=10, float64:
                 * backward 87 -> 56 ms; the same in the forward's reads cost at N=64. */
                if (!stream) {
                    __builtin_prefetch(dst - 8 * n, 1);
                    __builtin_prefetch(dst - 7 * n - 1, 1);
                }
                const REAL gf = (REAL)gr;
                for (int v = 0; v < nv; ++v) {
                    const VEC rw = w[v] * ic;
                    u[v] = e[v] * rw;
                    const VEC gm = p[v] * u[v] * gf;
                    if (stream)                                     /* (whole aligned vectors) */
                        FN(stream)(dst + v * VL, gm);
                    else if ((v + 1) * VL <= n)
                        memcpy(dst + v * VL, &gm, sizeof gm);      /* one unaligned vector store */
                    else
                        for (int l = 0; v * VL + l < n; ++l)
                            dst[v * VL + l] = gm[l];
                }
            } else {
                const int32_t o = h->obs[seq[r] * T + t];
                const VEC *restrict e = (const VEC *)(BTp + (size_t)o * np);
                double *restrict de = aBT + (size_t)o * np;
                for (int v = 0; v < nv; ++v) {
                    const VEC rw = w[v] * ic;
                    const VEC pr = p[v] * rw;
                    u[v] = e[v] * rw;
                    add_to_double(de + v * VL, gr, pr);
                }
            }
            if (t == 0) {
                for (int v = 0; v < nv; ++v)
                    for (int l = 0; l < VL; ++l)
                        api[v * VL + l] += gr * u[v][l];
                continue;
            }
            const VEC *restrict pp = (const VEC *)(Pp + (size_t)r * np);
            if (t > 1) {    /* the backward walks pred, scale (and E) downwards, from memory:
                             * ask for step t-2 (where it is if no row ends there).  Scale and E
                             * too: measured at N=10, float64, one thread, 10^6 steps: backward
                             * 60 -> 48 ms with E's (scale's: within the noise); rows of at most
                             * 128 bytes only, as the forward's logE prefetches */
                const int small = np * (int)sizeof(REAL) <= 128;  /* (as the forward's logE) */
                if (small)
                    __builtin_prefetch(cp - prev + r);
                for (int v = 0; v < np; v += 64 / (int)sizeof(REAL)) {
                    __builtin_prefetch(Pp - (size_t)prev * np + (size_t)r * np + v);
                    if (dense && small)
                        __builtin_prefetch(Ep - (size_t)prev * np + (size_t)r * np + v);
                }
            }
            const VEC *restrict ep = dense ? (const VEC *)(Ep + (size_t)r * np)
                                           : (const VEC *)(BTp + (size_t)h->obs[seq[r] * T + t - 1] * np);
            const REAL icp = cp[r];
            const REAL gf = (REAL)gr;
            for (int v = 0; v < nv; ++v) {
                x[v] = pp[v] * ep[v] * icp;         /* alpha_hat_{t-1}, as the forward made it */
                gu[v] = u[v] * gf;
            }
        }
        if (t > 0) {
            kw += active;
            FN(gemm)(active, nv, n, s->U, np, 1, ATp, np, s->W, np);   /* beta_hat_{t-1} */
        }
    }
    if (kw)
        FN(flush)(h, s, kw, aA);
    if (stream)
        FN(stream_fence)();
}

static void FN(block_backward)(const hmm_batch *h, int64_t blk, const double *gll,
                               double *acc, FN(scratch) *s)
{
    FN(block_backward_body)(0, h, blk, gll, acc, s);
}

static void FN(block_backward_dense)(const hmm_batch *h, int64_t blk, const double *gll,
                                     double *acc, FN(scratch) *s)
{
    FN(block_backward_body)(1, h, blk, gll, acc, s);
}

/* (See FN(forward_block_1v).) */
static void FN(block_backward_1v)(const hmm_batch *h, int64_t blk, const double *gll, double *acc,
                                  FN(scratch) *s)
{
    if (h->np == VL)
        FN(block_backward_body)(0, h, blk, gll, acc, s);
}

/* Group gi of the backward: blocks gi, gi + groups, ... in that order, whichever
 * thread runs it (the result does not depend on the thread count), into its
 * accumulator a; then, where float32 overflowed, the group again in double.
 * -1 if out of memory. */
static int FN(backward_group)(hmm_batch *h, const double *gll, double *a, int64_t gi, int64_t groups,
                              FN(scratch) *s)
{
    const int np = h->np;
    const size_t width = (size_t)np * np + (size_t)(h->m + 1) * np + np;
    int fail = 0;
    for (int64_t blk = gi; blk < h->nblocks; blk += groups) {
        if (h->dense)
            FN(block_backward_dense)(h, blk, gll, a, s);
        else if (h->np == VL)
            FN(block_backward_1v)(h, blk, gll, a, s);
        else
            FN(block_backward)(h, blk, gll, a, s);
    }
    int overflow = 0;
    /* float32 overflowed somewhere, or (weak plans, float64 too) the backward variable
     * of a state the sequence cannot be in did - huge where its future is far likelier,
     * and 0 * inf is NaN: the group in double, by the reference (which caps it) */
    if (IS_FLOAT32 || h->weak) {
        for (size_t k = 0; k < width; ++k)
            overflow |= !isfinite(a[k]);
        if (overflow)
            memset(a, 0, sizeof(double) * width);
    }
    for (int64_t blk = gi; blk < h->nblocks; blk += groups) {
        for (int64_t k = h->first[blk]; k < h->first[blk + 1]; ++k) {
            const int64_t b = h->order[k];
            if ((overflow || h->redo[b]) && gll[b] != 0.0 && h->ll[b] != -INFINITY
                    && backward_double(h, b, gll[b], a) != 0)
                fail = 1;
        }
    }
    return fail ? -1 : 0;
}

/* A thread's scratch for block_backward, laid out in mem (see FN(plan_work)). */
static void FN(scratch_at)(FN(scratch) *s, REAL *mem, int np)
{
    const size_t row = (size_t)np;
    s->W = mem;
    s->U = s->W + row * HMM_BATCH_ROWS;
    s->X = s->U + row * HMM_BATCH_ROWS;
    s->G = s->X + row * HMM_WINDOW * HMM_BATCH_ROWS;
    s->dA = s->G + row * HMM_WINDOW * HMM_BATCH_ROWS;
}

static int FN(backward)(hmm_batch *h, const double *gll, double *acc, int64_t groups, int nt)
{
    const int np = h->np;
    const size_t width = (size_t)np * np + (size_t)(h->m + 1) * np + np;
#if !IS_FLOAT32
    if (h->use_lanes)       /* the forward ran the lane kernel: its layout */
        return lanes_backward(h, gll, acc, groups, nt);
#endif
    if (nt <= 1) {          /* the groups in order, on this thread, with no team */
        REAL *mem = FN(plan_work)(h);
        if (!mem)
            return -1;
        FN(scratch) s;
        FN(scratch_at)(&s, mem, np);
        int fail = 0;
        for (int64_t gi = 0; gi < groups; ++gi)
            fail |= FN(backward_group)(h, gll, acc + gi * width, gi, groups, &s) != 0;
        return fail ? -1 : 0;
    }
    int fail = 0;
    #pragma omp parallel num_threads(nt)
    {
        FN(scratch) s;
        REAL *mem = alloc64(work_bytes(h));
        if (!mem) {
            #pragma omp atomic write
            fail = 1;
        } else {
            FN(scratch_at)(&s, mem, np);
        }
        #pragma omp for schedule(dynamic, 1)
        for (int64_t gi = 0; gi < groups; ++gi)
            if (mem && FN(backward_group)(h, gll, acc + gi * width, gi, groups, &s) != 0) {
                #pragma omp atomic write
                fail = 1;
            }
        free(mem);
    }
    return fail ? -1 : 0;
}

#undef CAT2_
#undef CAT_
#undef FN
#undef VEC
#undef VL
#undef add_to_double
#undef IVEC
