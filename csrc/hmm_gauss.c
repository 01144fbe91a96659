#include "hmm_gauss.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Vectors of VL doubles in GCC's vector extensions: the widest the build's flags allow (512-bit
 * AVX-512, 256-bit AVX, else SSE2's 128), so that one source serves -march=native and portable
 * builds alike; GCC compiles vector-by-scalar products to FMAs with broadcast operands. */
#if defined(__AVX512F__)
#define VL 8
#elif defined(__AVX__)
#define VL 4
#else
#define VL 2
#endif
typedef double vd __attribute__((vector_size(VL * sizeof(double))));

/* Register blocking, sized to the register file (32 vector registers with AVX-512, else 16):
 * QG states of the quadratic kernel and SG of the sums each keep 2 accumulators; FG states of
 * the full kernel keep 4 (their z and their sum of squares). */
#define QG (VL == 8 ? 12 : 5)
#define SG (VL == 8 ? 12 : 6)
#define FG (VL == 8 ? 4 : 2)

/* Rows per block of the log-densities: two vectors, one row per lane. */
#define RB (2 * VL)

#define ALIGN 64
#define ROUND_UP(x, m) (((x) + (m) - 1) / (m) * (m))

static void *scratch(size_t bytes)
{
    return aligned_alloc(ALIGN, ROUND_UP(bytes ? bytes : 1, ALIGN));
}

/* Asks for the cache lines of [p, p + bytes) ahead of their use. */
static inline void prefetch(const void *p, size_t bytes)
{
    const char *b = (const char *)p;
    for (size_t off = 0; off < bytes; off += 64)
        __builtin_prefetch(b + off);
    __builtin_prefetch(b + bytes - 1);         /* (the last line, where p is not line-aligned) */
}

static int is_nan(double v)
{
    return v != v;
}

/* 1 if the D values at x are all NaN. */
static int all_nan(int D, const double *x)
{
    for (int d = 0; d < D; ++d)
        if (!is_nan(x[d]))
            return 0;
    return 1;
}

/* 1 if the D values at x are all finite. */
static int all_finite(int D, const double *x)
{
    for (int d = 0; d < D; ++d)
        if (!isfinite(x[d]))
            return 0;
    return 1;
}

/* Groups of at most gmax states, of sizes as even as they can be (N=13, gmax=12: 7 + 6). */
static int group_size(int N, int gmax)
{
    const int groups = (N + gmax - 1) / gmax;
    return (N + groups - 1) / groups;
}

/* ---- log-densities ------------------------------------------------------------------------- */

/* The rows are vectorised, one per lane: a block of RB rows is transposed into yT (D, 2
 * vectors), y = x - c, and each state's sum runs over d with its parameters as broadcast
 * scalars.  (Vectorising over states instead fills 10 of 16 lanes at N=10; over d, each
 * (row, state) sum ends in a horizontal reduction.)  The transposition costs D values a row
 * against 2 N D / VL multiply-adds, so with AVX-512 it is done 8 x 8 in registers. */
#if VL == 8
#include <immintrin.h>

