/* hmm_kernel: scaled forward recursion of a discrete HMM and its gradient.
 *
 * Plain C, double precision, one sequence per call; no allocation, no threads,
 * no knowledge of MXNet or Python.  Row-major layouts:
 *   A   (n, n)  A[i*n + j]  = P(next = j | current = i)
 *   BT  (m, n)  BT[k*n + i] = P(symbol k | state i)   (the transpose of B, so
 *               that the emission column of one symbol is contiguous)
 *   pi  (n,)
 *   obs (len,)  symbols in [0, m); the caller has stripped -1 padding.
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

#endif
