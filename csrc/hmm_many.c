/* hmm_many: many HMMs in one call, one hmm_batch plan per model, categorical
 * or dense (see hmm_many.h): one driver for both kinds, which differ only in
 * the plan they make (new_plan) and the pass they call (run_one).  Only
 * hmm_batch's public API is used. */
#include "hmm_many.h"

#include <stdlib.h>
#include <string.h>

#include "hmm_batch.h"

/* Threads for the models side by side: no more than one per HMM_MANY_THREAD_WORK of work (symbols x
 * n x (n + m) multiply-adds - m: HMM_MANY_DENSE_EMISSION_WORK for a dense plan - plus
 * HMM_MANY_PLAN_WORK a model, about what hmm_batch gives a thread; a busy machine stalls an OpenMP
 * team, so small work stays on one thread).  Models of at least HMM_MANY_LARGE
 * work, fewer than the threads, run one after another with all the threads each. */
#define HMM_MANY_THREAD_WORK ((int64_t)250000)
/* A plan's own cost, as work: setting up, starting and ending its passes (~5 us forward and backward
 * for one sequence, what ~30000 multiply-adds of hmm_batch's take). */
#define HMM_MANY_PLAN_WORK ((int64_t)30000)
#define HMM_MANY_LARGE ((int64_t)1 << 22)

/* A dense plan's work per state and step besides the n multiply-adds of A: the emission's exp and
 * shift, about what 8 multiply-adds take (a categorical plan: its m symbols' share). */
#define HMM_MANY_DENSE_EMISSION_WORK 8

struct hmm_many {
    int k, n, m, dtype;
    int dense;                /* 1: dense plans (hmm_batch_new_dense), m = 0 */
    int64_t batch, T;
    int indexed;              /* 1: the second form (a model index per sequence) */
    hmm_batch **plans;        /* (k,): NULL for a model with no sequences */
    int64_t *first;           /* (k + 1,) indexed: model k's rows are first[k] .. first[k + 1] */
    int64_t *rows;            /* (batch,) indexed: the caller's sequence of each grouped row */
    int32_t *obs;             /* (batch, T) categorical, indexed: the rows grouped by model */
    int64_t *lengths;         /* (batch,) indexed: their lengths */
    int64_t *starts;          /* (batch,) dense: b * T, the starts of every plan (its block's rows) */
    void *logE;               /* (batch, T, n) dense, indexed: the forward's rows grouped by model */
    size_t logE_got;          /* its size from hmm_big_alloc */
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
    free(h->starts);
    if (h->logE)
        hmm_big_free(h->logE, h->logE_got);
    free(h->ll);
    free(h->gll);
    free(h->order);
    free(h);
}

int64_t hmm_many_size(const hmm_many *h)
{
    return h->indexed ? h->batch : (int64_t)h->k * h->batch;
}

static size_t item(const hmm_many *h)
{
    return h->dtype == HMM_FLOAT32 ? sizeof(float) : sizeof(double);
}

/* Model q's plan over c sequences: their obs rows (categorical) and lengths. */
static hmm_batch *new_plan(const hmm_many *h, int64_t c, const int32_t *obs, const int64_t *lengths)
{
    if (h->dense)
        return hmm_batch_new_dense(h->n, c, c * h->T, h->starts, lengths, h->dtype);
    return hmm_batch_new(h->n, h->m, c, h->T, obs, lengths, h->dtype);
}

