/* hmm_many: many categorical HMMs in one call, one hmm_batch plan per model
 * (see hmm_many.h).  Only hmm_batch's public API is used. */
#include "hmm_many.h"

#include <stdlib.h>
#include <string.h>

#include "hmm_batch.h"

/* Threads for the models side by side: no more than one per HMM_MANY_THREAD_WORK of work (symbols x
 * n x (n + m) multiply-adds plus HMM_MANY_PLAN_WORK a model, about what hmm_batch gives a thread;
 * a busy machine stalls an OpenMP team, so small work stays on one thread).  Models of at least
 * HMM_MANY_LARGE work, fewer than the threads, run one after another with all the threads each. */
#define HMM_MANY_THREAD_WORK ((int64_t)250000)
/* A plan's own cost, as work: setting up, starting and ending its passes (~5 us forward and backward
 * for one sequence, what ~30000 multiply-adds of hmm_batch's take). */
#define HMM_MANY_PLAN_WORK ((int64_t)30000)
#define HMM_MANY_LARGE ((int64_t)1 << 22)

struct hmm_many {
    int k, n, m, dtype;
    int64_t batch, T;
    int indexed;              /* 1: the second form (a model index per sequence) */
    hmm_batch **plans;        /* (k,): NULL for a model with no sequences */
    int64_t *first;           /* (k + 1,) indexed: model k's rows are first[k] .. first[k + 1] */
    int64_t *rows;            /* (batch,) indexed: the caller's sequence of each grouped row */
    int32_t *obs;             /* (batch, T) indexed: the rows grouped by model */
    int64_t *lengths;         /* (batch,) indexed: their lengths */
    double *ll, *gll;         /* (batch,) indexed: ll and gll of the grouped rows */
    int64_t *order;           /* (active,): the models with sequences, the most work first */
    int64_t active;
    int64_t max_work, total_work;
};

static int cmp_work_desc(const void *a, const void *b)
{
    const int64_t *x = a, *y = b;     /* (work, index): most work first, then by index */
    if (x[0] != y[0])
        return x[0] < y[0] ? 1 : -1;
    return x[1] < y[1] ? -1 : x[1] > y[1];
}

void hmm_many_free(hmm_many *h)
{
    if (!h)
        return;
    if (h->plans)
        for (int q = 0; q < h->k; ++q)
            hmm_batch_free(h->plans[q]);
    free(h->plans);
    free(h->first);
    free(h->rows);
    free(h->obs);
    free(h->lengths);
    free(h->ll);
    free(h->gll);
    free(h->order);
    free(h);
}

int64_t hmm_many_size(const hmm_many *h)
{
    return h->indexed ? h->batch : (int64_t)h->k * h->batch;
}

hmm_many *hmm_many_new(int k, int n, int m, int64_t batch, int64_t T, const int32_t *obs,
                       const int64_t *lengths, const int64_t *model, int dtype, int64_t *bad)
{
    *bad = -1;
    if (model)
        for (int64_t b = 0; b < batch; ++b)
            if (model[b] < 0 || model[b] >= k) {
                *bad = b;
                return NULL;
            }
    hmm_many *h = calloc(1, sizeof *h);
    if (!h)
        return NULL;
    h->k = k;
    h->n = n;
    h->m = m;
    h->dtype = dtype;
    h->batch = batch;
    h->T = T;
    h->indexed = model != NULL;
    h->plans = calloc((size_t)k, sizeof *h->plans);
    h->order = malloc(sizeof(int64_t) * 2 * (size_t)k);
    int64_t *work = calloc((size_t)k, sizeof(int64_t));       /* symbols + sequences, per model */
    int64_t *count = calloc((size_t)k + 1, sizeof(int64_t));
    if (!h->plans || !h->order || !work || !count)
        goto fail;
    const size_t one = batch ? (size_t)batch : 1;
    if (model) {
        h->first = malloc(sizeof(int64_t) * ((size_t)k + 1));
        h->rows = malloc(sizeof(int64_t) * one);
        h->obs = malloc(sizeof(int32_t) * one * (size_t)(T ? T : 1));
        h->lengths = malloc(sizeof(int64_t) * one);
        h->ll = malloc(sizeof(double) * one);
        h->gll = malloc(sizeof(double) * one);
        if (!h->first || !h->rows || !h->obs || !h->lengths || !h->ll || !h->gll)
            goto fail;
        for (int64_t b = 0; b < batch; ++b) {
            count[model[b]] += 1;
            work[model[b]] += 1 + lengths[b];
        }
        h->first[0] = 0;
        for (int q = 0; q < k; ++q)
            h->first[q + 1] = h->first[q] + count[q];
        memset(count, 0, sizeof(int64_t) * ((size_t)k + 1));      /* now: rows placed so far */
        for (int64_t b = 0; b < batch; ++b) {
            const int64_t r = h->first[model[b]] + count[model[b]]++;
            h->rows[r] = b;
            h->lengths[r] = lengths[b];
            if (T)
                memcpy(h->obs + r * T, obs + b * T, sizeof(int32_t) * (size_t)T);
        }
        for (int q = 0; q < k; ++q) {
            const int64_t c = h->first[q + 1] - h->first[q];
            if (c == 0)
                continue;
            h->plans[q] = hmm_batch_new(n, m, c, T, h->obs + h->first[q] * T, h->lengths + h->first[q], dtype);
            if (!h->plans[q])
                goto fail;
        }
    } else {
        int64_t symbols = 0;
        for (int64_t b = 0; b < batch; ++b)
            symbols += 1 + lengths[b];
        for (int q = 0; q < k && batch > 0; ++q) {
            work[q] = symbols;
            h->plans[q] = hmm_batch_new(n, m, batch, T, obs, lengths, dtype);
            if (!h->plans[q])
                goto fail;
        }
    }
    for (int q = 0; q < k; ++q) {
        if (!h->plans[q])
            continue;
        const int64_t w = work[q] * n * (n + m) + HMM_MANY_PLAN_WORK;
        h->order[2 * h->active] = w;
        h->order[2 * h->active + 1] = q;
        h->active += 1;
        if (w > h->max_work)
            h->max_work = w;
        h->total_work += w;
    }
    qsort(h->order, (size_t)h->active, 2 * sizeof(int64_t), cmp_work_desc);
    free(work);
    free(count);
    return h;
fail:
    free(work);
    free(count);
    hmm_many_free(h);
    return NULL;
}

