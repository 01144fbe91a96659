/* hmm_mix: see hmm_mix.h. */
#include "hmm_mix.h"
#include "hmm_gauss.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Rows per block: the block's exponentials are one flat loop the compiler vectorises. */
#define MIX_BLOCK 64

/* exp(x) for x <= 0 (also -inf: 0, NaN: NaN), within a few ulp, in plain
 * arithmetic that vectorises: x = k ln2 + r with |r| <= ln2 / 2, exp(r) by its Taylor polynomial of
 * degree 13 (truncation below 1e-17 relative), times 2^k as two exact powers of 2 (so that results
 * down to the subnormals round once).  x > 0 gives +inf: the log-sum-exp only meets positive
 * arguments beside a component of +inf, whose total is +inf whatever they give. */
static inline double mix_exp(double x)
{
    const double shifter = 6755399441055744.0;              /* 1.5 * 2^52: rounds to an integer */
    const double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10;
    double xc = x < -746.0 ? -746.0 : (x > 0.0 ? 0.0 : x);  /* NaN stays NaN */
    double kf = xc * 1.4426950408889634 + shifter;
    int64_t kbits;
    memcpy(&kbits, &kf, sizeof kbits);
    kf -= shifter;
    int64_t k = (int64_t)(int32_t)(uint32_t)kbits;           /* the integer in kf's low bits */
    double r = (xc - kf * ln2_hi) - kf * ln2_lo;
    double p = 1.0 / 6227020800.0;                          /* 1/13! */
    p = p * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    int64_t k1 = k / 2, k2 = k - k1;                        /* both in [-539, 0] */
    uint64_t b1 = (uint64_t)(k1 + 1023) << 52, b2 = (uint64_t)(k2 + 1023) << 52;
    double s1, s2;
    memcpy(&s1, &b1, sizeof s1);
    memcpy(&s2, &b2, sizeof s2);
    double y = p * s1 * s2;
    y = x < -746.0 ? 0.0 : y;
    return x > 0.0 ? INFINITY : y;
}

/* log(x) for finite x >= 1 (the totals of the log-sum-exp are 1 to K, or 0, NaN, inf, which the
 * caller sends to libm's log; other x give a meaningless value here, without a branch), within a
 * few ulp, in plain arithmetic that vectorises: x = 2^e m with m in [sqrt(1/2), sqrt(2)),
 * log m = 2 atanh(s), s = (m - 1) / (m + 1), |s| < 0.172, by its series to s^23 (truncation below
 * 1e-17 relative). */
static inline double mix_log(double x)
{
    uint64_t bits;
    memcpy(&bits, &x, sizeof bits);
    /* e: the exponent of x / sqrt(1/2) rounded down, from the bits (x >= 1 ones, not below) */
    int64_t e = (int64_t)((bits - 0x3fe6a09e667f3bcdULL) >> 52);
    uint64_t mbits = bits - ((uint64_t)e << 52);
    double m;
    memcpy(&m, &mbits, sizeof m);
    double s = (m - 1.0) / (m + 1.0), z = s * s;
    double p = 1.0 / 23.0;
    p = p * z + 1.0 / 21.0;
    p = p * z + 1.0 / 19.0;
    p = p * z + 1.0 / 17.0;
    p = p * z + 1.0 / 15.0;
    p = p * z + 1.0 / 13.0;
    p = p * z + 1.0 / 11.0;
    p = p * z + 1.0 / 9.0;
    p = p * z + 1.0 / 7.0;
    p = p * z + 1.0 / 5.0;
    p = p * z + 1.0 / 3.0;
    double ef = (double)e;
    return ef * 6.93147180369123816490e-01 + (2.0 * s + (2.0 * s * z * p + ef * 1.90821492927058770002e-10));
}

/* One block of b rows: c (b, S) -> o (b, N), r (NULL or (b, S)); e (b * S), top and tot (b * N)
 * scratch.  K a constant where the caller inlines it. */
