/* hmm_many: the forward and backward of many categorical HMMs in one call (a
 * model axis on hmm_forward), on hmm_batch's public API.
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

/* The number of ll entries: K * batch in the first form, batch in the second. */
int64_t hmm_many_size(const hmm_many *h);

void hmm_many_free(hmm_many *h);

#endif
