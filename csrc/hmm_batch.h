/* hmm_batch: the forward and backward of a whole batch of padded sequences
 * (and its Viterbi decoding and posteriors).
 *
 * The batch loop of hmm_forward lives here, in C, with its threads, so that
 * every adapter (the Cython one, a native MXNet operator) is a thin layer.
 * Plain C with OpenMP; no knowledge of MXNet or Python.
 *
 * Sequences are sorted by length (longest first) and cut into blocks of up
 * to 16 sequences (12 to 16 where fewer rows give the threads equal shares,
 * by the number of sequences alone: see hmm_batch.c) that advance together,
 * computed in 64-byte vectors, or 32-byte ones where those pad n to fewer
 * lanes (N = 10 in double: 12 lanes, not 16), so that each time step is a
 * small matrix-matrix product (rows x n) . (n x n) that reuses every row of A
 * across the block, instead of one matrix-vector product per sequence.  The
 * one-sequence functions of hmm_kernel.h stay the readable reference (and
 * compute the rare sequences that float32 cannot, see below).
 *
 * Precision: float32 parameters are computed in float32, float64 in double;
 * log-likelihoods are summed in double and gradients accumulated in double in
 * both cases.  A float32 sequence whose per-step probability falls below
 * 2^-100 or rises above 2^100 (where float32 would lose it) is computed in
 * double instead, and so are the sequences of a group of blocks whose float32
 * gradient overflows.
 *
 * Reproducibility: a sequence's log-likelihood depends only on the sequence
 * and the parameters (the same alone or in any batch, bit for bit: every row
 * of a block is computed by the same operations in the same order), and the
 * gradients of a batch do not depend on the thread count (blocks are summed
 * in fixed groups, in a fixed order).
 */
#ifndef HMM_BATCH_H
#define HMM_BATCH_H

#include <stddef.h>
#include <stdint.h>

enum { HMM_FLOAT32 = 0, HMM_FLOAT64 = 1 };

typedef struct hmm_batch hmm_batch;

/* A plan for one batch: n states, m symbols; obs (batch, T) int32 row-major,
 * symbols in [0, m] (m: a missing step, emission probability 1), -1 after
 * each sequence's end; lengths (batch,).  obs and lengths are not copied and
 * must outlive the plan.  dtype: HMM_FLOAT32 or HMM_FLOAT64, the dtype of
 * the parameters given to hmm_batch_forward.  NULL if out of memory.
 *
 * Fixed costs: a plan keeps what its passes use (parameter copies, the
 * forward's rows, scratch) from one call to the next - a small plan in its
 * one allocation, made here - and a pass on one thread (num_threads 1, or
 * too little work for more) opens no OpenMP region, so a plan of a few
 * sequences costs little more than its arithmetic, call after call (an EM
 * loop, a plan per model).  A plan is used by one caller at a time (its
 * passes are not reentrant); different plans run side by side in any
 * threads. */
hmm_batch *hmm_batch_new(int n, int m, int64_t batch, int64_t T,
                         const int32_t *obs, const int64_t *lengths, int dtype);

/* Log-likelihood of every sequence: ll (batch,) out, 0 for an empty one and
 * -INFINITY for an impossible one.  A (n, n), B (n, m), pi (n,) row-major,
 * of the plan's dtype.  Keeps what the backward needs.  Returns 0, or -1 if
 * out of memory. */
int hmm_batch_forward(hmm_batch *h, const void *A, const void *B,
                      const void *pi, double *ll, int num_threads);

/* Gradients of sum_b gll[b] * ll[b]: dA (n, n), dB (n, m), dpi (n,) out
 * (overwritten).  A sequence with ll = -INFINITY or gll = 0 contributes
 * nothing.  After hmm_batch_forward.  Returns 0, or -1 if out of memory. */
int hmm_batch_backward(hmm_batch *h, const double *gll, double *dA,
                       double *dB, double *dpi, int num_threads);

void hmm_batch_free(hmm_batch *h);

/* Large scratch of the caller's (an EM loop's (size, n) log-emission and
 * posterior arrays) from the driver's cache of recently freed large blocks,
 * the one its plans draw from: a block of at least `bytes`, 64-byte aligned,
 * its size in *got, contents undefined; NULL if out of memory.  Give it back
 * with hmm_big_free(p, *got): blocks of 1 MB and more go to the cache (up to
 * its limit), where the next plan or caller takes them without the page
 * faults (and zeroing) of fresh memory. */
