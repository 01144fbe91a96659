/* hmm_em: whole Baum-Welch (EM) loops of a categorical HMM on the batch driver.
 *
 * One call runs up to n_iter EM iterations in hmmlearn's order - E-step,
 * M-step of the learned parameters, then the convergence test - with no
 * per-iteration work outside C.  The E-step is one forward and one backward
 * of hmm_batch (float64 plans); the backward's gradients are the expected
 * counts: trans = A * dll/dA, emit = B * dll/dB, start = pi * dll/dpi (a
 * missing step's emission is 1, no entry of B, so it adds no count).
 *
 * The M-step of a parameter P (A, B or pi; rows are distributions) is the
 * MAP update with Dirichlet concentrations a (hmmlearn's convention):
 * row of x = max(counts + a - 1, 0) (counts alone without a prior), x = 0
 * where P's mask says structural zero and, for A and pi, where P is 0 now
 * (a transition or start that is 0 stays 0); the row is x / sum(x), or kept
 * as it is when that sum is 0.
 *
 * Plain C; no knowledge of Python or MXNet.
 */
#ifndef HMM_EM_H
#define HMM_EM_H

#include <stdint.h>

/* Parameter bits: which parameters are learned, which priors the objective adds. */
enum { HMM_EM_A = 1, HMM_EM_B = 2, HMM_EM_PI = 4 };

/* Convergence tests after iteration k >= 1, on the objectives h of E-steps k-1 and k. */
enum {
    HMM_EM_TOL_NONE = 0,        /* never stop early */
    HMM_EM_TOL_INCREASE = 1,    /* h[k] - h[k-1] < tol (hmmlearn's ConvergenceMonitor) */
    HMM_EM_TOL_ABS = 2          /* |h[k] - h[k-1]| < tol */
};

/* Why the loop stopped (hmm_em_result.stop). */
enum { HMM_EM_RAN_OUT = 0, HMM_EM_CONVERGED = 1, HMM_EM_NONFINITE = 2 };

/* Errors (negative returns). */
enum { HMM_EM_ENOMEM = -1, HMM_EM_EBADSYMBOL = -2, HMM_EM_ELAYOUT = -3 };

typedef struct {
    int learn;                  /* HMM_EM_* bits: the parameters the M-step updates */
    /* Dirichlet concentrations (> 0) of the shape of the parameter, or NULL (maximum likelihood) */
    const double *prior_A, *prior_B, *prior_pi;
    /* structural-zero masks of the shape of the parameter, 0 at a structural zero; NULL: none */
    const unsigned char *mask_A, *mask_B, *mask_pi;
    int objective_prior;        /* HMM_EM_* bits: whose log-prior the objective adds (given a prior) */
    int tol_rule;               /* HMM_EM_TOL_* */
    double tol;
} hmm_em_options;

typedef struct {
    int iterations;             /* E-steps with a finite objective, history[0 .. iterations) */
    int stop;                   /* HMM_EM_RAN_OUT, HMM_EM_CONVERGED or HMM_EM_NONFINITE */
    double last;                /* HMM_EM_NONFINITE: the non-finite objective (history[iterations]) */
    int64_t bad;                /* HMM_EM_EBADSYMBOL: the row; HMM_EM_ELAYOUT: the sequence */
} hmm_em_result;

/* EM of a categorical HMM: n states, m symbols.  rows (size,) int32: the
 * symbols of every sequence, sequence b at rows[starts[b] .. starts[b] +
 * lengths[b]), each in [0, m) or -2 (missing: no emission count).  A (n, n),
 * B (n, m), pi (n,) row-major float64: the start, updated in place (the
 * parameters of the last E-step: when the objective turns non-finite, those
 * that gave it).  history (n_iter,) out: the objective at each E-step,
 * log-likelihood + sum over objective_prior's parameters of
 * sum((a - 1) log p) over entries p > 0.  n_iter >= 0.
 *
 * The stop test runs after the M-step: iteration k is the last when the test
 * holds, so `iterations` = k + 1.  A non-finite objective stops the loop
 * before its M-step.  Sequences are padded into as few batch plans as keep
 * the padding below about twice the symbols.  Results do not depend on
 * num_threads.
 *
 * Returns 0 (see *res), or HMM_EM_ENOMEM, HMM_EM_EBADSYMBOL (res->bad: the
 * first row with a symbol outside [0, m) and not -2), HMM_EM_ELAYOUT
 * (res->bad: a sequence outside rows); the parameters are untouched on an
 * error. */
