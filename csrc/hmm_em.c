#include "hmm_em.h"
#include "hmm_batch.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Sequences that one batch plan advances together (hmm_batch.c's block). */
#define EM_BLOCK 16

/* Symbols x n^2 per thread: ~250 us of forward-backward at n = 4 (12,500 symbols); less
 * gained nothing on 2 cores (50 x 100 symbols: 112 us on 1 thread, 77 us on 2 idle, 0.3-1.8 ms
 * on 2 busy ones). */
#define EM_THREAD_WORK 200000

/* One batch plan over a group of sequences of similar length, padded. */
typedef struct {
    hmm_batch *plan;
    int64_t count, T;
    int32_t *obs;           /* (count, T): symbols, m for a missing one, -1 after the end */
    int64_t *lengths;       /* (count,) */
    double *ll, *ones;      /* (count,) */
    int threads;
} em_group;

/* Threads for a batch of count sequences and `symbols` symbols: at most one per
 * block, and one per EM_THREAD_WORK of work (starting and joining threads costs
 * more than small batches take, far more on a busy machine); at least 1. */
static int em_threads(int n, int64_t count, int64_t symbols, int num_threads)
{
    int64_t most = (count + EM_BLOCK - 1) / EM_BLOCK;
    const int64_t work = symbols * (int64_t)n * n / EM_THREAD_WORK;
    most = work < most ? work : most;
    most = num_threads < most ? num_threads : most;
    return most < 1 ? 1 : (int)most;
}

static int cmp_desc(const void *a, const void *b)
{
    const int64_t *x = a, *y = b;     /* (length, index): longest first, then by index */
    if (x[0] != y[0])
        return x[0] < y[0] ? 1 : -1;
    return x[1] < y[1] ? -1 : (x[1] > y[1]);
}

static void free_groups(em_group *g, int64_t ngroups)
{
    if (!g)
        return;
    for (int64_t k = 0; k < ngroups; ++k) {
        hmm_batch_free(g[k].plan);
        free(g[k].obs);
        free(g[k].lengths);
        free(g[k].ll);
        free(g[k].ones);
    }
    free(g);
}

/* The sequences of length > 0, longest first, cut into groups whose padded
 * size stays within twice their symbols (or one block); each group padded
 * and planned.  0, or an HMM_EM_E* error (res->bad set). */
static int make_groups(int n, int m, int64_t batch, int64_t size, const int32_t *rows,
                       const int64_t *starts, const int64_t *lengths, int num_threads,
                       em_group **out, int64_t *nout, hmm_em_result *res)
{
    *out = NULL;
    *nout = 0;
    int64_t nseq = 0;
    for (int64_t b = 0; b < batch; ++b) {
        if (lengths[b] < 0 || starts[b] < 0 || starts[b] > size || lengths[b] > size - starts[b]) {
            res->bad = b;
            return HMM_EM_ELAYOUT;
        }
        nseq += lengths[b] > 0;
    }
    for (int64_t b = 0; b < batch; ++b)
        for (int64_t t = starts[b]; t < starts[b] + lengths[b]; ++t)
            if ((rows[t] < 0 || rows[t] >= m) && rows[t] != -2) {
                res->bad = t;
                return HMM_EM_EBADSYMBOL;
            }
    int64_t *pairs = malloc(sizeof(int64_t) * 2 * (nseq ? nseq : 1));
    em_group *g = calloc(nseq ? nseq : 1, sizeof *g);
    if (!pairs || !g) {
        free(pairs);
        free(g);
        return HMM_EM_ENOMEM;
    }
    int64_t k = 0;
    for (int64_t b = 0; b < batch; ++b)
        if (lengths[b] > 0) {
            pairs[2 * k] = lengths[b];
            pairs[2 * k + 1] = b;
            ++k;
        }
    qsort(pairs, nseq, 2 * sizeof(int64_t), cmp_desc);
    int64_t ngroups = 0;
    for (int64_t first = 0; first < nseq;) {
        const int64_t T = pairs[2 * first];
        int64_t count = 0, symbols = 0;
        while (first + count < nseq) {
            const int64_t L = pairs[2 * (first + count)];
            if (count >= EM_BLOCK && (count + 1) * T > 2 * (symbols + L))
                break;
            symbols += L;
            ++count;
        }
        em_group *e = &g[ngroups++];
        e->count = count;
        e->T = T;
        e->obs = malloc(sizeof(int32_t) * count * T);
        e->lengths = malloc(sizeof(int64_t) * count);
        e->ll = malloc(sizeof(double) * count);
        e->ones = malloc(sizeof(double) * count);
        if (!e->obs || !e->lengths || !e->ll || !e->ones)
            goto nomem;
        for (int64_t q = 0; q < count; ++q) {
            const int64_t b = pairs[2 * (first + q) + 1], L = lengths[b];
            const int32_t *src = rows + starts[b];
            int32_t *dst = e->obs + q * T;
            for (int64_t t = 0; t < L; ++t)
                dst[t] = src[t] == -2 ? m : src[t];
            for (int64_t t = L; t < T; ++t)
                dst[t] = -1;
            e->lengths[q] = L;
            e->ones[q] = 1.0;
        }
        e->threads = em_threads(n, count, symbols, num_threads);
        e->plan = hmm_batch_new(n, m, count, T, e->obs, e->lengths, HMM_FLOAT64);
        if (!e->plan)
            goto nomem;
        first += count;
    }
    free(pairs);
    *out = g;
    *nout = ngroups;
    return 0;
nomem:
    free(pairs);
    free_groups(g, ngroups);
    return HMM_EM_ENOMEM;
}