/* yT[d][half] for the 8 rows at x (row stride D; rows past `rows` repeat the last one). */
static void load_half(int D, int rows, const double *x, const double *c, double *yT, int half)
{
    const double *r[8];
    for (int k = 0; k < 8; ++k)
        r[k] = x + (size_t)(k < rows ? k : rows - 1) * D;
    for (int d0 = 0; d0 < D; d0 += 8) {
        const int w = D - d0 < 8 ? D - d0 : 8;
        const __mmask8 m = (__mmask8)((1u << w) - 1);
        const __m512d cv = _mm512_maskz_loadu_pd(m, c + d0);
        __m512d v[8], t[8], u[8];
        for (int k = 0; k < 8; ++k)
            v[k] = _mm512_sub_pd(_mm512_maskz_loadu_pd(m, r[k] + d0), cv);
        for (int k = 0; k < 8; k += 2) {
            t[k] = _mm512_unpacklo_pd(v[k], v[k + 1]);          /* (r_k, r_k+1) at columns 0 2 4 6 */
            t[k + 1] = _mm512_unpackhi_pd(v[k], v[k + 1]);      /* ... at columns 1 3 5 7 */
        }
        for (int k = 0; k < 8; k += 4) {
            u[k] = _mm512_shuffle_f64x2(t[k], t[k + 2], 0x88);         /* columns 0 4 */
            u[k + 1] = _mm512_shuffle_f64x2(t[k + 1], t[k + 3], 0x88); /* columns 1 5 */
            u[k + 2] = _mm512_shuffle_f64x2(t[k], t[k + 2], 0xdd);     /* columns 2 6 */
            u[k + 3] = _mm512_shuffle_f64x2(t[k + 1], t[k + 3], 0xdd); /* columns 3 7 */
        }
        for (int k = 0; k < 4; ++k) {
            /* column k and column k + 4 of the 8 rows */
            const __m512d lo = _mm512_shuffle_f64x2(u[k], u[k + 4], 0x88);
            const __m512d hi = _mm512_shuffle_f64x2(u[k], u[k + 4], 0xdd);
            if (k < w)
                _mm512_store_pd(yT + (size_t)(d0 + k) * RB + 8 * half, lo);
            if (k + 4 < w)
                _mm512_store_pd(yT + (size_t)(d0 + k + 4) * RB + 8 * half, hi);
        }
    }
}

static void load_block(int D, int rows, const double *X, const double *c, vd *yT)
{
    load_half(D, rows, X, c, (double *)yT, 0);
    if (rows > 8)
        load_half(D, rows - 8, X + (size_t)8 * D, c, (double *)yT, 1);
    else                        /* the second half repeats the last row */
        load_half(D, 1, X + (size_t)(rows - 1) * D, c, (double *)yT, 1);
}
#else
static void load_block(int D, int rows, const double *X, const double *c, vd *yT)
{
    double *y = (double *)yT;
    for (int r = 0; r < RB; ++r) {
        /* a short block repeats its last row (its results are not stored) */
        const double *x = X + (size_t)(r < rows ? r : rows - 1) * D;
        for (int d = 0; d < D; ++d)
            y[(size_t)d * RB + r] = x[d] - c[d];
    }
}
#endif

/* Step d of D of a loop over a block: asks for the d-th RB * 8 bytes of the next block's rows
 * (next: NULL for none), so that a block's arithmetic overlaps the next block's loads.  (Asked
 * all at once, or left to the hardware, they were waited for: 51-58 -> 38-40 ms a core for the
 * log-densities at 10^6 x 30, N=10.) */
static inline __attribute__((always_inline)) void prefetch_step(const char *next, int d)
{
    if (next)
        for (int off = 0; off < RB * (int)sizeof(double); off += 64)
            __builtin_prefetch(next + (size_t)d * RB * sizeof(double) + off);
}

/* res[2 s + v] = cst[s] + sum_d (a[s, d] y_d^2 + b[s, d] y_d) for the G states (rows of a, b of
 * D) and the two row vectors v of yT.  G is a constant where this is inlined: the 2 G
 * accumulators stay in registers, and their 2 G independent chains of multiply-adds hide the
 * latency of each. */
static inline __attribute__((always_inline)) void quad_group(const int G, int D, const vd *restrict yT,
                                                             const double *restrict a,
                                                             const double *restrict b,
                                                             const double *restrict cst, vd *restrict res,
                                                             const char *next)
{
    vd acc[QG][2];
    for (int s = 0; s < G; ++s)
        acc[s][0] = acc[s][1] = (vd){0} + cst[s];
    for (int d = 0; d < D; ++d) {
        const vd y0 = yT[2 * d], y1 = yT[2 * d + 1];
        const vd q0 = y0 * y0, q1 = y1 * y1;
        prefetch_step(next, d);
        for (int s = 0; s < G; ++s) {
            const double as = a[(size_t)s * D + d], bs = b[(size_t)s * D + d];
            acc[s][0] += q0 * as;
            acc[s][0] += y0 * bs;
            acc[s][1] += q1 * as;
            acc[s][1] += y1 * bs;
        }
    }
    for (int s = 0; s < G; ++s) {
        res[2 * s] = acc[s][0];
        res[2 * s + 1] = acc[s][1];
    }
}

