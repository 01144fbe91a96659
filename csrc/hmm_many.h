/* hmm_many: the forward and backward of many HMMs in one call (a model axis on
 * hmm_forward and hmm_forward_dense), on hmm_batch's public API.  A plan is of
 * one kind, categorical (hmm_many_new) or dense (hmm_many_new_dense); the
 * driver below is the same for both.
 *
 * K models of n states and m symbols: A (K, n, n), B (K, n, m), pi (K, n)
 * row-major, one dtype.  Two forms:
 *   - every model scores every sequence (model == NULL): ll (K, batch),
 *     ll[k * batch + b] = log P(obs[b] | model k);
 *   - each sequence by its own model (model (batch,) of indices in [0, K)):
 *     ll (batch,), ll[b] = log P(obs[b] | model model[b]).
 *
 * One hmm_batch plan per model: in the first form over the caller's obs, in
 * the second over the model's rows of obs copied contiguously, in the order
 * they come in.  So each model's ll and gradients are exactly those of one
 * hmm_batch call on that model's sequences (bit for bit: the plan is the one
 * a separate call makes, and a plan's results do not depend on its threads).
 * A model with no sequences gets zero gradients.
 *
 * Threads: where several models have sequences, the models run side by side,
 * one thread each, the largest first (dynamic schedule), with no more threads
 * than their work feeds (about hmm_batch's share per thread: small work runs on
 * one); where there are fewer models than threads and they are large, each plan
 * in turn gets all the threads, and one model gets all the threads.  Results
 * do not depend on the thread count.
 *
 * Plain C with OpenMP; no knowledge of MXNet or Python.
 */
#ifndef HMM_MANY_H
#define HMM_MANY_H

#include <stdint.h>

typedef struct hmm_many hmm_many;

/* ---- Categorical models (hmm_forward) ---- */

/* A plan for K models (k >= 1) of n states and m symbols over obs (batch, T)
 * int32 and lengths (batch,) as for hmm_batch_new (not copied in the first
 * form: they must outlive the plan); model (batch,) or NULL (see above; the
 * indices are copied and must lie in [0, K): else *bad = the first sequence
 * outside and NULL is returned).  dtype: HMM_FLOAT32 or HMM_FLOAT64.  NULL
 * with *bad = -1 if out of memory. */
hmm_many *hmm_many_new(int k, int n, int m, int64_t batch, int64_t T, const int32_t *obs,
                       const int64_t *lengths, const int64_t *model, int dtype, int64_t *bad);

/* ll out: (K, batch) in the first form, (batch,) in the second.  A, B, pi of
 * the plan's dtype.  Keeps what the backward needs.  0, or -1 if out of memory. */
int hmm_many_forward(hmm_many *h, const void *A, const void *B, const void *pi, double *ll,
                     int num_threads);

/* Gradients of sum gll * ll (gll shaped as ll): dA (K, n, n), dB (K, n, m),
 * dpi (K, n) in double, overwritten.  After hmm_many_forward.  0, or -1 if out
 * of memory. */
int hmm_many_backward(hmm_many *h, const double *gll, double *dA, double *dB, double *dpi,
                      int num_threads);

/* ---- Dense emissions (hmm_forward_dense) ----
 *
 * K models of n states: A (K, n, n), pi (K, n).  The log-emissions depend on
 * the model in the first form: logE (K, batch, T, n), model k's scores of
 * sequence b at logE[((k * batch + b) * T + t) * n]; in the second each
 * sequence's scores are already under its own model: logE (batch, T, n).
 * Sequence b is the first lengths[b] rows of its (T, n) block, as for
 * hmm_batch_new_dense with starts[b] = b * T.  One hmm_batch dense plan per
 * model, exactly the plan of a rank-2 call on that model's sequences (in the
 * second form the forward copies each model's rows of logE together, in
 * their order, and keeps the copy for the backward), so again every model's
 * ll and gradients are bit for bit a separate call's. */

/* A dense plan: K models (k >= 1) of n states over lengths (batch,) in
 * [0, T] (not copied in the first form: they must outlive the plan); model,
 * dtype, *bad and NULL as for hmm_many_new. */
hmm_many *hmm_many_new_dense(int k, int n, int64_t batch, int64_t T, const int64_t *lengths,
                             const int64_t *model, int dtype, int64_t *bad);

/* ll out, shaped as for hmm_many_forward; A, pi, logE (see above) of the
 * plan's dtype.  0, or -1 if out of memory. */
int hmm_many_forward_dense(hmm_many *h, const void *A, const void *pi, const void *logE, double *ll,
                           int num_threads);

/* Gradients of sum gll * ll: dA (K, n, n), dpi (K, n) in double, and dlogE
 * shaped as logE, of the plan's dtype (gll times the posteriors, 0 outside
 * the sequences), all overwritten; dlogE may be NULL.  logE: the forward's
 * log-emissions again (the same values; the first form reads them, as
 * hmm_batch_backward_dense does, the second its own copy).  After
 * hmm_many_forward_dense.  0, or -1 if out of memory. */
int hmm_many_backward_dense(hmm_many *h, const double *gll, const void *logE, double *dA, double *dpi,
                            void *dlogE, int num_threads);

/* ---- Either kind ---- */

/* The number of ll entries: K * batch in the first form, batch in the second. */
int64_t hmm_many_size(const hmm_many *h);

void hmm_many_free(hmm_many *h);

#endif