/* Entry j of row i of the M-step's unnormalised row (see hmm_em.h). */
static inline double mstep_entry(const double *p, const double *c, const double *prior,
                                 const unsigned char *mask, int keep_zeros, size_t at, int j)
{
    double v = c[j];
    if (prior) {
        v = prior[at] - 1 + v;
        v = v > 0 ? v : 0.0;                /* max(., 0) */
    }
    if ((keep_zeros && p[j] == 0) || (mask && !mask[at]))
        v = 0.0;
    return v;
}

void hmm_em_mstep(int rows, int cols, double *P, const double *counts, const double *prior,
                  const unsigned char *mask, int keep_zeros)
{
    for (int i = 0; i < rows; ++i) {
        double *p = P + (size_t)i * cols;
        const double *c = counts + (size_t)i * cols;
        const size_t row = (size_t)i * cols;
        double total = 0.0;
        for (int j = 0; j < cols; ++j)
            total += mstep_entry(p, c, prior, mask, keep_zeros, row + j, j);
        if (!(total > 0))
            continue;                       /* nothing counted: the row stays */
        for (int j = 0; j < cols; ++j)      /* (entry j reads p[j] alone) */
            p[j] = mstep_entry(p, c, prior, mask, keep_zeros, row + j, j) / total;
    }
}

double hmm_em_log_prior(int64_t count, const double *P, const double *prior)
{
    double total = 0.0;
    for (int64_t k = 0; k < count; ++k)
        if (P[k] > 0)
            total += (prior[k] - 1) * log(P[k]);
    return total;
}