void *hmm_big_alloc(size_t bytes, size_t *got);
void hmm_big_free(void *p, size_t got);

/* Viterbi paths of a batch, in double: sequence b is obs[starts[b] ..
 * starts[b] + lengths[b]) (symbols in [0, m], m: a missing step), its path
 * written at the same positions of paths and its log probability to
 * log_prob[b] (0 for an empty one), exactly as hmm_viterbi gives them (see
 * hmm_kernel.h for the logs and the ties).  logA (n, n), logBT (m + 1, n),
 * logpi (n,).  Returns 0, or -1 if out of memory. */
int hmm_batch_viterbi(int n, int64_t batch, const int32_t *obs,
                      const int64_t *starts, const int64_t *lengths,
                      const double *logA, const double *logBT,
                      const double *logpi, double *log_prob, int32_t *paths,
                      int num_threads);

/* State posteriors of a batch, in double: sequence b as for hmm_batch_viterbi;
 * gamma_t(i) = P(state_t = i | obs) written to gamma[(starts[b] + t) * n + i]
 * (NaN for a sequence of probability 0) and its log-likelihood to ll[b] (0 for
 * an empty one), exactly as hmm_forward_scaled and hmm_posteriors_scaled give
 * them.  A (n, n), AT its transpose, BT (m + 1, n) (row m all ones), pi (n,).
 * Returns 0, or -1 if out of memory. */
int hmm_batch_posteriors(int n, int64_t batch, const int32_t *obs,
                         const int64_t *starts, const int64_t *lengths,
                         const double *A, const double *AT, const double *BT,
                         const double *pi, double *ll, double *gamma,
                         int num_threads);

/* count sequences of len steps each, drawn by hmm_sample from the uniforms
 * u (count, len, 2): sequence b from u[b*2*len ...], its states and symbols
 * to states and obs (count, len).  cumA, cumB, cumpi as for hmm_sample.  The
 * draws are the uniforms', so the result does not depend on the threads. */
void hmm_batch_sample(int n, int m, int64_t count, int len, const double *cumA,
                      const double *cumB, const double *cumpi, const double *u,
                      int32_t *states, int32_t *obs, int num_threads);

/* ---- Dense emissions (hmm_forward_dense) ------------------------------------
 *
 * The same blocked forward and backward with the emission of step t of
 * sequence b given as a row of log-likelihoods instead of a symbol:
 *   logE[(starts[b] + t) * n + i] = log p(observation_t | state i)
 * any real number or -INFINITY (impossible), t < lengths[b].  logE has
 * `size` rows; the rows of a (batch, T, n) padded array are starts[b] = b * T
 * (size = batch * T), hmmlearn's concatenated sequences starts[b] = the sum of
 * the lengths before b.  Each step works from its largest log-emission
 * m_t = max_i logE[t, i]: the emission probabilities exp(logE - m_t) lie in
 * [0, 1] and m_t is added back to ll, so scores of any scale give finite
 * results.  A and pi need only be non-negative.
 *
 * Precision and reproducibility as for the categorical plan (above): float32
 * plans compute in float32, and a sequence whose scaled step probability
 * leaves [2^-100, 2^100] is computed in double by the one-sequence reference
 * (hmm_dense_forward_scaled), which re-shifts a step by the largest
 * log(pred) + logE where the first shift underflows (so -INFINITY means
 * impossible, never an underflow).
 *
 * States far behind: a scaled (not log-space) recursion holds a state whose
 * forward probability falls more than ~e^-708 (float32: e^-87) below its
 * step as 0 (or, a little above that, with fewer bits).  Where every entry of
 * A and of pi lies within a factor 2^40 (float32: 2^30) of the smallest, at
 * least 2^-100 (2^-30), that loses nothing: any path through such a state
 * has a rival through the step's likeliest state that follows it from the
 * next step on at most that factor less likely, so its posterior is far
 * below the rounding.  Other plans - zeros of A or pi (a CRF's constraints,
 * structural zeros), tiny or widely spread entries - are "weak": their
 * forward also checks, per step and row, that every state of nonzero
 * probability (pred > 0, a finite log-emission) kept its term pred * E above
 * 2^-1000 (float32: 2^-110) and above floor_alpha * c_t, floor_alpha that
 * floor over min(1, A's smallest nonzero entry) (so its products with A stay
 * normal numbers); a sequence where one did not goes to the double reference, which
 * checks the same in double (hmm_dense_forward_scaled_checked), and where it
 * fails too, to log space (hmm_dense_forward_log, hmm_dense_backward_log: no
 * range limit; the backward recomputes the sequence the same way).  So ll and
 * the gradients are those of a log-space computation at any scale, zeros of
 * A included; the scaled fast path keeps every sequence that loses nothing
 * (at scores of a few hundred and below, practically all).  Not covered: the
 * derivative dA[i, j] at a zero of A (or dpi at a zero of pi) into a state
 * the sequence cannot be in at that step, which the fast path computes from
 * E rows that may hold 0 in place of a value below e^-708 (float32: e^-87)
 * - that derivative is astronomically large or small there anyway.  The check
 * costs weak plans a compare per state and step; other plans run the
 * unchanged scaled path. */

