#include "hmm_gauss.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* States padded to whole vectors of 8 doubles: the inner loops run over states, a
 * feature at a time (N is small, D moderate), with every state's parameters of a
 * feature side by side. */
#define PAD(N) (((N) + 7) / 8 * 8)

/* Rows per chunk of the sums (a chunk's partial sums, then the chunks in order). */
#define HMM_GAUSS_CHUNK 2048

/* (D, Np) transposed copy of a per-state array (N, D), zero past N. */
static double *transposed(int D, int N, const double *a)
{
    const int Np = PAD(N);
    double *t = calloc((size_t)D * Np, sizeof(double));
    if (!t)
        return NULL;
    for (int i = 0; i < N; ++i)
        for (int d = 0; d < D; ++d)
            t[(size_t)d * Np + i] = a[(size_t)i * D + d];
    return t;
}

void hmm_gauss_diag_loglik(int64_t n, int D, int N, const double *X, const double *c,
                           const double *mc, const double *hp, const double *cst, double *out,
                           int num_threads)
{
    const int Np = PAD(N);
    double *mcT = transposed(D, N, mc), *hpT = transposed(D, N, hp);
    if (!mcT || !hpT) {         /* (tiny arrays; without them, the slow but sure scalar form) */
        for (int64_t t = 0; t < n; ++t)
            for (int i = 0; i < N; ++i) {
                double s = 0.0;
                for (int d = 0; d < D; ++d) {
                    const double z = (X[t * D + d] - c[d]) - mc[(size_t)i * D + d];
                    s += hp[(size_t)i * D + d] * z * z;
                }
                out[t * N + i] = cst[i] - s;
            }
        free(mcT);
        free(hpT);
        return;
    }
    /* Four rows at a time: each state's sum over d is a chain of dependent
     * multiply-adds, so a row alone waits on it; four independent rows share
     * each load of the parameters and keep the units busy (measured: 94 ->
     * 65 ms at 10^6 rows, N=10, D=30, 2 threads). */
    const int64_t groups = (n + 3) / 4;
    #pragma omp parallel num_threads(num_threads)
    {
        double *restrict acc = malloc(sizeof(double) * 4 * (size_t)Np);
        #pragma omp for schedule(static)
        for (int64_t gi = 0; gi < groups; ++gi) {
            const int64_t t0 = gi * 4;
            const int rows = n - t0 < 4 ? (int)(n - t0) : 4;
            if (!acc) {
                for (int64_t k = t0 * N; k < (t0 + rows) * N; ++k)
                    out[k] = NAN;
                continue;
            }
            double *restrict a0 = acc, *restrict a1 = acc + Np, *restrict a2 = acc + 2 * Np,
                   *restrict a3 = acc + 3 * Np;
            for (int i = 0; i < 4 * Np; ++i)
                acc[i] = 0.0;
            /* (a short group repeats its last row: the extra sums are dropped) */
            const double *x0 = X + t0 * D, *x1 = X + (t0 + (rows > 1)) * D;
            const double *x2 = X + (t0 + (rows > 2 ? 2 : rows - 1)) * D, *x3 = X + (t0 + rows - 1) * D;
            for (int d = 0; d < D; ++d) {
                const double y0 = x0[d] - c[d], y1 = x1[d] - c[d], y2 = x2[d] - c[d], y3 = x3[d] - c[d];
                const double *restrict m = mcT + (size_t)d * Np, *restrict h = hpT + (size_t)d * Np;
                #pragma omp simd
                for (int i = 0; i < Np; ++i) {
                    const double z0 = y0 - m[i], z1 = y1 - m[i], z2 = y2 - m[i], z3 = y3 - m[i];
                    a0[i] += h[i] * z0 * z0;
                    a1[i] += h[i] * z1 * z1;
                    a2[i] += h[i] * z2 * z2;
                    a3[i] += h[i] * z3 * z3;
                }
            }
            for (int r = 0; r < rows; ++r)
                for (int i = 0; i < N; ++i)
                    out[(t0 + r) * N + i] = cst[i] - acc[(size_t)r * Np + i];
        }
        free(acc);
    }
    free(mcT);
    free(hpT);
}

int hmm_gauss_diag_stats(int64_t n, int D, int N, const double *X, const double *gamma,
                         double *post, double *obs, double *obs2, int num_threads)
{
    const int Np = PAD(N);
    const int64_t nchunks = (n + HMM_GAUSS_CHUNK - 1) / HMM_GAUSS_CHUNK;
    const size_t width = (size_t)Np * (1 + 2 * (size_t)D);     /* post, obsT (D, Np), obs2T (D, Np) */
    double *part = calloc((size_t)(nchunks ? nchunks : 1) * width, sizeof(double));
    if (!part)
        return -1;
    #pragma omp parallel num_threads(num_threads)
    {
        #pragma omp for schedule(static)
        for (int64_t k = 0; k < nchunks; ++k) {
            double *p = part + (size_t)k * width, *s1 = p + Np, *s2 = s1 + (size_t)D * Np;
            const int64_t end = (k + 1) * HMM_GAUSS_CHUNK < n ? (k + 1) * HMM_GAUSS_CHUNK : n;
            /* the observed rows of the chunk, four at a time: one update of each sum per
             * four rows (a row at a time, each update waited on the previous one) */
            int64_t t = k * HMM_GAUSS_CHUNK;
            while (t < end) {
                const double *x[4];
                double w[4][Np];
                int got = 0;
                for (; t < end && got < 4; ++t) {
                    if (X[t * D] != X[t * D])
                        continue;                           /* a missing observation */
                    x[got] = X + t * D;
                    for (int i = 0; i < N; ++i)
                        w[got][i] = gamma[t * N + i];
                    for (int i = N; i < Np; ++i)
                        w[got][i] = 0.0;
                    ++got;
                }
                for (int r = got; r < 4; ++r) {             /* pad the group with weight 0 */
                    x[r] = got ? x[0] : X + (end - 1) * D;
                    for (int i = 0; i < Np; ++i)
                        w[r][i] = 0.0;
                }
                if (!got)
                    break;
                #pragma omp simd
                for (int i = 0; i < Np; ++i)
                    p[i] += (w[0][i] + w[1][i]) + (w[2][i] + w[3][i]);
                for (int d = 0; d < D; ++d) {
                    const double y0 = x[0][d], y1 = x[1][d], y2 = x[2][d], y3 = x[3][d];
                    const double q0 = y0 * y0, q1 = y1 * y1, q2 = y2 * y2, q3 = y3 * y3;
                    double *restrict a = s1 + (size_t)d * Np, *restrict b = s2 + (size_t)d * Np;
                    #pragma omp simd
                    for (int i = 0; i < Np; ++i) {
                        a[i] += (w[0][i] * y0 + w[1][i] * y1) + (w[2][i] * y2 + w[3][i] * y3);
                        b[i] += (w[0][i] * q0 + w[1][i] * q1) + (w[2][i] * q2 + w[3][i] * q3);
                    }
                }
            }
        }
    }
    /* the chunks in order, into the (N, D) outputs */
    for (int64_t k = 0; k < nchunks; ++k) {
        const double *p = part + (size_t)k * width, *s1 = p + Np, *s2 = s1 + (size_t)D * Np;
        for (int i = 0; i < N; ++i) {
            post[i] += p[i];
            for (int d = 0; d < D; ++d) {
                obs[(size_t)i * D + d] += s1[(size_t)d * Np + i];
                obs2[(size_t)i * D + d] += s2[(size_t)d * Np + i];
            }
        }
    }
    free(part);
    return 0;
}
