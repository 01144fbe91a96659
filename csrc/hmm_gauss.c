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
    #pragma omp parallel num_threads(num_threads)
    {
        double *restrict acc = malloc(sizeof(double) * Np);
        #pragma omp for schedule(static)
        for (int64_t t = 0; t < n; ++t) {
            const double *restrict x = X + t * D;
            double *restrict o = out + t * N;
            if (!acc) {
                for (int i = 0; i < N; ++i)
                    o[i] = NAN;
                continue;
            }
            for (int i = 0; i < Np; ++i)
                acc[i] = 0.0;
            for (int d = 0; d < D; ++d) {
                const double xd = x[d] - c[d];
                const double *restrict m = mcT + (size_t)d * Np, *restrict h = hpT + (size_t)d * Np;
                #pragma omp simd
                for (int i = 0; i < Np; ++i) {
                    const double z = xd - m[i];
                    acc[i] += h[i] * z * z;
                }
            }
            for (int i = 0; i < N; ++i)
                o[i] = cst[i] - acc[i];
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
        double g[Np];
        #pragma omp for schedule(static)
        for (int64_t k = 0; k < nchunks; ++k) {
            double *p = part + (size_t)k * width, *s1 = p + Np, *s2 = s1 + (size_t)D * Np;
            const int64_t end = (k + 1) * HMM_GAUSS_CHUNK < n ? (k + 1) * HMM_GAUSS_CHUNK : n;
            for (int i = N; i < Np; ++i)
                g[i] = 0.0;
            for (int64_t t = k * HMM_GAUSS_CHUNK; t < end; ++t) {
                const double *x = X + t * D;
                if (x[0] != x[0])
                    continue;                               /* a missing observation */
                for (int i = 0; i < N; ++i)
                    g[i] = gamma[t * N + i];
                #pragma omp simd
                for (int i = 0; i < Np; ++i)
                    p[i] += g[i];
                for (int d = 0; d < D; ++d) {
                    const double xd = x[d], xx = xd * xd;
                    double *restrict a = s1 + (size_t)d * Np, *restrict b = s2 + (size_t)d * Np;
                    #pragma omp simd
                    for (int i = 0; i < Np; ++i) {
                        a[i] += g[i] * xd;
                        b[i] += g[i] * xx;
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
