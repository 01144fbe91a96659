/* hmm_gauss: the two passes over the data of the diagonal Gaussian family (spherical and diag
 * emissions: one variance per state and feature) - its log-densities and its E-step sums.
 *
 * Plain C with OpenMP; no knowledge of MXNet or Python.  The family's mathematics (parameters,
 * M-step, priors) is in hmmop/emissions/gaussian.py; these are its two loops over n rows, which
 * NumPy ran as several BLAS products with temporaries as large as the data (3-4 passes over X
 * each, of 240 MB at 10^6 rows of 30 features), here one pass each.
 *
 * Layouts row-major: X (n, D); per-state arrays (N, D); out, gamma (n, N).  A row whose
 * X[t, 0] is NaN is a missing observation (the caller has checked that such rows are NaN
 * throughout): the log-density gives NaN there (the caller writes 0), the sums skip it. */
#ifndef HMM_GAUSS_H
#define HMM_GAUSS_H

#include <stdint.h>

/* out[t, i] = cst[i] - sum_d hp[i, d] * ((X[t, d] - c[d]) - mc[i, d])^2: with c a centre of the
 * data, mc = means - c, hp = 1 / (2 var) and cst the normalising constants, the log-density
 * of row t under state i (computed on x - c, as the caller's other paths, so that data far
 * from 0 keep their digits).  Row by row in threads: the result does not depend on them. */
void hmm_gauss_diag_loglik(int64_t n, int D, int N, const double *X, const double *c,
                           const double *mc, const double *hp, const double *cst, double *out,
                           int num_threads);

/* post (N), obs (N, D), obs2 (N, D) += the sums over the observed rows t of gamma[t, i],
 * gamma[t, i] X[t, d] and gamma[t, i] X[t, d]^2 (hmmlearn's stats 'post', 'obs', 'obs**2').
 * Rows are summed in fixed chunks, the chunks in order: the result does not depend on the
 * thread count.  Returns 0, or -1 if out of memory. */
int hmm_gauss_diag_stats(int64_t n, int D, int N, const double *X, const double *gamma,
                         double *post, double *obs, double *obs2, int num_threads);

#endif
