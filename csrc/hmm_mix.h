/* hmm_mix: the per-row passes of the Gaussian-mixture family - the log-sum-exp of each state's
 * component log-densities and the components' responsibilities within their state, and the E-step
 * sums of the diagonal form.
 *
 * Plain C with OpenMP; no knowledge of MXNet or Python.  The parameters' arrays for the component
 * log-densities, those of the full and tied forms, their sums and the M-step are the caller's
 * (hmmop/emissions/gmm.py); the diagonal form's component log-densities are computed here.
 *
 * Layouts row-major, all float64: comp and resp (n, N*K), the K components of state i in columns
 * i*K .. i*K + K - 1; out (n, N).
 *
 * Results do not depend on the thread count: every row is computed alone, in the same order of
 * operations whatever thread computes it, and sums over rows are made of fixed chunks. */
#ifndef HMM_MIX_H
#define HMM_MIX_H

#include <stdint.h>

/* For each row t and state i, with c = comp[t, i*K : i*K + K] and top = max(c) (0 when that is
 * not finite; NaN when c holds a NaN, then also replaced by 0):
 *   out[t, i]          = log(sum_k exp(c_k - top)) + top
 *   resp[t, i*K + k]   = exp(c_k - top) / sum_k' exp(c_k' - top)   (0 where that is not finite)
 * so a row with a NaN component gets NaN in out and 0 in resp, a state of density 0 (all c_k =
 * -inf) gets -inf and 0.  exp is a polynomial one within a few ulp of the correctly rounded value
 * (vectorised over blocks of rows).  resp may be NULL (not computed) or equal to comp (overwritten
 * in place).  num_threads < 1 counts as 1.  Returns 0, or -1 when scratch memory could not be
 * allocated (out and resp then incomplete). */
int hmm_mix_logsumexp(int64_t n, int N, int K, const double *comp, double *out, double *resp,
                      int num_threads);

/* hmm_mix_logsumexp of the component log-densities of the diagonal (and spherical) form, computed
 * here: comp[t, s] = cst[s] + sum_d (a[d, s] y_d + b[d, s]) y_d with y = X[t] - c (X (n, D), c (D,):
 * a centre of the data; a = -1/(2 var), b = (mean - c) / var (D, N*K); cst (N*K,): the log weight,
 * normalisation and mean terms).  resp: NULL or (n, N*K), as there.  A row with a NaN gets NaN in
 * out (the caller sorts out missing rows).  Returns 0, or -1 when scratch memory could not be
 * allocated. */
int hmm_mix_loglik_diag(int64_t n, int N, int K, int D, const double *X, const double *c,
                        const double *a, const double *b, const double *cst, double *out, double *resp,
                        int num_threads);

/* The E-step sums of the diagonal (and spherical) form over the rows of X (n, D) that are not
 * missing (wholly NaN; skipped), with y = X[t] - c (c (D,): a centre of the data) and
 * r[t, s] = gamma[t, s / K] * q[t, s] (q (n, N*K): the responsibilities within each state, as
 * hmm_mix_logsumexp gives them; gamma (n, N): the state posteriors), added to the outputs:
 *   post[i] += sum_t gamma[t, i];   s0[s] += sum_t r[t, s];
 *   s1[s, d] += sum_t r[t, s] y_d;  s2[s, d] += sum_t r[t, s] y_d^2       (s1, s2 (N*K, D))
 * Summed in fixed chunks of rows whose partial sums are added in order.  Returns 0, or -1 when
 * scratch memory could not be allocated (nothing added). */
int hmm_mix_stats_diag(int64_t n, int N, int K, int D, const double *X, const double *c,
                       const double *q, const double *gamma, double *post, double *s0, double *s1,
                       double *s2, int num_threads);

#endif