/* res[2 s + v] = cst[s] - 1/2 sum_j (sum_{k<=j} P[s, j, k] y_k - b[s, j])^2 (P[s] at P + s D D). */
static inline __attribute__((always_inline)) void full_group(const int G, int D, const vd *restrict yT,
                                                             const double *restrict P,
                                                             const double *restrict b,
                                                             const double *restrict cst, vd *restrict res,
                                                             const char *next)
{
    vd q[FG][2];
    for (int s = 0; s < G; ++s)
        q[s][0] = q[s][1] = (vd){0};
    for (int j = 0; j < D; ++j) {
        vd z[FG][2];
        prefetch_step(next, j);
        for (int s = 0; s < G; ++s)
            z[s][0] = z[s][1] = (vd){0} - b[(size_t)s * D + j];
        for (int k = 0; k <= j; ++k) {
            const vd y0 = yT[2 * k], y1 = yT[2 * k + 1];
            for (int s = 0; s < G; ++s) {
                const double p = P[((size_t)s * D + j) * D + k];
                z[s][0] += y0 * p;
                z[s][1] += y1 * p;
            }
        }
        for (int s = 0; s < G; ++s) {
            q[s][0] += z[s][0] * z[s][0];
            q[s][1] += z[s][1] * z[s][1];
        }
    }
    for (int s = 0; s < G; ++s) {
        res[2 * s] = (vd){0} + cst[s] - 0.5 * q[s][0];
        res[2 * s + 1] = (vd){0} + cst[s] - 0.5 * q[s][1];
    }
}

#define CASE_Q(g) case g: quad_group(g, D, yT, a, b, cst, res, next); break;
static void quad_states(int G, int D, const vd *yT, const double *a, const double *b, const double *cst,
                        vd *res, const char *next)
{
    switch (G) {
    CASE_Q(1) CASE_Q(2) CASE_Q(3) CASE_Q(4) CASE_Q(5)
#if QG > 5
    CASE_Q(6) CASE_Q(7) CASE_Q(8) CASE_Q(9) CASE_Q(10) CASE_Q(11) CASE_Q(12)
#endif
    default: break;
    }
}

#define CASE_F(g) case g: full_group(g, D, yT, P, b, cst, res, next); break;
static void full_states(int G, int D, const vd *yT, const double *P, const double *b, const double *cst,
                        vd *res, const char *next)
{
    switch (G) {
    CASE_F(1) CASE_F(2)
#if FG > 2
    CASE_F(3) CASE_F(4)
#endif
    default: break;
    }
}

/* zT = P yT for a lower triangular P (D, D), both row vectors. */
static void transform_block(int D, const double *P, const vd *restrict yT, vd *restrict zT)
{
    for (int j = 0; j < D; ++j) {
        vd z0 = (vd){0}, z1 = (vd){0};
        for (int k = 0; k <= j; ++k) {
            const double p = P[(size_t)j * D + k];
            z0 += yT[2 * k] * p;
            z1 += yT[2 * k + 1] * p;
        }
        zT[2 * j] = z0;
        zT[2 * j + 1] = z1;
    }
}

