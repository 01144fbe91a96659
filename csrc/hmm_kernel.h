/* hmm_kernel: scaled forward recursion of a discrete HMM and its gradient.
 *
 * Also Viterbi decoding, state posteriors and sampling.
 *
 * Plain C, double precision, one sequence per call; no allocation, no threads,
 * no knowledge of MXNet or Python.  Row-major layouts:
 *   A   (n, n)  A[i*n + j]  = P(next = j | current = i)
 *   BT  (m, n)  BT[k*n + i] = P(symbol k | state i)   (the transpose of B, so
 *               that the emission column of one symbol is contiguous)
 *   pi  (n,)
 *   obs (len,)  symbols in [0, m]; the caller has stripped -1 padding.
 *
 * Missing observations: BT is only ever indexed by obs, so the caller may give
 * BT an extra row m of all ones (m + 1 rows) and code a missing step as
 * symbol m: emission probability 1 in every state marginalises the unknown
 * symbol.  (In log space, for hmm_viterbi, that row is all zeros.)
 */
#ifndef HMM_KERNEL_H
#define HMM_KERNEL_H

#include <stddef.h>
#include <stdint.h>

/* Forward pass.  Writes, for t = 0..len-1,
 *   pred[t*pred_stride + j] = (alpha_hat_{t-1} @ A)[j]   (pi[j] at t = 0)
 *   scale[t]                = c_t = sum_j pred_t[j] * BT[obs[t]*n + j]
 * and leaves alpha_hat_{len-1} in alpha (n doubles).  pred_stride = n keeps
 * every step for the backward pass; pred_stride = 0 keeps only the last one.
 * Returns log P(obs) = sum_t log c_t, or -INFINITY as soon as some c_t == 0
 * (the rows of pred and scale after that step are then left unwritten). */
double hmm_forward_scaled(int n, int len, const double *A, const double *BT,
                          const double *pi, const int32_t *obs, double *pred,
                          ptrdiff_t pred_stride, double *scale, double *alpha);

/* Time steps whose dA contributions are summed together (see the .c file). */
#define HMM_BLOCK 16

/* Scratch doubles hmm_backward_scaled needs for n states. */
#define HMM_BACKWARD_WORK(n) ((size_t)(n) * (1 + 2 * HMM_BLOCK))

/* Backward pass over what hmm_forward_scaled stored (pred_stride = n).
 * AT (n, n) is the transpose of A: AT[j*n + i] = A[i*n + j].
 * Adds g * d(log P(obs))/d(param) into dA (n, n), dBT (m, n) and dpi (n,).
 * work: HMM_BACKWARD_WORK(n) doubles of scratch.  Must not be called for a
 * sequence whose forward returned -INFINITY. */
void hmm_backward_scaled(int n, int len, const double *AT, const double *BT,
                         const int32_t *obs, const double *pred,
                         const double *scale, double g, double *dA,
                         double *dBT, double *dpi, double *work);

/* Viterbi decoding (log-space max-product), hmmlearn 0.3.3's recursion:
 *   delta_0(j) = logpi[j] + logB[j, o_0]
 *   delta_t(j) = max_i (delta_{t-1}(i) + logA[i, j]) + logB[j, o_t]
 * logA (n, n) = log(A), row-major: the max over predecessors i is taken for
 * a block of successors j at once, sweeping the rows of logA (vectorisable,
 * where a scan per j with a branch is not); logBT (m or m+1, n) = log(B).T
 * (a missing row is all zeros); log 0 = -INFINITY is fine (structural zeros).
 * Ties are broken as hmmlearn breaks them, so that paths match it exactly:
 * the last state is the LOWEST index of the final maximum (std::max_element),
 * a predecessor the HIGHEST index among equal candidates (hmmlearn's
 * backtrace takes the max of (value, index) pairs).  Exact ties are common:
 * paths that visit the same states in another order sum the same logs.
 * work: 2n doubles; back: len*n int32 (back[t*n + j], the best predecessor of
 * j at step t, t >= 1); path (len,) out.  Returns the best path's log
 * probability max_j delta_{len-1}(j).  For an impossible sequence that is
 * -INFINITY and path holds the back-pointer trace from state 0 (in an all
 * -inf lattice: n-1, ..., n-1, 0, as hmmlearn): meaningless, but defined.
 * len >= 1. */
double hmm_viterbi(int n, int len, const double *logA, const double *logBT,
                   const double *logpi, const int32_t *obs, double *work,
                   int32_t *back, int32_t *path);

/* hmm_viterbi's two parts, for drivers that interleave several sequences.
 * One step: dn (n) = delta_t and bk (n) = back[t*n ...] from d (n) =
 * delta_{t-1} and e (n) = logBT row of obs[t].  The end: the best last
 * state of delta_{len-1} = d, the path (len,) traced back through back;
 * returns the path's log probability. */
void hmm_viterbi_step(int n, const double *d, const double *logA,
                      const double *e, double *dn, int32_t *bk);
double hmm_viterbi_backtrace(int n, int len, const double *d,
                             const int32_t *back, int32_t *path);

/* State posteriors over what hmm_forward_scaled stored (pred_stride = n):
 * gamma (len, n), gamma[t*n + i] = P(state_t = i | obs).  AT as for the
 * backward.  work: 2n doubles.  Must not be called for a sequence whose
 * forward returned -INFINITY. */
void hmm_posteriors_scaled(int n, int len, const double *AT, const double *BT,
                           const int32_t *obs, const double *pred,
                           const double *scale, double *gamma, double *work);