int hmm_em_categorical(int n, int m, int64_t batch, int64_t size, const int32_t *rows,
                       const int64_t *starts, const int64_t *lengths, double *A, double *B,
                       double *pi, const hmm_em_options *opt, int n_iter, double *history,
                       hmm_em_result *res, int num_threads)
{
    res->iterations = 0;
    res->stop = HMM_EM_RAN_OUT;
    res->last = 0.0;
    res->bad = -1;
    if (n_iter <= 0)
        return 0;
    em_group *g;
    int64_t ngroups;
    int status = make_groups(n, m, batch, size, rows, starts, lengths, num_threads < 1 ? 1 : num_threads,
                             &g, &ngroups, res);
    if (status != 0)
        return status;
    const size_t nA = (size_t)n * n, nB = (size_t)n * m;
    /* the sums over groups, one group's gradients, and the parameters being updated */
    double *mem = malloc(sizeof(double) * 2 * (nA + nB + n));
    double *A1 = malloc(sizeof(double) * (nA + nB + n));
    if (!mem || !A1) {
        free(mem);
        free(A1);
        free_groups(g, ngroups);
        return HMM_EM_ENOMEM;
    }
    double *cA = mem, *cB = cA + nA, *cpi = cB + nB;
    double *dA = cpi + n, *dB = dA + nA, *dpi = dB + nB;
    double *B1 = A1 + nA, *pi1 = B1 + nB;
    memcpy(A1, A, sizeof(double) * nA);     /* worked on in copies: on an error A, B, pi stay */
    memcpy(B1, B, sizeof(double) * nB);
    memcpy(pi1, pi, sizeof(double) * n);
    const int learn = opt->learn, op = opt->objective_prior;
    for (int it = 0; it < n_iter; ++it) {
        /* E-step: the log-likelihood, then (if finite) the expected counts */
        double ll = 0.0;
        for (int64_t k = 0; k < ngroups && status == 0; ++k) {
            if (hmm_batch_forward(g[k].plan, A1, B1, pi1, g[k].ll, g[k].threads) != 0)
                status = HMM_EM_ENOMEM;
            for (int64_t q = 0; q < g[k].count; ++q)
                ll += g[k].ll[q];
        }
        if (status != 0)
            break;
        double value = ll;
        if ((op & HMM_EM_A) && opt->prior_A)
            value += hmm_em_log_prior(nA, A1, opt->prior_A);
        if ((op & HMM_EM_B) && opt->prior_B)
            value += hmm_em_log_prior(nB, B1, opt->prior_B);
        if ((op & HMM_EM_PI) && opt->prior_pi)
            value += hmm_em_log_prior(n, pi1, opt->prior_pi);
        if (!isfinite(value)) {
            res->stop = HMM_EM_NONFINITE;
            res->last = value;
            break;
        }
        history[it] = value;
        res->iterations = it + 1;
        if (learn) {
            memset(cA, 0, sizeof(double) * (nA + nB + n));
            for (int64_t k = 0; k < ngroups && status == 0; ++k) {
                if (hmm_batch_backward(g[k].plan, g[k].ones, dA, dB, dpi, g[k].threads) != 0) {
                    status = HMM_EM_ENOMEM;
                    break;
                }
                for (size_t i = 0; i < nA + nB + n; ++i)
                    cA[i] += dA[i];
            }
            if (status != 0)
                break;
            /* M-step: counts = parameter * gradient */
            if (learn & HMM_EM_A) {
                for (size_t i = 0; i < nA; ++i)
                    cA[i] *= A1[i];
                hmm_em_mstep(n, n, A1, cA, opt->prior_A, opt->mask_A, 1);
            }
            if (learn & HMM_EM_B) {
                for (size_t i = 0; i < nB; ++i)
                    cB[i] *= B1[i];
                hmm_em_mstep(n, m, B1, cB, opt->prior_B, opt->mask_B, 0);
            }
            if (learn & HMM_EM_PI) {
                for (int i = 0; i < n; ++i)
                    cpi[i] *= pi1[i];
                hmm_em_mstep(1, n, pi1, cpi, opt->prior_pi, opt->mask_pi, 1);
            }
        }
        if (it > 0 && opt->tol_rule != HMM_EM_TOL_NONE) {
            const double delta = history[it] - history[it - 1];
            if ((opt->tol_rule == HMM_EM_TOL_INCREASE ? delta : fabs(delta)) < opt->tol) {
                res->stop = HMM_EM_CONVERGED;
                break;
            }
        }
    }
    if (status == 0) {
        memcpy(A, A1, sizeof(double) * nA);
        memcpy(B, B1, sizeof(double) * nB);
        memcpy(pi, pi1, sizeof(double) * n);
    }
    free(mem);
    free(A1);
    free_groups(g, ngroups);
    return status;
}


static int64_t task_work(const hmm_em_task *t)
{
    int64_t symbols = 0;
    for (int64_t q = 0; q < t->batch; ++q)
        symbols += t->lengths[q];
    return symbols * ((int64_t)t->n * t->n + (int64_t)t->n * t->m) * (t->n_iter > 0 ? t->n_iter : 0);
}

static int cmp_work_desc(const void *a, const void *b)
{
    const int64_t *x = a, *y = b;     /* (work, index): most work first, then by index */
    if (x[0] != y[0])
        return x[0] < y[0] ? 1 : -1;
    return x[1] < y[1] ? -1 : x[1] > y[1];
}