int64_t hmm_gauss_loglik(int kind, int64_t n, int D, int N, const double *X, const double *c,
                         const double *P, const double *a, const double *b, const double *cst,
                         double *out, int64_t *n_missing, int num_threads)
{
    const int64_t nblocks = (n + RB - 1) / RB;
    const int G = group_size(N, kind == HMM_GAUSS_FULL ? FG : QG);
    int64_t bad = INT64_MAX, missing = 0;
    int oom = 0;
    num_threads = hmm_pass_threads(num_threads, n * N * (int64_t)(kind == HMM_GAUSS_FULL ? D * D : D));
    #pragma omp parallel num_threads(num_threads)
    {
        vd *yT = scratch(sizeof(vd) * 2 * (size_t)D);
        vd *zT = kind == HMM_GAUSS_TIED ? scratch(sizeof(vd) * 2 * (size_t)D) : NULL;
        vd *res = scratch(sizeof(vd) * 2 * (size_t)G);
        const int ok = yT && res && (zT || kind != HMM_GAUSS_TIED);
        int64_t first_bad = INT64_MAX, my_missing = 0;
        if (!ok) {
            #pragma omp atomic write
            oom = 1;
        }
        /* (dynamic: on a machine shared with other work, a static split waits on the slowest
         * thread; rows are independent, so the result does not depend on the schedule) */
        #pragma omp for schedule(dynamic, 64)
        for (int64_t blk = 0; blk < nblocks; ++blk) {
            if (!ok)
                continue;
            const int64_t t0 = blk * RB;
            const int rows = n - t0 < RB ? (int)(n - t0) : RB;
            load_block(D, rows, X + t0 * D, c, yT);
            const vd *src = yT;
            if (kind == HMM_GAUSS_TIED) {
                transform_block(D, P, yT, zT);
                src = zT;
            }
            for (int s0 = 0; s0 < N; s0 += G) {
                const int g = N - s0 < G ? N - s0 : G;
                /* the first group asks for the next block's rows as it goes (see prefetch_step) */
                const char *next = s0 == 0 && t0 + 2 * RB <= n ? (const char *)(X + (t0 + RB) * D) : NULL;
                if (kind == HMM_GAUSS_FULL)
                    full_states(g, D, yT, P + (size_t)s0 * D * D, b + (size_t)s0 * D, cst + s0, res, next);
                else
                    quad_states(g, D, src, a + (size_t)s0 * D, b + (size_t)s0 * D, cst + s0, res, next);
                const double *rd = (const double *)res;
                for (int r = 0; r < rows; ++r) {
                    double *o = out + (t0 + r) * N + s0;
                    for (int s = 0; s < g; ++s)
                        o[s] = rd[(size_t)s * RB + r];
                }
            }
            /* A non-finite value of X makes every state's result non-finite (each sum has a
             * nonzero weight on every feature): column 0 finds such rows, which are then read. */
            for (int r = 0; r < rows; ++r) {
                double *o = out + (t0 + r) * N;
                if (isfinite(o[0]))
                    continue;
                const double *x = X + (t0 + r) * D;
                if (is_nan(x[0]) && all_nan(D, x)) {
                    memset(o, 0, sizeof(double) * (size_t)N);          /* a missing observation */
                    ++my_missing;
                } else if (!all_finite(D, x) && t0 + r < first_bad)
                    first_bad = t0 + r;
            }
        }
        #pragma omp critical(hmm_gauss_bad)
        {
            if (first_bad < bad)
                bad = first_bad;
            missing += my_missing;
        }
        free(yT);
        free(zT);
        free(res);
    }
    if (oom)
        return HMM_GAUSS_ENOMEM;
    if (n_missing)
        *n_missing = missing;
    return bad == INT64_MAX ? -1 : bad;
}

/* ---- E-step sums --------------------------------------------------------------------------- */

/* The sums are products W^T F, W (rows, states) the weights (gamma) and F (rows, K) each row's
 * features: [1, x, x^2] (diag), [1, x, x x^T's lower triangle row by row] (full); tied takes
 * [1, x] with gamma and the triangle with w_t = sum_i gamma[t, i].  Rows are read in blocks
 * whose F is built in a scratch buffer; the sums are vectorised over F's columns, the weights
 * broadcast. */

/* Rows to ask for during a block's sums: x's rows of D values and gamma's of N from row 0 on
 * (x NULL: none).  (Asked for while F was built, the loads were still waited for: 58-63 -> 53-56
 * ms a core for the sums at 10^6 x 30, N=10; during the sums, -> 43 ms.) */
struct ahead {
    const double *x, *g;
    int D, N;
};

/* S[s, 0 : NC VL] (rows s of ldS) += sum_{t<B} W[t, s] F[t, 0 : NC VL] for the G states. */
static inline __attribute__((always_inline)) void wsum_group(const int G, const int NC, int B,
                                                             const double *restrict F, int ldF,
                                                             const double *restrict W, int ldW,
                                                             double *restrict S, int ldS, struct ahead next)
{
    vd acc[SG][2];
    for (int s = 0; s < G; ++s)
        acc[s][0] = acc[s][1] = (vd){0};
    for (int t = 0; t < B; ++t) {
        if (next.x) {
            prefetch(next.x + (size_t)t * next.D, sizeof(double) * (size_t)next.D);
            prefetch(next.g + (size_t)t * next.N, sizeof(double) * (size_t)next.N);
        }
        const vd *f = (const vd *)(F + (size_t)t * ldF);
        const vd f0 = f[0], f1 = NC == 2 ? f[1] : f[0];
        const double *w = W + (size_t)t * ldW;
        for (int s = 0; s < G; ++s) {
            acc[s][0] += f0 * w[s];
            if (NC == 2)
                acc[s][1] += f1 * w[s];
        }
    }
    for (int s = 0; s < G; ++s) {
        vd *o = (vd *)(S + (size_t)s * ldS);
        o[0] += acc[s][0];
        if (NC == 2)
            o[1] += acc[s][1];
    }
}