/* Sampling of one sequence of len steps by inverse CDF.  cumA (n, n),
 * cumB (n, m), cumpi (n,) hold the cumulative sums along each row of A, B,
 * pi.  u (2*len) uniforms in [0, 1): u[2t] picks state t, u[2t+1] its
 * symbol.  The pick is the smallest index whose cumulative value is > u; if
 * there is none (a row summing to slightly less than 1), the last index of
 * positive probability - never an index of probability 0.  (A row of all
 * zeros, which has no such index, gives 0.)  states, obs (len,) out. */
void hmm_sample(int n, int m, int len, const double *cumA, const double *cumB,
                const double *cumpi, const double *u, int32_t *states,
                int32_t *obs);

/* ---- Dense emissions: the readable reference of hmm_batch_forward_dense --
 *
 * logE (len, n): the log-likelihood of step t's observation under state i,
 * any real or -INFINITY.  Each step t works from a shift s_t: the largest
 * logE[t, i], or - when with that shift the step's scale would fall below
 * 2^-900 (the likeliest state has next to no predicted probability) - the
 * largest log pred_t(i) + logE[t, i] over states with pred_t(i) > 0.  Then
 *   E[t, i]  = exp(logE[t, i] - s_t)        (written, for the backward)
 *   scale[t] = c_t = sum_i pred_t(i) E[t, i]
 * and log P = sum_t (log c_t + s_t), -INFINITY only for a sequence of
 * probability exactly 0 (never from an underflow).  pred (len, n) and alpha
 * (n) as for hmm_forward_scaled (pred_stride n).  A, pi: any non-negative
 * values.  A NaN in logE returns NaN at once (the later rows unwritten). */
double hmm_dense_forward_scaled(int n, int len, const double *A, const double *pi,
                                const double *logE, double *E, double *pred,
                                double *scale, double *alpha);

/* Backward over what hmm_dense_forward_scaled stored: adds g * dlogP/dA and
 * g * dlogP/dpi into dA (n, n), dpi (n,), and writes
 * gamma[t*n + i] = g * P(s_t = i | obs) (the gradient with respect to logE).
 * AT: A's transpose; work: HMM_BACKWARD_WORK(n) doubles.  Not for a sequence
 * whose forward returned -INFINITY. */
void hmm_dense_backward_scaled(int n, int len, const double *AT, const double *E,
                               const double *pred, const double *scale, double g,
                               double *dA, double *dpi, double *gamma, double *work);

/* hmm_dense_forward_scaled with a check that nothing was lost to the range
 * of double (the batch driver's test for plans whose A has zeros, see
 * hmm_batch.h): *lost = 1 (else 0) where a state of nonzero probability
 * (pred_t(i) > 0, logE[t, i] > -INFINITY) has pred_t(i) E[t, i] below 2^-1000
 * or below floor_alpha * c_t (alpha_hat_t(i) < floor_alpha: its products with
 * A's smallest nonzero entry could leave the normal range).  Where *lost is 0
 * every nonzero forward term was held to double's full relative precision,
 * so the result is what a log-space computation gives. */
double hmm_dense_forward_scaled_checked(int n, int len, const double *A, const double *pi,
                                        const double *logE, double *E, double *pred,
                                        double *scale, double *alpha, double floor_alpha,
                                        int *lost);

/* ---- Dense emissions in log space (no limit of range) ----------------------
 *
 * The forward in log space, normalised per step: with v_t(j) =
 * log sum_i exp(la[t-1][i] + logA[i, j]) + logE[t, j] (log pi[j] + logE[0, j]
 * at t = 0), lc[t] = log sum_j exp(v_t(j)) and la[t][j] = v_t(j) - lc[t]
 * (the log of the scaled alpha_hat: each row sums to 1 in probability).
 * Returns log P = sum_t lc[t]: -INFINITY for an impossible sequence (the rows
 * after its first impossible step unwritten), NaN for a NaN in logE.
 * logAT (n, n): log A transposed, logAT[j*n + i] = log A[i, j] (-INFINITY for
 * a zero); logpi (n,) = log pi.  la (len, n), lc (len,) out. */
double hmm_dense_forward_log(int n, int len, const double *logAT, const double *logpi,
                             const double *logE, double *la, double *lc);

/* Scratch doubles hmm_dense_backward_log needs for n states. */
#define HMM_LOG_BACKWARD_WORK(n) ((size_t)(n) * 3)

/* Backward over hmm_dense_forward_log's la, lc (a sequence whose forward
 * returned a finite log P): adds g * dlogP/dA and g * dlogP/dpi into dA (n, n),
 * dpi (n,) and writes gamma[t*n + i] = g * P(s_t = i | obs), all from logs:
 * with lb the log of the scaled backward variable (lb[len-1] = 0,
 * lb_{t-1}(i) = log sum_j exp(logA[i, j] + logE[t, j] + lb_t(j)) - lc[t]),
 *   gamma_t(i)  = exp(la[t][i] + lb_t(i))
 *   dlogP/dA[i, j] = sum_{t>0} exp(la[t-1][i] + logE[t, j] + lb_t(j) - lc[t])
 *   dlogP/dpi[i]   = exp(logE[0, i] + lb_0(i) - lc[0])
 * (the partial derivatives of the polynomial, at zeros of A and pi too; a
 * term past double's range is held at DBL_MAX, as hmm_dense_backward_scaled
 * does), the terms of step t divided by sum_i gamma_t(i) (1 but for the
 * logs' rounding).  logA (n, n) = log A, row-major.  work: HMM_LOG_BACKWARD_WORK(n). */
void hmm_dense_backward_log(int n, int len, const double *logA, const double *logE,
                            const double *la, const double *lc, double g, double *dA,
                            double *dpi, double *gamma, double *work);

#endif
