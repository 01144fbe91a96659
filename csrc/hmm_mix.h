/* hmm_mix: the per-row passes of the Gaussian-mixture family - the log-sum-exp of each state's
 * component log-densities and the components' responsibilities within their state.
 *
 * Plain C with OpenMP; no knowledge of MXNet or Python.  The component log-densities themselves
 * (log weights included) and the M-step are computed by the caller (hmmop/emissions/gmm.py).
 *
 * Layouts row-major, all float64: comp and resp (n, N*K), the K components of state i in columns
 * i*K .. i*K + K - 1; out (n, N).
 *
 * Results do not depend on the thread count: every row is computed alone, in the same order of
 * operations whatever thread computes it. */
#ifndef HMM_MIX_H
#define HMM_MIX_H

#include <stdint.h>

/* For each row t and state i, with c = comp[t, i*K : i*K + K] and top = max(c) (0 when that is
 * not finite; NaN when c holds a NaN, then also replaced by 0):
 *   out[t, i]          = log(sum_k exp(c_k - top)) + top
 *   resp[t, i*K + k]   = exp(c_k - top) / sum_k' exp(c_k' - top)   (0 where that is not finite)
 * so a row with a NaN component gets NaN in out and 0 in resp, a state of density 0 (all c_k =
 * -inf) gets -inf and 0.  resp may be NULL (not computed) or equal to comp (overwritten in place).
 * K = 1 gives out = comp and resp = 1 (0 where comp is not finite).  num_threads < 1 counts as 1. */
void hmm_mix_logsumexp(int64_t n, int N, int K, const double *comp, double *out, double *resp,
                       int num_threads);

#endif