#define CASE_W(g) case g: \
    if (NC == 2) wsum_group(g, 2, B, F, ldF, W, ldW, S, ldS, next); \
    else wsum_group(g, 1, B, F, ldF, W, ldW, S, ldS, next); \
    break;
static void wsum_states(int G, int NC, int B, const double *F, int ldF, const double *W, int ldW, double *S,
                        int ldS, struct ahead next)
{
    switch (G) {
    CASE_W(1) CASE_W(2) CASE_W(3) CASE_W(4) CASE_W(5) CASE_W(6)
#if SG > 6
    CASE_W(7) CASE_W(8) CASE_W(9) CASE_W(10) CASE_W(11) CASE_W(12)
#endif
    default: break;
    }
}

/* S (Nw, ldS) += W^T F over the B rows, for F's first L columns (L a multiple of VL); the first
 * pass asks for the rows of next. */
static void wsum(int Nw, int L, int B, const double *F, int ldF, const double *W, int ldW, double *S, int ldS,
                 struct ahead next)
{
    const int G = group_size(Nw, SG);
    const struct ahead none = {NULL, NULL, 0, 0};
    for (int k0 = 0; k0 < L; k0 += 2 * VL) {
        const int NC = L - k0 >= 2 * VL ? 2 : 1;
        for (int s0 = 0; s0 < Nw; s0 += G)
            wsum_states(Nw - s0 < G ? Nw - s0 : G, NC, B, F + k0, ldF, W + s0, ldW, S + (size_t)s0 * ldS + k0, ldS,
                        k0 == 0 && s0 == 0 ? next : none);
    }
}

typedef double vdu __attribute__((vector_size(VL * sizeof(double)), aligned(sizeof(double))));

/* f[d] = x[d] and, if sq, sq[d] = x[d]^2.  (Written out, and kept from GCC's loop distribution:
 * it would call memcpy for the copy, a library call a row that cost a third of the sums.) */
__attribute__((optimize("no-tree-loop-distribute-patterns")))
static void copy_row(int D, const double *restrict x, double *restrict f, double *restrict sq)
{
    int d = 0;
    for (; d + VL <= D; d += VL) {
        const vd v = *(const vdu *)(x + d);
        *(vdu *)(f + d) = v;
        if (sq)
            *(vdu *)(sq + d) = v * v;
    }
    for (; d < D; ++d) {
        f[d] = x[d];
        if (sq)
            sq[d] = x[d] * x[d];
    }
}

/* x x^T's lower triangle, row by row: v[j (j + 1) / 2 + k] = x_j x_k for k <= j, a vector at a
 * time.  Each row is written in whole vectors: past its end into the next row's place, which is
 * written next, and past the last row by up to VL - 1 values (F's padding, the next F row, which
 * is built after this one, or the slack at the end of F).  The vectors read up to VL - 1 values
 * past x's D (the caller makes sure they exist); what they read lands only in those places. */
static void outer_lower(int D, const double *x, double *v)
{
    for (int j = 0; j < D; ++j) {
        const double xj = x[j];
        for (int k = 0; k <= j; k += VL)
            *(vdu *)(v + k) = *(const vdu *)(x + k) * xj;
        v += j + 1;
    }
}