static inline __attribute__((always_inline)) void mix_block(int64_t b, int N, const int K, const double *c,
                                                           double *o, double *r,
                                                           double *restrict e, double *restrict top,
                                                           double *restrict tot)
{
    const int64_t bn = b * N, bs = bn * K;
    for (int64_t q = 0; q < bn; q++) {
        const double *cq = c + q * K;
        double m = cq[0];
        int nan = m != m;
        for (int k = 1; k < K; k++) {
            double v = cq[k];
            nan |= v != v;
            m = v > m ? v : m;
        }
        m = (nan || m - m != 0.0) ? 0.0 : m;                /* NaN or +-inf: 0 */
        top[q] = m;
        for (int k = 0; k < K; k++)
            e[q * K + k] = cq[k] - m;
    }
    #pragma omp simd
    for (int64_t j = 0; j < bs; j++)
        e[j] = mix_exp(e[j]);
    for (int64_t q = 0; q < bn; q++) {
        double total = 0.0;
        for (int k = 0; k < K; k++)
            total += e[q * K + k];
        tot[q] = total;
    }
    #pragma omp simd
    for (int64_t q = 0; q < bn; q++)
        o[q] = mix_log(tot[q]) + top[q];
    for (int64_t q = 0; q < bn; q++)
        if (!(tot[q] >= 1.0 && tot[q] <= 1.79769313486231570815e308))    /* 0, NaN, inf */
            o[q] = log(tot[q]) + top[q];
    if (r) {
        for (int64_t q = 0; q < bn; q++) {
            double inv = 1.0 / tot[q];
            for (int k = 0; k < K; k++) {
                double v = e[q * K + k] * inv;
                r[q * K + k] = v - v == 0.0 ? v : 0.0;      /* 0 where not finite */
            }
        }
    }
}

static void mix_block_any(int64_t b, int N, int K, const double *c, double *o, double *r, double *e,
                          double *top, double *tot)
{
    switch (K) {
    case 1: mix_block(b, N, 1, c, o, r, e, top, tot); break;
    case 2: mix_block(b, N, 2, c, o, r, e, top, tot); break;
    case 3: mix_block(b, N, 3, c, o, r, e, top, tot); break;
    case 4: mix_block(b, N, 4, c, o, r, e, top, tot); break;
    default: mix_block(b, N, K, c, o, r, e, top, tot); break;
    }
}

int hmm_mix_logsumexp(int64_t n, int N, int K, const double *comp, double *out, double *resp,
                      int num_threads)
{
    const int64_t S = (int64_t)N * K;
    if (n <= 0 || S <= 0)
        return 0;
    num_threads = hmm_pass_threads(num_threads, n * S);
    const int64_t blocks = (n + MIX_BLOCK - 1) / MIX_BLOCK;
    int failed = 0;
    #pragma omp parallel num_threads(num_threads) if (num_threads > 1)
    {
        double *e = malloc(sizeof(double) * MIX_BLOCK * (size_t)(S + 2 * N));
        if (!e) {
            #pragma omp atomic write
            failed = 1;
        }
        #pragma omp barrier
        int ok;
        #pragma omp atomic read
        ok = failed;
        ok = !ok;
        #pragma omp for schedule(static)
        for (int64_t blk = 0; blk < blocks; blk++) {
            if (!ok)
                continue;
            int64_t t0 = blk * MIX_BLOCK, b = n - t0 < MIX_BLOCK ? n - t0 : MIX_BLOCK;
            mix_block_any(b, N, K, comp + t0 * S, out + t0 * N, resp ? resp + t0 * S : NULL, e,
                          e + MIX_BLOCK * S, e + MIX_BLOCK * (S + N));
        }
        free(e);
    }
    return failed ? -1 : 0;
}