/* Threads for the models side by side, one each; 0: one model after another, each given all the
 * threads (its plan takes those its work feeds). */
static int side_by_side(const hmm_many *h, int threads)
{
    if (threads <= 1 || h->active <= 1)
        return 0;
    if (h->active < threads && h->max_work >= HMM_MANY_LARGE)
        return 0;
    int64_t most = h->total_work / HMM_MANY_THREAD_WORK;
    if (most > h->active)
        most = h->active;
    if (most > threads)
        most = threads;
    return most > 1 ? (int)most : 0;
}

static int forward_one(hmm_many *h, int q, const void *A, const void *B, const void *pi, double *ll,
                       int threads)
{
    const size_t es = h->dtype == HMM_FLOAT32 ? sizeof(float) : sizeof(double);
    const size_t n = (size_t)h->n, m = (size_t)h->m;
    const char *a = (const char *)A + (size_t)q * n * n * es;
    const char *b = (const char *)B + (size_t)q * n * m * es;
    const char *p = (const char *)pi + (size_t)q * n * es;
    double *out = h->indexed ? h->ll + h->first[q] : ll + (int64_t)q * h->batch;
    return hmm_batch_forward(h->plans[q], a, b, p, out, threads);
}

static int backward_one(hmm_many *h, int q, const double *gll, double *dA, double *dB, double *dpi,
                        int threads)
{
    const size_t n = (size_t)h->n, m = (size_t)h->m;
    const double *g = h->indexed ? h->gll + h->first[q] : gll + (int64_t)q * h->batch;
    return hmm_batch_backward(h->plans[q], g, dA + (size_t)q * n * n, dB + (size_t)q * n * m,
                              dpi + (size_t)q * n, threads);
}

int hmm_many_forward(hmm_many *h, const void *A, const void *B, const void *pi, double *ll,
                     int num_threads)
{
    const int threads = num_threads < 1 ? 1 : num_threads;
    int failed = 0;
    const int nt = side_by_side(h, threads);
    if (nt) {
        #pragma omp parallel for schedule(dynamic, 1) num_threads(nt) reduction(|:failed)
        for (int64_t i = 0; i < h->active; ++i)
            failed |= forward_one(h, (int)h->order[2 * i + 1], A, B, pi, ll, 1) != 0;
    } else {
        for (int64_t i = 0; i < h->active; ++i)
            failed |= forward_one(h, (int)h->order[2 * i + 1], A, B, pi, ll, threads) != 0;
    }
    if (failed)
        return -1;
    if (h->indexed)
        for (int64_t r = 0; r < h->batch; ++r)
            ll[h->rows[r]] = h->ll[r];
    return 0;
}

int hmm_many_backward(hmm_many *h, const double *gll, double *dA, double *dB, double *dpi,
                      int num_threads)
{
    const int threads = num_threads < 1 ? 1 : num_threads;
    const size_t n = (size_t)h->n, m = (size_t)h->m;
    for (int q = 0; q < h->k; ++q)
        if (!h->plans[q]) {
            memset(dA + (size_t)q * n * n, 0, sizeof(double) * n * n);
            memset(dB + (size_t)q * n * m, 0, sizeof(double) * n * m);
            memset(dpi + (size_t)q * n, 0, sizeof(double) * n);
        }
    if (h->indexed)
        for (int64_t r = 0; r < h->batch; ++r)
            h->gll[r] = gll[h->rows[r]];
    int failed = 0;
    const int nt = side_by_side(h, threads);
    if (nt) {
        #pragma omp parallel for schedule(dynamic, 1) num_threads(nt) reduction(|:failed)
        for (int64_t i = 0; i < h->active; ++i)
            failed |= backward_one(h, (int)h->order[2 * i + 1], gll, dA, dB, dpi, 1) != 0;
    } else {
        for (int64_t i = 0; i < h->active; ++i)
            failed |= backward_one(h, (int)h->order[2 * i + 1], gll, dA, dB, dpi, threads) != 0;
    }
    return failed ? -1 : 0;
}