int64_t hmm_gauss_stats(int kind, int64_t n, int D, int N, const double *X, const double *gamma,
                        double *post, double *obs, double *second, int num_threads)
{
    const int tri = D * (D + 1) / 2;
    /* F's row: [1, x, ...] of L1 columns (summed with gamma), then for tied the triangle (L2,
     * summed with w); the sums of a chunk: S1 (N, L1), then S2 (1, L2) */
    const int K1 = 1 + D + (kind == HMM_GAUSS_DIAG ? D : kind == HMM_GAUSS_FULL ? tri : 0);
    const int L1 = ROUND_UP(K1, VL), L2 = kind == HMM_GAUSS_TIED ? ROUND_UP(tri, VL) : 0;
    const int ldF = L1 + L2;
    const size_t width = (size_t)N * L1 + L2;
    /* Rows per block: F's block within about 64 KB (L2-resident), a multiple of 8. */
    int SB = (int)(8192 / ldF) / 8 * 8;
    SB = SB < 8 ? 8 : SB > 128 ? 128 : SB;
    /* Chunks: at most 256 (fewer where a chunk's sums are large), of whole blocks, at least 4096
     * rows - all fixed by n and the shapes, never by the thread count. */
    int64_t max_chunks = (int64_t)((1 << 24) / (width * sizeof(double)));
    max_chunks = max_chunks < 8 ? 8 : max_chunks > 256 ? 256 : max_chunks;
    int64_t chunk = (n + max_chunks - 1) / max_chunks;
    chunk = ROUND_UP(chunk < 4096 ? 4096 : chunk, SB);
    const int64_t nchunks = (n + chunk - 1) / chunk;

    double *part = scratch(sizeof(double) * width * (size_t)(nchunks ? nchunks : 1));
    if (!part)
        return HMM_GAUSS_ENOMEM;
    int64_t bad = INT64_MAX;
    int oom = 0;
    num_threads = hmm_pass_threads(num_threads, n * (int64_t)(N * L1 + L2));
    #pragma omp parallel num_threads(num_threads)
    {
        double *F = scratch(sizeof(double) * ((size_t)SB * ldF + VL));    /* (+ outer_lower's slack) */
        double *w = kind == HMM_GAUSS_TIED ? scratch(sizeof(double) * (size_t)SB) : NULL;
        const int ok = F && (w || kind != HMM_GAUSS_TIED);
        int64_t first_bad = INT64_MAX;
        if (!ok) {
            #pragma omp atomic write
            oom = 1;
        } else {
            memset(F, 0, sizeof(double) * ((size_t)SB * ldF + VL));    /* (padding: 0 or unread sums) */
        }
        #pragma omp for schedule(dynamic, 1)
        for (int64_t k = 0; k < nchunks; ++k) {
            double *S = part + (size_t)k * width;
            memset(S, 0, sizeof(double) * width);
            if (!ok)
                continue;
            const int64_t end = (k + 1) * chunk < n ? (k + 1) * chunk : n;
            for (int64_t t0 = k * chunk; t0 < end; t0 += SB) {
                const int B = end - t0 < SB ? (int)(end - t0) : SB;
                for (int r = 0; r < B; ++r) {
                    const double *x = X + (t0 + r) * D;
                    double *f = F + (size_t)r * ldF;
                    if (is_nan(x[0])) {
                        /* a missing observation: a row of zeros adds nothing */
                        memset(f, 0, sizeof(double) * (size_t)ldF);
                        if (!all_nan(D, x) && t0 + r < first_bad)
                            first_bad = t0 + r;
                        continue;
                    }
                    f[0] = 1.0;
                    copy_row(D, x, f + 1, kind == HMM_GAUSS_DIAG ? f + 1 + D : NULL);
                    if (kind != HMM_GAUSS_DIAG) {
                        /* the row of X where outer_lower's vectors stay inside X, else F's copy
                         * (its loads then wait on the copy's stores) */
                        const int inside = (t0 + r) * D + ROUND_UP(D, VL) <= n * D;
                        outer_lower(D, inside ? x : f + 1, kind == HMM_GAUSS_FULL ? f + 1 + D : f + L1);
                    }
                }
                /* the first pass over the block asks for the next block's rows as it goes */
                const struct ahead next = {t0 + 2 * SB <= end ? X + (t0 + SB) * D : NULL, gamma + (t0 + SB) * N, D, N};
                wsum(N, L1, B, F, ldF, gamma + t0 * N, N, S, L1, next);
                if (kind == HMM_GAUSS_TIED) {
                    for (int r = 0; r < B; ++r) {
                        const double *g = gamma + (t0 + r) * N;
                        double sum = 0.0;
                        for (int i = 0; i < N; ++i)
                            sum += g[i];
                        w[r] = sum;
                    }
                    wsum(1, L2, B, F + L1, ldF, w, 1, S + (size_t)N * L1, L2, (struct ahead){NULL, NULL, 0, 0});
                }
            }
        }
        #pragma omp critical(hmm_gauss_bad)
        if (first_bad < bad)
            bad = first_bad;
        free(F);
        free(w);
    }
    if (oom || bad != INT64_MAX) {
        free(part);
        return oom ? HMM_GAUSS_ENOMEM : bad;
    }
    /* the chunks in order (the same sums whatever the thread count), into part's first chunk */
    for (int64_t k = 1; k < nchunks; ++k) {
        const double *S = part + (size_t)k * width;
        for (size_t e = 0; e < width; ++e)
            part[e] += S[e];
    }
    if (nchunks) {
        const double *S2 = part + (size_t)N * L1;
        for (int i = 0; i < N; ++i) {
            const double *S1 = part + (size_t)i * L1;
            post[i] += S1[0];
            for (int d = 0; d < D; ++d)
                obs[(size_t)i * D + d] += S1[1 + d];
            if (kind == HMM_GAUSS_DIAG)
                for (int d = 0; d < D; ++d)
                    second[(size_t)i * D + d] += S1[1 + D + d];
        }
        if (kind != HMM_GAUSS_DIAG) {
            const int mats = kind == HMM_GAUSS_FULL ? N : 1;
            for (int i = 0; i < mats; ++i) {
                const double *v = kind == HMM_GAUSS_FULL ? part + (size_t)i * L1 + 1 + D : S2;
                double *m = second + (size_t)i * D * D;
                for (int j = 0; j < D; ++j)
                    for (int l = 0; l <= j; ++l) {
                        const double e = *v++;
                        m[(size_t)j * D + l] += e;
                        if (l != j)
                            m[(size_t)l * D + j] += e;
                    }
            }
        }
    }
    free(part);
    return -1;
}