int hmm_em_categorical(int n, int m, int64_t batch, int64_t size, const int32_t *rows,
                       const int64_t *starts, const int64_t *lengths, double *A, double *B,
                       double *pi, const hmm_em_options *opt, int n_iter, double *history,
                       hmm_em_result *res, int num_threads);

/* Many categorical EM loops in one call (a model axis: restarts, one model per
 * group of sequences, several numbers of states).  Task k is exactly
 * hmm_em_categorical(n, m, batch, size, rows, starts, lengths, A, B, pi, opt,
 * n_iter, history, &res, .) on the shared rows, its own parameters (updated in
 * place), sequences and options; status is that call's return.  The tasks run
 * in parallel, one thread each (the largest first), or one task on all
 * num_threads; results do not depend on num_threads or on the other tasks. */
typedef struct {
    int n, m;
    int64_t batch;
    const int64_t *starts, *lengths;    /* (batch,): the task's sequences in rows */
    double *A, *B, *pi;                 /* (n, n), (n, m), (n,): in and out */
    const hmm_em_options *opt;
    int n_iter;
    double *history;                    /* (n_iter,) out */
    hmm_em_result res;                  /* out */
    int status;                         /* out */
} hmm_em_task;

void hmm_em_categorical_many(int64_t ntasks, hmm_em_task *tasks, int64_t size, const int32_t *rows,
                             int num_threads);

/* ---- Dense E-steps (any emission family) -------------------------------------
 *
 * For families whose emission M-step stays with the caller: a plan over one
 * data layout (hmm_batch_new_dense's: sequence b at rows starts[b] ..
 * starts[b] + lengths[b] of logE (size, n)), kept across iterations, whose
 * step is the E-step of the core (ll, the posteriors for the emission's
 * statistics) and the M-step of A and pi - one call per iteration. */
typedef struct hmm_em_dense hmm_em_dense;

/* starts, lengths are not copied (they must outlive the plan); the threads
 * are those of hmm_em_categorical (at most num_threads, fewer for small
 * data).  NULL if out of memory. */
hmm_em_dense *hmm_em_dense_new(int n, int64_t batch, int64_t size, const int64_t *starts,
                               const int64_t *lengths, int num_threads);

/* One iteration's core part: *value = the objective at A (n, n), pi (n,)
 * and logE (size, n) float64 (log-likelihood + the log-priors of A and pi
 * that opt->objective_prior names; opt's B fields are not read).  Where it
 * is finite, gamma (size, n) gets the posteriors (0 outside the sequences)
 * and A, pi their M-step (opt->learn's HMM_EM_A, HMM_EM_PI), in place;
 * otherwise nothing is written.  0, or HMM_EM_ENOMEM. */
int hmm_em_dense_step(hmm_em_dense *e, double *A, double *pi, const double *logE, double *gamma,
                      const hmm_em_options *opt, double *value);

void hmm_em_dense_free(hmm_em_dense *e);

/* The M-step of one parameter in place (see above): P (rows, cols), counts
 * of its shape, prior (concentrations) and mask as for hmm_em_options (NULL:
 * none); keep_zeros: 1 for A and pi (a zero of P stays 0), 0 for B. */
void hmm_em_mstep(int rows, int cols, double *P, const double *counts, const double *prior,
                  const unsigned char *mask, int keep_zeros);

/* sum((a - 1) log p) over the entries with p > 0 of P (count,). */
double hmm_em_log_prior(int64_t count, const double *P, const double *prior);

#endif