void hmm_em_categorical_many(int64_t ntasks, hmm_em_task *tasks, int64_t size, const int32_t *rows,
                             int num_threads)
{
    if (ntasks <= 0)
        return;
    int threads = num_threads < 1 ? 1 : num_threads;
    int64_t *order = ntasks > 1 ? malloc(sizeof(int64_t) * 2 * ntasks) : NULL;
    if (ntasks == 1 || !order || threads == 1) {
        /* one task: all the threads inside it; no memory for the order: task by task */
        for (int64_t k = 0; k < ntasks; ++k) {
            hmm_em_task *t = &tasks[k];
            t->status = hmm_em_categorical(t->n, t->m, t->batch, size, rows, t->starts, t->lengths, t->A, t->B,
                                           t->pi, t->opt, t->n_iter, t->history, &t->res, threads);
        }
        free(order);
        return;
    }
    for (int64_t k = 0; k < ntasks; ++k) {
        order[2 * k] = task_work(&tasks[k]);
        order[2 * k + 1] = k;
    }
    qsort(order, (size_t)ntasks, 2 * sizeof(int64_t), cmp_work_desc);
    if (threads > ntasks)
        threads = (int)ntasks;
    #pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
    for (int64_t i = 0; i < ntasks; ++i) {
        hmm_em_task *t = &tasks[order[2 * i + 1]];
        t->status = hmm_em_categorical(t->n, t->m, t->batch, size, rows, t->starts, t->lengths, t->A, t->B,
                                       t->pi, t->opt, t->n_iter, t->history, &t->res, 1);
    }
    free(order);
}


struct hmm_em_dense {
    hmm_batch *plan;
    int n, threads;
    int64_t batch;
    double *ll, *ones, *dA, *dpi;       /* (batch,), (batch,), (n, n), (n,) */
};

hmm_em_dense *hmm_em_dense_new(int n, int64_t batch, int64_t size, const int64_t *starts,
                               const int64_t *lengths, int num_threads)
{
    hmm_em_dense *e = calloc(1, sizeof *e);
    if (!e)
        return NULL;
    int64_t nseq = 0, symbols = 0;
    for (int64_t b = 0; b < batch; ++b) {
        nseq += lengths[b] > 0;
        symbols += lengths[b] > 0 ? lengths[b] : 0;
    }
    e->n = n;
    e->batch = batch;
    e->threads = em_threads(n, nseq, symbols, num_threads);
    e->plan = hmm_batch_new_dense(n, batch, size, starts, lengths, HMM_FLOAT64);
    e->ll = malloc(sizeof(double) * (batch ? batch : 1));
    e->ones = malloc(sizeof(double) * (batch ? batch : 1));
    e->dA = malloc(sizeof(double) * ((size_t)n * n + n));
    if (!e->plan || !e->ll || !e->ones || !e->dA) {
        hmm_em_dense_free(e);
        return NULL;
    }
    e->dpi = e->dA + (size_t)n * n;
    for (int64_t b = 0; b < batch; ++b)
        e->ones[b] = 1.0;
    return e;
}

void hmm_em_dense_free(hmm_em_dense *e)
{
    if (!e)
        return;
    hmm_batch_free(e->plan);
    free(e->ll);
    free(e->ones);
    free(e->dA);
    free(e);
}

int hmm_em_dense_step(hmm_em_dense *e, double *A, double *pi, const double *logE, double *gamma,
                      const hmm_em_options *opt, double *value)
{
    const int n = e->n;
    const size_t nA = (size_t)n * n;
    if (hmm_batch_forward_dense(e->plan, A, pi, logE, e->ll, e->threads) != 0)
        return HMM_EM_ENOMEM;
    double v = 0.0;
    for (int64_t b = 0; b < e->batch; ++b)
        v += e->ll[b];
    if ((opt->objective_prior & HMM_EM_A) && opt->prior_A)
        v += hmm_em_log_prior(nA, A, opt->prior_A);
    if ((opt->objective_prior & HMM_EM_PI) && opt->prior_pi)
        v += hmm_em_log_prior(n, pi, opt->prior_pi);
    *value = v;
    if (!isfinite(v))
        return 0;
    if (hmm_batch_backward_dense(e->plan, e->ones, logE, e->dA, e->dpi, gamma, e->threads) != 0)
        return HMM_EM_ENOMEM;
    if (opt->learn & HMM_EM_A) {
        for (size_t i = 0; i < nA; ++i)
            e->dA[i] *= A[i];
        hmm_em_mstep(n, n, A, e->dA, opt->prior_A, opt->mask_A, 1);
    }
    if (opt->learn & HMM_EM_PI) {
        for (int i = 0; i < n; ++i)
            e->dpi[i] *= pi[i];
        hmm_em_mstep(1, n, pi, e->dpi, opt->prior_pi, opt->mask_pi, 1);
    }
    return 0;
}