int hmm_mix_loglik_diag(int64_t n, int N, int K, int D, const double *X, const double *c,
                        const double *a, const double *b, const double *cst, double *out, double *resp,
                        int num_threads)
{
    const int64_t S = (int64_t)N * K;
    if (n <= 0 || S <= 0)
        return 0;
    num_threads = hmm_pass_threads(num_threads, n * S * (int64_t)D);
    const int64_t blocks = (n + MIX_BLOCK - 1) / MIX_BLOCK;
    int failed = 0;
    #pragma omp parallel num_threads(num_threads) if (num_threads > 1)
    {
        double *e = malloc(sizeof(double) * (MIX_BLOCK * (size_t)(2 * S + 2 * N) + (size_t)D));
        if (!e) {
            #pragma omp atomic write
            failed = 1;
        }
        #pragma omp barrier
        int ok;
        #pragma omp atomic read
        ok = failed;
        ok = !ok;
        #pragma omp for schedule(static)
        for (int64_t blk = 0; blk < blocks; blk++) {
            if (!ok)
                continue;
            int64_t t0 = blk * MIX_BLOCK, nb = n - t0 < MIX_BLOCK ? n - t0 : MIX_BLOCK;
            /* scratch: exp (B S), top (B N), totals (B N), comp without resp (B S), y (D) */
            double *comp = resp ? resp + t0 * S : e + MIX_BLOCK * (S + 2 * N);
            double *y = e + MIX_BLOCK * (2 * S + 2 * N);
            for (int64_t r = 0; r < nb; r++) {
                const double *x = X + (t0 + r) * D;
                double *cr = comp + r * S;
                for (int d = 0; d < D; d++)
                    y[d] = x[d] - c[d];
                for (int64_t s = 0; s < S; s++)
                    cr[s] = cst[s];
                for (int d = 0; d < D; d++) {
                    const double *ad = a + d * S, *bd = b + d * S, yd = y[d];
                    for (int64_t s = 0; s < S; s++)
                        cr[s] += (ad[s] * yd + bd[s]) * yd;
                }
            }
            mix_block_any(nb, N, K, comp, out + t0 * N, resp ? resp + t0 * S : NULL, e,
                          e + MIX_BLOCK * S, e + MIX_BLOCK * (S + N));
        }
        free(e);
    }
    return failed ? -1 : 0;
}

/* Rows per chunk of the E-step sums: each chunk's partial sums are added in chunk order. */
#define MIX_CHUNK 2048

int hmm_mix_stats_diag(int64_t n, int N, int K, int D, const double *X, const double *c,
                       const double *q, const double *gamma, double *post, double *s0, double *s1,
                       double *s2, int num_threads)
{
    const int64_t S = (int64_t)N * K;
    if (n <= 0 || S <= 0)
        return 0;
    num_threads = hmm_pass_threads(num_threads, n * S * (int64_t)D);
    const int64_t chunks = (n + MIX_CHUNK - 1) / MIX_CHUNK;
    /* per chunk: post (N), then per component s0 (1), s1 (D), s2 (D) */
    const int64_t width = N + S * (1 + 2 * (int64_t)D);
    double *part = calloc((size_t)(chunks * width), sizeof(double));
    if (!part)
        return -1;
    #pragma omp parallel for num_threads(num_threads) schedule(static) if (num_threads > 1)
    for (int64_t ch = 0; ch < chunks; ch++) {
        double *pp = part + ch * width, *acc = pp + N;
        const int Z = 1 + 2 * D;
        double z[Z];                                            /* 1, y, y^2 */
        z[0] = 1.0;
        const int64_t t1 = (ch + 1) * MIX_CHUNK < n ? (ch + 1) * MIX_CHUNK : n;
        for (int64_t t = ch * MIX_CHUNK; t < t1; t++) {
            const double *x = X + t * D, *g = gamma + t * N, *qt = q + t * S;
            if (isnan(x[0])) {
                int all = 1;
                for (int d = 1; d < D; d++)
                    all &= isnan(x[d]);
                if (all)
                    continue;                                   /* a missing row */
            }
            for (int d = 0; d < D; d++) {
                double y = x[d] - c[d];
                z[1 + d] = y;
                z[1 + D + d] = y * y;
            }
            for (int i = 0; i < N; i++) {
                pp[i] += g[i];
                for (int k = 0; k < K; k++) {
                    const int64_t s = (int64_t)i * K + k;
                    const double w = g[i] * qt[s];
                    double *a = acc + s * Z;
                    for (int j = 0; j < Z; j++)
                        a[j] += w * z[j];
                }
            }
        }
    }
    for (int64_t ch = 0; ch < chunks; ch++) {
        const double *pp = part + ch * width, *acc = pp + N;
        for (int i = 0; i < N; i++)
            post[i] += pp[i];
        for (int64_t s = 0; s < S; s++) {
            const double *a = acc + s * (1 + 2 * (int64_t)D);
            s0[s] += a[0];
            for (int d = 0; d < D; d++) {
                s1[s * D + d] += a[1 + d];
                s2[s * D + d] += a[1 + D + d];
            }
        }
    }
    free(part);
    return 0;
}
