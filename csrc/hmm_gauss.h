/* hmm_gauss: the passes over the data of the Gaussian family - its log-densities and its E-step
 * sums, for all four covariance types (spherical and diag share the diagonal form).
 *
 * Plain C with OpenMP; no knowledge of MXNet or Python.  The family's mathematics (parameters,
 * Cholesky factors, M-step, priors) is in hmmop/emissions/gaussian.py; these are its loops over
 * n rows, each one pass over X with no temporary as large as X.
 *
 * Layouts row-major, all float64: X (n, D); per-state arrays (N, D); out, gamma (n, N).  A row
 * whose X[t, 0] is NaN is a missing observation when the whole row is NaN; a row with NaN in
 * column 0 only in part is reported as bad (see the return values).
 *
 * Results do not depend on the thread count: the log-densities are computed row by row, the sums
 * in fixed chunks of rows whose partial sums are added in order. */
#ifndef HMM_GAUSS_H
#define HMM_GAUSS_H

#include <stdint.h>

/* Threads for a pass of about `work` multiply-adds: at most num_threads, one per HMM_PASS_WORK of
 * work, at least 1.  Starting and joining threads costs more than a small pass takes - far more on
 * a busy machine, where a second thread may wait for a core - and the passes' results do not
 * depend on their thread count, so this changes only time. */
#define HMM_PASS_WORK 250000
static inline int hmm_pass_threads(int num_threads, int64_t work)
{
    const int64_t most = work / HMM_PASS_WORK;
    const int nt = most < num_threads ? (int)most : num_threads;
    return nt < 1 ? 1 : nt;
}

enum { HMM_GAUSS_DIAG = 0, HMM_GAUSS_FULL = 1, HMM_GAUSS_TIED = 2 };

/* Returned instead of a row index when scratch memory could not be allocated. */
#define HMM_GAUSS_ENOMEM (-2)

/* out[t, i], the log-density of row t under state i, with y = X[t] - c (c: a centre of the data,
 * so that data far from 0 keep their digits):
 *   DIAG: cst[i] + sum_d (a[i, d] y_d^2 + b[i, d] y_d)       (a = -1/(2 var), b = (mean - c) / var)
 *   FULL: cst[i] - 1/2 sum_j (sum_{k<=j} P[i, j, k] y_k - b[i, j])^2
 *                                                            (P[i] = L_i^-1, b[i] = P[i] (mean_i - c))
 *   TIED: cst[i] + sum_j (a[i, j] z_j^2 + b[i, j] z_j), z = P y
 *                                           (P (D, D) = L^-1, a = -1/2, b[i] = P (mean_i - c))
 * P is lower triangular (its upper part is not read); a is read by DIAG and TIED, P by FULL and
 * TIED.
 * A missing row gets 0 in every state.  Returns -1, or the first row that is neither finite nor
 * wholly NaN (its out row is left as computed), or HMM_GAUSS_ENOMEM.  So it checks every value of
 * X as hmm_gauss_scan does; *n_missing (if not NULL) gets the count of missing rows. */
int64_t hmm_gauss_loglik(int kind, int64_t n, int D, int N, const double *X, const double *c,
                         const double *P, const double *a, const double *b, const double *cst,
                         double *out, int64_t *n_missing, int num_threads);

/* The E-step sums over the observed rows t (missing rows skipped), added to the outputs:
 *   post[i] += sum_t gamma[t, i];  obs[i, d] += sum_t gamma[t, i] X[t, d];  and
 *   DIAG: second (N, D)    [i, d]    += sum_t gamma[t, i] X[t, d]^2
 *   FULL: second (N, D, D) [i, j, k] += sum_t gamma[t, i] X[t, j] X[t, k]
 *   TIED: second (D, D)    [j, k]    += sum_t (sum_i gamma[t, i]) X[t, j] X[t, k]
 * (full and tied matrices written whole, symmetric).  Returns -1, or the first row whose X[t, 0]
 * is NaN but not the whole row (nothing is added then), or HMM_GAUSS_ENOMEM.  Other non-finite
 * values of X or gamma give non-finite sums: the caller checks them. */
int64_t hmm_gauss_stats(int kind, int64_t n, int D, int N, const double *X, const double *gamma,
                        double *post, double *obs, double *second, int num_threads);

/* The data checks in one pass over X (n, D).  check_all: every value is read, and the result is
 * -1 if every row is finite or wholly NaN, else the first row that is neither; otherwise only the
 * rows with X[t, 0] NaN are read whole (the result is then -1, or the first of them that is NaN
 * only in part).  *n_missing (if not NULL) gets the count of wholly NaN rows and missing (if not
 * NULL, n bytes) 1 on them, 0 elsewhere. */
int64_t hmm_gauss_scan(int64_t n, int D, const double *X, int check_all, int64_t *n_missing,
                       uint8_t *missing, int num_threads);

#endif