/* Either kind: dense plans with m = 0 and obs NULL. */
static hmm_many *many_new(int dense, int k, int n, int m, int64_t batch, int64_t T, const int32_t *obs,
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
    h->dense = dense;
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
    if (dense) {
        h->starts = malloc(sizeof(int64_t) * one);
        if (!h->starts)
            goto fail;
        for (int64_t b = 0; b < batch; ++b)
            h->starts[b] = b * T;
    }
    if (model) {
        h->first = malloc(sizeof(int64_t) * ((size_t)k + 1));
        h->rows = malloc(sizeof(int64_t) * one);
        h->obs = dense ? NULL : malloc(sizeof(int32_t) * one * (size_t)(T ? T : 1));
        h->lengths = malloc(sizeof(int64_t) * one);
        h->ll = malloc(sizeof(double) * one);
        h->gll = malloc(sizeof(double) * one);
        if (!h->first || !h->rows || (!dense && !h->obs) || !h->lengths || !h->ll || !h->gll)
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
            if (!dense && T)
                memcpy(h->obs + r * T, obs + b * T, sizeof(int32_t) * (size_t)T);
        }
        for (int q = 0; q < k; ++q) {
            const int64_t c = h->first[q + 1] - h->first[q];
            if (c == 0)
                continue;
            h->plans[q] = new_plan(h, c, dense ? NULL : h->obs + h->first[q] * T, h->lengths + h->first[q]);
            if (!h->plans[q])
                goto fail;
        }
    } else {
        int64_t symbols = 0;
        for (int64_t b = 0; b < batch; ++b)
            symbols += 1 + lengths[b];
        for (int q = 0; q < k && batch > 0; ++q) {
            work[q] = symbols;
            h->plans[q] = new_plan(h, batch, obs, lengths);
            if (!h->plans[q])
                goto fail;
        }
    }
    const int64_t emission = dense ? HMM_MANY_DENSE_EMISSION_WORK : m;
    for (int q = 0; q < k; ++q) {
        if (!h->plans[q])
            continue;
        const int64_t w = work[q] * n * (n + emission) + HMM_MANY_PLAN_WORK;
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

hmm_many *hmm_many_new(int k, int n, int m, int64_t batch, int64_t T, const int32_t *obs,
                       const int64_t *lengths, const int64_t *model, int dtype, int64_t *bad)
{
    return many_new(0, k, n, m, batch, T, obs, lengths, model, dtype, bad);
}

hmm_many *hmm_many_new_dense(int k, int n, int64_t batch, int64_t T, const int64_t *lengths,
                             const int64_t *model, int dtype, int64_t *bad)
{
    return many_new(1, k, n, 0, batch, T, NULL, lengths, model, dtype, bad);
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

/* One call's arrays: the parameters (B: categorical plans; le: dense plans, the base that model
 * blocks are cut from - the caller's logE, or the grouped copy in the indexed form), ll, and the
 * backward's gll, gradients and dle (dense: the base of dlogE's blocks, or NULL). */
typedef struct {
    const void *A, *B, *pi, *le;
    double *ll;
    const double *gll;
    double *dA, *dB, *dpi;
    void *dle;
} many_call;

/* Model q's forward (backward = 0) or backward on its plan, with `threads` threads. */
static int run_one(hmm_many *h, int q, const many_call *c, int backward, int threads)
{
    const size_t es = item(h), n = (size_t)h->n, m = (size_t)h->m;
    /* Model q's block of le / dle: its grouped rows (indexed) or its (batch, T, n) scores. */
    const size_t block = (size_t)(h->indexed ? h->first[q] : (int64_t)q * h->batch) * (size_t)h->T * n * es;
    const char *le = h->dense ? (const char *)c->le + block : NULL;
    if (!backward) {
        const char *a = (const char *)c->A + (size_t)q * n * n * es;
        const char *p = (const char *)c->pi + (size_t)q * n * es;
        double *out = h->indexed ? h->ll + h->first[q] : c->ll + (int64_t)q * h->batch;
        if (h->dense)
            return hmm_batch_forward_dense(h->plans[q], a, p, le, out, threads);
        return hmm_batch_forward(h->plans[q], a, (const char *)c->B + (size_t)q * n * m * es, p, out, threads);
    }
    const double *g = h->indexed ? h->gll + h->first[q] : c->gll + (int64_t)q * h->batch;
    double *dA = c->dA + (size_t)q * n * n, *dpi = c->dpi + (size_t)q * n;
    if (h->dense)
        return hmm_batch_backward_dense(h->plans[q], g, le, dA, dpi, c->dle ? (char *)c->dle + block : NULL,
                                        threads);
    return hmm_batch_backward(h->plans[q], g, dA, c->dB + (size_t)q * n * m, dpi, threads);
}

/* Every model with sequences, side by side or one after another (see side_by_side). */
static int run(hmm_many *h, const many_call *c, int backward, int num_threads)
{
    const int threads = num_threads < 1 ? 1 : num_threads;
    int failed = 0;
    const int nt = side_by_side(h, threads);
    if (nt) {
        #pragma omp parallel for schedule(dynamic, 1) num_threads(nt) reduction(|:failed)
        for (int64_t i = 0; i < h->active; ++i)
            failed |= run_one(h, (int)h->order[2 * i + 1], c, backward, 1) != 0;
    } else {
        for (int64_t i = 0; i < h->active; ++i)
            failed |= run_one(h, (int)h->order[2 * i + 1], c, backward, threads) != 0;
    }
    return failed ? -1 : 0;
}

static int forward(hmm_many *h, const many_call *c, double *ll, int num_threads)
{
    if (run(h, c, 0, num_threads) != 0)
        return -1;
    if (h->indexed)
        for (int64_t r = 0; r < h->batch; ++r)
            ll[h->rows[r]] = h->ll[r];
    return 0;
}

/* Zero gradients for the models without sequences, the grouped gll; then the plans' backward. */
static int backward(hmm_many *h, const many_call *c, int num_threads)
{
    const size_t n = (size_t)h->n, m = (size_t)h->m;
    for (int q = 0; q < h->k; ++q)
        if (!h->plans[q]) {
            memset(c->dA + (size_t)q * n * n, 0, sizeof(double) * n * n);
            if (!h->dense)
                memset(c->dB + (size_t)q * n * m, 0, sizeof(double) * n * m);
            memset(c->dpi + (size_t)q * n, 0, sizeof(double) * n);
        }
    if (h->indexed)
        for (int64_t r = 0; r < h->batch; ++r)
            h->gll[r] = c->gll[h->rows[r]];
    return run(h, c, 1, num_threads);
}

int hmm_many_forward(hmm_many *h, const void *A, const void *B, const void *pi, double *ll,
                     int num_threads)
{
    if (h->dense)
        return -1;
    const many_call c = {.A = A, .B = B, .pi = pi, .ll = ll};
    return forward(h, &c, ll, num_threads);
}

int hmm_many_backward(hmm_many *h, const double *gll, double *dA, double *dB, double *dpi,
                      int num_threads)
{
    if (h->dense)
        return -1;
    const many_call c = {.gll = gll, .dA = dA, .dB = dB, .dpi = dpi};
    return backward(h, &c, num_threads);
}

/* The (T, n) blocks of rows `from` of src to rows `to` of dst (NULL: the grouped row r itself). */
static void move_blocks(const hmm_many *h, char *dst, const int64_t *to, const char *src, const int64_t *from)
{
    const size_t bytes = (size_t)h->T * (size_t)h->n * item(h);
    for (int64_t r = 0; r < h->batch; ++r)
        memcpy(dst + (size_t)(to ? to[r] : r) * bytes, src + (size_t)(from ? from[r] : r) * bytes, bytes);
}

int hmm_many_forward_dense(hmm_many *h, const void *A, const void *pi, const void *logE, double *ll,
                           int num_threads)
{
    if (!h->dense)
        return -1;
    many_call c = {.A = A, .pi = pi, .le = logE, .ll = ll};
    if (h->indexed && h->batch > 0) {       /* each model's rows together, kept for the backward */
        if (!h->logE) {
            h->logE = hmm_big_alloc((size_t)h->batch * (size_t)h->T * (size_t)h->n * item(h), &h->logE_got);
            if (!h->logE)
                return -1;
        }
        move_blocks(h, h->logE, NULL, logE, h->rows);
        c.le = h->logE;
    }
    return forward(h, &c, ll, num_threads);
}

int hmm_many_backward_dense(hmm_many *h, const double *gll, const void *logE, double *dA, double *dpi,
                            void *dlogE, int num_threads)
{
    if (!h->dense || (h->indexed && h->batch > 0 && !h->logE))
        return -1;
    many_call c = {.gll = gll, .le = logE, .dA = dA, .dpi = dpi, .dle = dlogE};
    void *grouped = NULL;
    size_t got = 0;
    if (h->indexed && h->batch > 0) {
        c.le = h->logE;
        if (dlogE) {                        /* each model's gradient rows together, then put back */
            grouped = hmm_big_alloc((size_t)h->batch * (size_t)h->T * (size_t)h->n * item(h), &got);
            if (!grouped)
                return -1;
            c.dle = grouped;
        }
    }
    const int status = backward(h, &c, num_threads);
    if (grouped) {
        if (status == 0)
            move_blocks(h, dlogE, h->rows, grouped, NULL);
        hmm_big_free(grouped, got);
    }
    return status;
}