/* Lane plans: a dense float64 plan of at most 16 states whose A and pi are
 * not weak (above) computes with a sequence in each lane of a SIMD vector
 * (8 sequences a vector with AVX-512, 4 with AVX2) instead of a state in
 * each lane: the blocks are then 16 sequences each (the last the rest), a
 * step of 8 sequences a few hundred vector operations with no sums across
 * lanes.  Its forward keeps the emission rows and alpha_hat at every 32nd
 * step, not pred; the backward recomputes alpha_hat segment by segment from
 * there, in cache, then runs the segment backwards (hmm_batch_lanes.h).  The
 * same ll and
 * gradients (to rounding; its own bits alone or in any batch, on any thread
 * count); weak plans, float32 and n > 16 run the state-lane kernel. */

/* Dense plans write their emission rows (the forward) and dlogE (the
 * backward, where its rows are whole 64-byte lines at a 64-byte aligned
 * address) with non-temporal stores when the array holds at least this many
 * bytes: the values are the same, the memory traffic less (hmm_batch.c). */
#define HMM_STREAM_BYTES ((size_t)8 << 20)

/* A dense plan: n states; starts, lengths (batch,) not copied (they must
 * outlive the plan); size rows of logE.  NULL if out of memory. */
hmm_batch *hmm_batch_new_dense(int n, int64_t batch, int64_t size, const int64_t *starts,
                               const int64_t *lengths, int dtype);

/* ll (batch,) out: log sum over paths of pi[s_0] prod A[s_{t-1}, s_t]
 * prod exp(logE[t, s_t]), 0 for an empty sequence, -INFINITY for an
 * impossible one.  A (n, n), pi (n,), logE (size, n) of the plan's dtype.
 * Keeps what the blocked backward needs.  0, or -1 if out of memory. */
int hmm_batch_forward_dense(hmm_batch *h, const void *A, const void *pi, const void *logE,
                            double *ll, int num_threads);

/* Gradients of sum_b gll[b] * ll[b]: dA (n, n), dpi (n,) in double, and
 * dlogE (size, n) of the plan's dtype, gll[b] * gamma_t(i) with
 * gamma_t(i) = P(s_t = i | observations) at each step of each sequence and 0
 * everywhere else (padding, sequences with gll = 0 or ll = -INFINITY).  All
 * overwritten; dlogE may be NULL.  logE: the forward's log-emissions again
 * (the same values; only the sequences computed in double read them, so
 * adapters must keep the input alive until the backward).  With gll = 1 everywhere, dlogE holds the
 * posteriors and A * dA, pi * dpi the expected transition and initial counts
 * (the E-step).  After hmm_batch_forward_dense.  0, or -1 if out of memory. */
int hmm_batch_backward_dense(hmm_batch *h, const double *gll, const void *logE, double *dA,
                             double *dpi, void *dlogE, int num_threads);

/* Viterbi on log-emissions, in double: as hmm_batch_viterbi with the
 * emission row of step t of sequence b read from logE + (starts[b] + t) * n
 * and the path written to paths[starts[b] + t]. */
int hmm_batch_viterbi_dense(int n, int64_t batch, const int64_t *starts,
                            const int64_t *lengths, const double *logA,
                            const double *logE, const double *logpi,
                            double *log_prob, int32_t *paths, int num_threads);

#endif