/* ---- data checks --------------------------------------------------------------------------- */

int64_t hmm_gauss_scan(int64_t n, int D, const double *X, int check_all, int64_t *n_missing,
                       uint8_t *missing, int num_threads)
{
    /* blocks of rows: a block of finite values sums (x - x) to 0, anything else to NaN, so a
     * block is read as one vectorisable loop and its rows one by one only when it is not 0 */
    const int64_t block = 256, nblocks = (n + block - 1) / block;
    int64_t bad = INT64_MAX, count = 0;
    num_threads = hmm_pass_threads(num_threads, n * (int64_t)D);
    #pragma omp parallel num_threads(num_threads) reduction(+ : count)
    {
        int64_t first_bad = INT64_MAX;
        #pragma omp for schedule(dynamic, 16)
        for (int64_t k = 0; k < nblocks; ++k) {
            const int64_t t0 = k * block, t1 = t0 + block < n ? t0 + block : n;
            if (check_all) {
                const double *x = X + t0 * D;
                const int64_t m = (t1 - t0) * D;
                double s = 0.0;
                #pragma omp simd reduction(+ : s)
                for (int64_t e = 0; e < m; ++e)
                    s += x[e] - x[e];
                if (s == 0.0) {            /* no NaN either: no missing row */
                    if (missing)
                        memset(missing + t0, 0, (size_t)(t1 - t0));
                    continue;
                }
            }
            for (int64_t t = t0; t < t1; ++t) {
                const double *x = X + t * D;
                int gone = 0;
                if (is_nan(x[0])) {
                    gone = all_nan(D, x);
                    if (!gone && t < first_bad)
                        first_bad = t;
                } else if (check_all && !all_finite(D, x) && t < first_bad) {
                    first_bad = t;
                }
                count += gone;
                if (missing)
                    missing[t] = (uint8_t)gone;
            }
        }
        #pragma omp critical(hmm_gauss_bad)
        if (first_bad < bad)
            bad = first_bad;
    }
    if (n_missing)
        *n_missing = count;
    return bad == INT64_MAX ? -1 : bad;
}
