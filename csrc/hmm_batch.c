#include "hmm_batch.h"
#include "hmm_kernel.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <sys/mman.h>
#if defined(__SSE__)
#include <immintrin.h>      /* (the FMA, AVX-512 and streaming-store intrinsics, where the target has them) */
#endif

/* Sequences per block.  16 rows give each row of A 16 uses per load and fill
 * a 4-row register tile four times; measured on N = 64 (AVX-512, 2 cores),
 * 8 rows were ~25% slower, 32 no faster and they leave fewer blocks to share
 * between threads on small batches. */
#define HMM_BATCH_ROWS 16

/* Blocks of fewer rows for balance: ceil(nseq / 16) blocks are rounded up to
 * a multiple of 8 (else 4, else 2) where the blocks keep at least
 * HMM_BALANCE_ROWS rows, and the sequences shared out evenly (the first
 * blocks one more).  100 sequences: 8 blocks of 12-13 rather than 6 of 16
 * and one of 4, which 2 threads took as 4 + 3 blocks (16 x 4 against
 * 16 x 2 + 4 rows a step); now 4 + 4.  (Lane plans: see block_first.)  The
 * blocks depend on the number of sequences alone, not the threads (and a
 * sequence's ll on neither). */
#define HMM_BALANCE_ROWS 12

/* Steps whose dA outer products are summed in the compute dtype (in registers,
 * as one product X^T U of HMM_WINDOW * rows) before they are added to the
 * double accumulator: few enough that float32 sums stay exact to ~1e-6. */
#define HMM_WINDOW 4

/* Gradient accumulators: blocks are summed into groups (block b into group
 * b % groups), then the groups in order - a number that does not depend on
 * the thread count, so neither does the result.  Up to 32 groups (each a
 * thread's worth of work) within 64 MB, but 8 whatever their size (large N
 * and M: 8 threads still have one each). */
#define HMM_MAX_GROUPS 32
#define HMM_MIN_GROUPS 8
#define HMM_GROUP_BYTES ((size_t)64 << 20)

/* SIMD vectors of 64 bytes where AVX-512 is on (32 registers), else 32. */
#if defined(__AVX512F__)
#define HMM_VBYTES 64
#define HMM_MAXCV 4
#else
#define HMM_VBYTES 32
#define HMM_MAXCV 2
#endif

/* Narrow plans: with 64-byte vectors, a plan whose states fit in fewer
 * lanes of 32-byte vectors (n mod 8 in 1..4 for double, n mod 16 in 1..8
 * for float: N = 10 in double pads to 12 states rather than 16) computes
 * with 32-byte vectors instead - a quarter to a half less arithmetic and
 * memory on the padding.  On this machine (AMD Zen 4) a 64-byte operation
 * is two 32-byte ones, so the narrow plan loses nothing elsewhere.  The
 * choice depends on n and the dtype alone: a sequence's results stay those
 * of any batch. */
#if HMM_VBYTES == 64
#define HMM_NARROW 1
#endif

/* Lane plans: dense float64 plans of at most HMM_LANES_MAX states whose A
 * and pi are not weak (see hmm_batch.h) compute with a sequence in each lane
 * of a SIMD vector (HMM_LANE_COUNT of them: the block's rows in groups)
 * instead of a state in each lane (hmm_batch_lanes.h: why, and what it
 * gains).  The choice depends on n, the dtype and the parameters alone, so a
 * sequence's results stay those of any batch. */
#define HMM_LANES_MAX 16
#define HMM_LANE_COUNT (HMM_VBYTES / 8)

/* Steps of a lane plan's backward segment (hmm_batch_lanes.h): its forward
 * keeps alpha_hat every this many steps (and every step's emission row), its
 * backward recomputes each segment's alpha_hat from there, in cache. */
#define HMM_LANES_SEG 32

struct hmm_batch {
    int n, m, dtype;
    int np;                  /* n rounded up to whole SIMD vectors */
    int narrow;              /* 1: computed with 32-byte vectors (HMM_NARROW) */
    int64_t batch, T;
    const int32_t *obs;
    const int64_t *lengths;
    int64_t nseq;            /* sequences with length > 0 */
    int64_t *order;          /* (nseq,) sequence indices, longest first */
    int64_t nblocks;
    int64_t *step_off;       /* (nblocks + 1,) first step row of each block: its symbols before it */
    int64_t *first;          /* (nblocks + 1,) each block's first sequence in order */
    void *pred;              /* (symbols, np) of the compute dtype: per block, per step, its running rows */
    size_t pred_bytes, scale_bytes, E_bytes;  /* the blocks big_alloc gave for pred, scale, E */
    void *scale;             /* (symbols,) */
    void *Ap, *ATp, *BTp, *pip;  /* padded copies (np, np), (np, np), (m + 1, np), (np,) */
    double *A64, *AT64, *BT64, *pi64;   /* float32 plans: double copies, unpadded */
    double *ll;              /* (batch,) the forward's results */
    unsigned char *redo;     /* (batch,) 1: computed in double (float32 plans; dense plans), 2: in log space */
    /* dense plans (hmm_batch_new_dense): m = 0, no obs */
    int dense;
    int64_t size;            /* rows of logE */
    const int64_t *starts;   /* (batch,) sequence b's first row of logE */
    const void *logE;        /* (size, n) during hmm_batch_forward/backward_dense only */
    void *dlogE;             /* (size, n) during hmm_batch_backward_dense only */
    void *E;                 /* laid out as pred: exp(logE - shift) of every step */
    int stream_E;            /* 1: the forward writes E with non-temporal stores (large plans) */
    int stream_dlogE;        /* 1: the backward writes dlogE so (large, line-aligned rows) */
    /* the guard against states lost to the range (dense plans; FN(prepare_guard)) */
    int weak;                /* 1: A or pi has zeros or a wide spread: check every step */
    double floor_alpha;      /* the check's floor on alpha_hat, compute dtype's */
    double floor_alpha64;    /* and double's (the reference) */
    double *logA64, *logAT64, *logpi64;   /* weak plans: logs of A, A^T, pi for log space */
    int have_logs;           /* 1: those hold the logs of the current parameters (plan_logs) */
    /* Kept from one pass to the next (see "Fixed costs" below): */
    void *params;            /* one block for Ap, ATp, BTp, pip (and A64, AT64, BT64, pi64) */
    void *work;              /* the scratch of a pass run on the calling thread alone */
    double *acc;             /* small gradient accumulators (NULL: calloc'd per backward) */
    int64_t groups;          /* gradient accumulators (plan_groups) */
    int small;               /* 1: params, pred, scale, E, work and acc lie in the plan's own block */
    /* lane plans (HMM_LANES_MAX) */
    int lanes;               /* 1: dense, float64, n <= HMM_LANES_MAX: the lane kernel when not weak */
    int use_lanes;           /* 1: the last forward ran the lane kernel (the backward follows it) */
    int64_t *lstep_off;      /* (nblocks + 1,) each block's first checkpoint slot (lane kernel) */
    int64_t *estep_off;      /* (nblocks + 1,) each block's first group-step of E (lane kernel) */
};

/* Fixed costs.  A plan's passes are often tiny (a model of 4 states and one
 * sequence of 30 symbols: a few microseconds of arithmetic; an EM loop calls
 * them hundreds of times), so what a pass costs besides its arithmetic counts.
 * A plan is one allocation: the struct and its index arrays, and in a small
 * plan (HMM_SMALL_PLAN) everything its passes use - the parameter copies,
 * pred, scale (and E), the one-thread scratch and the gradient accumulators.
 * A larger plan allocates those at its first forward (pred, scale and E from
 * the cache of large blocks) and keeps them: their sizes are the plan's.  A
 * pass that runs on one thread opens no OpenMP region (a region of one thread
 * still sets up a team, and nested in a caller's team - hmm_many, EM starts -
 * a new team each time) and uses the plan's scratch.  None of this changes an
 * operation of the arithmetic or its order.  Measured (hmm_many: 100 plans
 * of N = 4, one sequence of 30 symbols each, float32, forward and backward,
 * one thread, through Python): ~600 us -> ~190 us a call; most of the rest
 * is the arithmetic of one-row blocks, each step a dependent chain. */
#define HMM_SMALL_PLAN ((size_t)256 << 10)

static void *alloc64(size_t bytes)
{
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes ? bytes : 64) != 0)
        return NULL;
    return p;
}

/* The large per-symbol arrays of a plan (pred, E: 4-8 bytes x N' per symbol,
 * tens to hundreds of MB) come from a small cache of recently freed ones.
 * Fresh memory from the system costs a page fault (and zeroing) per 4 KB
 * page: measured, the two 13 MB arrays of a 256 x 200, N = 64 float32 dense
 * forward took 14 ms of its 22 ms that way, every call.  The cache holds at
 * most HMM_CACHE_SLOTS blocks and HMM_CACHE_BYTES in all (memory that was in
 * use a moment before); a block is reused for a request of between half its
 * size and its size.  Fresh large blocks are 2 MB aligned and marked for
 * transparent huge pages where the kernel offers them (fewer faults).  Eight
 * slots: a dense EM loop holds five blocks at once (pred, scale, E, and its
 * log-emission and posterior arrays from hmm_big_alloc). */
#define HMM_CACHE_SLOTS 8
#define HMM_CACHE_MIN ((size_t)1 << 20)
#define HMM_CACHE_BYTES ((size_t)512 << 20)

static struct { void *p; size_t bytes; } big_cache[HMM_CACHE_SLOTS];
static size_t big_cached;
static char big_lock_flag;

static void big_lock(void)
{
    while (__atomic_test_and_set(&big_lock_flag, __ATOMIC_ACQUIRE))
        ;
}

static void big_unlock(void)
{
    __atomic_clear(&big_lock_flag, __ATOMIC_RELEASE);
}

/* A block of at least `bytes` (64-byte aligned); its size in *got. */
static void *big_alloc(size_t bytes, size_t *got)
{
    if (bytes >= HMM_CACHE_MIN) {
        void *p = NULL;
        big_lock();
        int best = -1;
        for (int i = 0; i < HMM_CACHE_SLOTS; ++i)
            if (big_cache[i].p && big_cache[i].bytes >= bytes && big_cache[i].bytes / 2 <= bytes
                    && (best < 0 || big_cache[i].bytes < big_cache[best].bytes))
                best = i;
        if (best >= 0) {
            p = big_cache[best].p;
            *got = big_cache[best].bytes;
            big_cached -= *got;
            big_cache[best].p = NULL;
        }
        big_unlock();
        if (p)
            return p;
        if (posix_memalign(&p, (size_t)2 << 20, bytes) != 0)
            return NULL;
#ifdef MADV_HUGEPAGE
        madvise(p, bytes, MADV_HUGEPAGE);
#endif
        *got = bytes;
        return p;
    }
    *got = bytes;
    return alloc64(bytes);
}

/* Gives back a block from big_alloc (to the cache, or to the system). */
static void big_free(void *p, size_t bytes)
{
    if (!p)
        return;
    if (bytes < HMM_CACHE_MIN || bytes > HMM_CACHE_BYTES) {
        free(p);
        return;
    }
    void *evicted = NULL;
    big_lock();
    int slot = -1;
    for (int i = 0; i < HMM_CACHE_SLOTS && slot < 0; ++i)
        if (!big_cache[i].p)
            slot = i;
    if (slot < 0) {                     /* full: replace the smallest block */
        slot = 0;
        for (int i = 1; i < HMM_CACHE_SLOTS; ++i)
            if (big_cache[i].bytes < big_cache[slot].bytes)
                slot = i;
        evicted = big_cache[slot].p;
        big_cached -= big_cache[slot].bytes;
        big_cache[slot].p = NULL;
    }
    /* over the total: drop cached blocks, then this one */
    for (int i = 0; i < HMM_CACHE_SLOTS && big_cached + bytes > HMM_CACHE_BYTES; ++i)
        if (big_cache[i].p) {
            void *q = big_cache[i].p;
            big_cached -= big_cache[i].bytes;
            big_cache[i].p = NULL;
            big_unlock();
            free(q);
            big_lock();
        }
    if (big_cached + bytes <= HMM_CACHE_BYTES && !big_cache[slot].p) {
        big_cache[slot].p = p;
        big_cache[slot].bytes = bytes;
        big_cached += bytes;
        p = NULL;
    }
    big_unlock();
    free(evicted);
    free(p);
}

void *hmm_big_alloc(size_t bytes, size_t *got)
{
    return big_alloc(bytes, got);
}

void hmm_big_free(void *p, size_t got)
{
    big_free(p, got);
}

/* Streaming stores (the plan's stream_E, stream_dlogE).  A dense plan writes
 * two arrays that outgrow the caches: the forward's emission rows E (read
 * back by the backward, in reverse) and the backward's dlogE (read by the
 * caller).  An ordinary store first reads the line it writes
 * (write-allocate), so each is moved twice; non-temporal stores write whole
 * lines straight to memory.  Used where the array is at least
 * HMM_STREAM_BYTES (hmm_batch.h; below that it may still be in cache when
 * read) and its rows are whole vectors (E: always; dlogE: rows of whole
 * 64-byte lines from a 64-byte aligned address - MXNet's CPU arrays are -
 * e.g. N = 64 in float32, N = 8, 16, ... in double).  Measured (256 x 200,
 * N = 64, float32, one thread, forward + backward): 23.3 -> 20.9 ms, the
 * categorical plan's 17.1 ms on the same rows.  The values written are the
 * same. */

static int cmp_pairs_asc(const void *a, const void *b)
{
    const int64_t *x = a, *y = b;     /* (start, end) */
    if (x[0] != y[0])
        return x[0] < y[0] ? -1 : 1;
    return x[1] < y[1] ? -1 : (x[1] > y[1]);
}

static int cmp_pairs_desc(const void *a, const void *b)
{
    const int64_t *x = a, *y = b;     /* (length, index) */
    if (x[0] != y[0])
        return x[0] < y[0] ? 1 : -1;
    return x[1] < y[1] ? -1 : (x[1] > y[1]);
}

/* order (the sequences of length > 0): their indices, longest first, ties by
 * index - a stable, thread-independent order.  Returns their number, or -1
 * if out of memory. */
static int64_t order_by_length(int64_t batch, const int64_t *lengths, int64_t *order)
{
    int64_t nseq = 0;
    for (int64_t b = 0; b < batch; ++b)
        nseq += lengths[b] > 0;
    int64_t local[2 * 64];              /* (few sequences: no allocation) */
    int64_t *pairs = nseq <= 64 ? local : malloc(sizeof(int64_t) * 2 * nseq);
    if (!pairs)
        return -1;
    int64_t k = 0;
    for (int64_t b = 0; b < batch; ++b)
        if (lengths[b] > 0) {
            pairs[2 * k] = lengths[b];
            pairs[2 * k + 1] = b;
            ++k;
        }
    qsort(pairs, nseq, 2 * sizeof(int64_t), cmp_pairs_desc);
    for (k = 0; k < nseq; ++k)
        order[k] = pairs[2 * k + 1];
    if (pairs != local)
        free(pairs);
    return nseq;
}

/* Rounds a byte count up to 64 (the pieces of one allocation stay aligned). */
static size_t up64(size_t bytes)
{
    return (bytes + 63) & ~(size_t)63;
}

/* The bytes of the parameter copies (FN(prepare)): Ap, ATp (np, np), BTp
 * (m + 1, np), pip (np,) of the compute dtype, and for float32 and dense
 * plans A64, AT64 (n, n), BT64 (m + 1, n), pi64 (n,) in double.  With p, the
 * pointers are set into the block p. */
static size_t params_layout(hmm_batch *h, char *p)
{
    const int n = h->n, m = h->m, np = h->np;
    const size_t es = h->dtype == HMM_FLOAT32 ? sizeof(float) : sizeof(double);
    const size_t sA = up64(es * np * np), sBT = up64(es * (size_t)(m + 1) * np), spi = up64(es * np);
    const size_t dA = up64(sizeof(double) * n * n), dBT = up64(sizeof(double) * (size_t)(m + 1) * n);
    const int doubles = h->dtype == HMM_FLOAT32 || h->dense;     /* for the double reference */
    if (p) {
        h->Ap = p;
        h->ATp = p + sA;
        h->BTp = p + 2 * sA;
        h->pip = p + 2 * sA + sBT;
        if (doubles) {
            char *d = p + 2 * sA + sBT + spi;
            h->A64 = (double *)d;
            h->AT64 = (double *)(d + dA);
            h->BT64 = (double *)(d + 2 * dA);
            h->pi64 = (double *)(d + 2 * dA + dBT);
        }
    }
    return 2 * sA + sBT + spi + (doubles ? 2 * dA + dBT + up64(sizeof(double) * n) : 0);
}

/* The lane kernel's scratch (hmm_batch_lanes.h): the forward's alpha; the
 * backward's W, U, alpha and checkpoint ((HMM_BATCH_ROWS / lanes + 1) groups
 * of n vectors each), dA (n * n vectors), dpi (n vectors) and its segment's
 * alpha_hat, g u and 1 / c (HMM_LANES_SEG steps of those groups), in bytes. */
static size_t lanes_work_bytes(const hmm_batch *h)
{
    const size_t groups = HMM_BATCH_ROWS / HMM_LANE_COUNT + 1, n = (size_t)h->n;
    return (size_t)HMM_VBYTES * (4 * groups * n + n * n + n + HMM_LANES_SEG * groups * (2 * n + 1));
}

/* Elements of pred (and of E) in the state-lane layout, and of the lane
 * kernel's checkpoints (in pred; E and scale unused). */
static size_t pred_elems(const hmm_batch *h)
{
    return (size_t)h->step_off[h->nblocks] * h->np;
}

static size_t lanes_pred_elems(const hmm_batch *h)
{
    return h->lanes ? (size_t)h->lstep_off[h->nblocks] * h->n * HMM_LANE_COUNT : 0;
}

static size_t lanes_E_elems(const hmm_batch *h)
{
    return h->lanes ? (size_t)h->estep_off[h->nblocks] * h->n * HMM_LANE_COUNT : 0;
}

/* The scratch of a pass on one thread: the larger of the forward's alpha
 * ((HMM_BATCH_ROWS + 2) rows of np) and the backward's (FN(scratch): 2 +
 * 2 HMM_WINDOW times HMM_BATCH_ROWS rows, and np more), in bytes. */
static size_t work_bytes(const hmm_batch *h)
{
    const size_t es = h->dtype == HMM_FLOAT32 ? sizeof(float) : sizeof(double);
    const size_t rows = es * h->np * ((size_t)HMM_BATCH_ROWS * (2 + 2 * HMM_WINDOW) + h->np);
    const size_t lanes = h->lanes ? lanes_work_bytes(h) : 0;
    return rows > lanes ? rows : lanes;
}

/* Doubles in one group's gradient accumulator: dA (np, np), dBT (m + 1, np), dpi (np). */
static size_t acc_width(const hmm_batch *h)
{
    return (size_t)h->np * h->np + (size_t)(h->m + 1) * h->np + h->np;
}

/* The backward's gradient accumulators (see HMM_MAX_GROUPS): a number that
 * depends on the plan alone. */
static int64_t plan_groups(const hmm_batch *h)
{
    int64_t groups = (int64_t)(HMM_GROUP_BYTES / (acc_width(h) * sizeof(double)));
    if (groups > HMM_MAX_GROUPS)
        groups = HMM_MAX_GROUPS;
    if (groups < HMM_MIN_GROUPS)
        groups = HMM_MIN_GROUPS;
    if (groups > h->nblocks)
        groups = h->nblocks > 0 ? h->nblocks : 1;
    return groups;
}

/* The backward's accumulators kept with the plan up to this size (zeroed per
 * backward); larger ones are calloc'd per backward, as fresh zero pages. */
#define HMM_KEEP_ACC_BYTES ((size_t)256 << 10)

/* Block blk's first sequence in the length order (blk = nblocks: nseq): the
 * sequences shared out evenly, the first blocks one more; in a lane plan,
 * HMM_BATCH_ROWS to a block (whole groups of lanes: 100 sequences make 12
 * full groups and one of 4, where 8 even blocks of 12-13 rows made 16 groups,
 * 3 of every 16 lanes idle), the last block the rest. */
static int64_t block_first(int64_t nseq, int64_t nblocks, int lanes, int64_t blk)
{
    if (lanes)
        return blk * HMM_BATCH_ROWS < nseq ? blk * HMM_BATCH_ROWS : nseq;
    const int64_t base = nseq / nblocks, extra = nseq % nblocks;
    return blk * base + (blk < extra ? blk : extra);
}

/* A lane plan's checkpoint slots (n vectors each) for a block of `rows`
 * sequences, the longest of length T0: one per segment and group. */
static int64_t lane_slots(int64_t T0, int64_t rows)
{
    return (T0 + HMM_LANES_SEG - 1) / HMM_LANES_SEG * ((rows + HMM_LANE_COUNT - 1) / HMM_LANE_COUNT);
}

/* A lane plan's group-steps of E (n vectors each) for the block of sequences
 * order[first .. next): each group runs as long as its first (longest) row. */
static int64_t lane_esteps(const int64_t *lengths, const int64_t *order, int64_t first, int64_t next)
{
    int64_t steps = 0;
    for (int64_t k = first; k < next; k += HMM_LANE_COUNT)
        steps += lengths[order[k]];
    return steps;
}

static hmm_batch *plan_new(int n, int m, int64_t batch, int64_t T, const int32_t *obs,
                           const int64_t *lengths, int dtype, int dense)
{
    int64_t nseq = 0, steps = 0;
    for (int64_t b = 0; b < batch; ++b)
        if (lengths[b] > 0) {
            nseq += 1;
            steps += lengths[b];
        }
    int64_t nblocks = (nseq + HMM_BATCH_ROWS - 1) / HMM_BATCH_ROWS;
    const int lane_plan = dense && dtype == HMM_FLOAT64 && n <= HMM_LANES_MAX;
    for (int64_t mult = 8; mult >= 2 && !lane_plan; mult /= 2) {
        const int64_t nb = (nblocks + mult - 1) / mult * mult;
        if (nseq >= HMM_BALANCE_ROWS * nb) {
            nblocks = nb;
            break;
        }
    }
    hmm_batch shape;                    /* what the sizes below read */
    memset(&shape, 0, sizeof shape);
    const int lanes = HMM_VBYTES / (dtype == HMM_FLOAT32 ? 4 : 8);
    shape.n = n;
    shape.m = m;
    shape.dtype = dtype;
    shape.dense = dense;
    shape.nblocks = nblocks;
    shape.np = (n + lanes - 1) / lanes * lanes;
#ifdef HMM_NARROW
    if ((n + lanes / 2 - 1) / (lanes / 2) * (lanes / 2) < shape.np) {
        shape.narrow = 1;
        shape.np = (n + lanes / 2 - 1) / (lanes / 2) * (lanes / 2);
    }
#endif
    shape.groups = plan_groups(&shape);
    shape.lanes = lane_plan;
    /* a lane plan's layout needs the blocks' lengths: the order first (and the block
     * boundaries, which depend on nseq alone), its group-steps counted here */
    int64_t *order = NULL, lane_steps = 0, lane_E = 0;     /* (checkpoint slots, group-steps) */
    if (shape.lanes) {
        order = malloc(sizeof(int64_t) * (nseq ? (size_t)nseq : 1));
        if (!order || order_by_length(batch, lengths, order) < 0) {
            free(order);
            return NULL;
        }
        for (int64_t blk = 0; blk < nblocks; ++blk) {
            const int64_t at = block_first(nseq, nblocks, 1, blk), next = block_first(nseq, nblocks, 1, blk + 1);
            lane_steps += lane_slots(lengths[order[at]], next - at);
            lane_E += lane_esteps(lengths, order, at, next);
        }
    }
    /* the struct and its arrays in one allocation: order, step_off, first, ll, redo (lstep_off) */
    const size_t one = batch ? (size_t)batch : 1;
    const size_t at_order = up64(sizeof(hmm_batch));
    const size_t at_step = at_order + up64(sizeof(int64_t) * (nseq ? (size_t)nseq : 1));
    const size_t at_first = at_step + up64(sizeof(int64_t) * ((size_t)nblocks + 1));
    const size_t at_ll = at_first + up64(sizeof(int64_t) * ((size_t)nblocks + 1));
    const size_t at_redo = at_ll + up64(sizeof(double) * one);
    const size_t at_lstep = at_redo + up64(one);
    /* and, in a small plan, what its passes use */
    const size_t es = dtype == HMM_FLOAT32 ? sizeof(float) : sizeof(double);
    const size_t acc = sizeof(double) * acc_width(&shape) * shape.groups;
    const size_t lane_ck = (size_t)lane_steps * HMM_LANE_COUNT * n, lane_e = (size_t)lane_E * HMM_LANE_COUNT * n;
    const size_t rows_n = (size_t)steps * shape.np;
    const size_t row = up64(es * (rows_n > lane_ck ? rows_n : lane_ck));         /* pred */
    const size_t erow = up64(es * (rows_n > lane_e ? rows_n : lane_e));          /* E */
    const size_t at_params = at_lstep + (shape.lanes ? 2 * up64(sizeof(int64_t) * ((size_t)nblocks + 1)) : 0);
    const size_t at_pred = at_params + params_layout(&shape, NULL);
    const size_t at_scale = at_pred + row;
    const size_t at_E = at_scale + up64(es * (size_t)steps);
    const size_t at_work = at_E + (dense ? erow : 0);
    const size_t at_acc = at_work + up64(work_bytes(&shape));
    const int small = acc <= HMM_KEEP_ACC_BYTES && at_acc + acc - at_params <= HMM_SMALL_PLAN;
    char *mem = alloc64(small ? at_acc + acc : at_params);
    if (!mem) {
        free(order);
        return NULL;
    }
    hmm_batch *h = (hmm_batch *)mem;
    *h = shape;
    h->batch = batch;
    h->T = T;
    h->obs = obs;
    h->lengths = lengths;
    h->nseq = nseq;
    h->order = (int64_t *)(mem + at_order);
    h->step_off = (int64_t *)(mem + at_step);
    h->first = (int64_t *)(mem + at_first);
    h->ll = (double *)(mem + at_ll);
    h->redo = (unsigned char *)(mem + at_redo);
    memset(h->redo, 0, one);
    if (small) {
        h->small = 1;
        h->params = mem + at_params;
        params_layout(h, h->params);
        h->pred = mem + at_pred;
        h->scale = mem + at_scale;
        h->E = dense ? mem + at_E : NULL;
        h->work = mem + at_work;
        h->acc = (double *)(mem + at_acc);
    }
    if (order) {
        memcpy(h->order, order, sizeof(int64_t) * (size_t)nseq);
        free(order);
        h->lstep_off = (int64_t *)(mem + at_lstep);
        h->lstep_off[0] = 0;
        h->estep_off = (int64_t *)(mem + at_lstep + up64(sizeof(int64_t) * ((size_t)nblocks + 1)));
        h->estep_off[0] = 0;
    } else if (order_by_length(batch, lengths, h->order) < 0) {
        hmm_batch_free(h);
        return NULL;
    }
    int64_t k;
    h->step_off[0] = 0;
    h->first[0] = 0;
    for (int64_t blk = 0; blk < h->nblocks; ++blk) {
        h->first[blk + 1] = block_first(nseq, h->nblocks, h->lanes, blk + 1);     /* at most HMM_BATCH_ROWS */
        int64_t symbols = 0;
        for (k = h->first[blk]; k < h->first[blk + 1]; ++k)
            symbols += lengths[h->order[k]];
        h->step_off[blk + 1] = h->step_off[blk] + symbols;
        if (h->lanes) {
            h->lstep_off[blk + 1] = h->lstep_off[blk]
                + lane_slots(lengths[h->order[h->first[blk]]], h->first[blk + 1] - h->first[blk]);
            h->estep_off[blk + 1] = h->estep_off[blk]
                + lane_esteps(lengths, h->order, h->first[blk], h->first[blk + 1]);
        }
    }
    return h;
}

hmm_batch *hmm_batch_new(int n, int m, int64_t batch, int64_t T,
                         const int32_t *obs, const int64_t *lengths, int dtype)
{
    return plan_new(n, m, batch, T, obs, lengths, dtype, 0);
}

void hmm_batch_free(hmm_batch *h)
{
    if (!h)
        return;
    if (!h->small) {
        big_free(h->pred, h->pred_bytes);
        big_free(h->scale, h->scale_bytes);
        big_free(h->E, h->E_bytes);
        free(h->params);
        free(h->work);
        free(h->acc);
    }
    free(h->logA64);
    free(h->logAT64);
    free(h->logpi64);
    free(h);                    /* (with order, step_off, first, ll, redo; a small plan's all) */
}

hmm_batch *hmm_batch_new_dense(int n, int64_t batch, int64_t size, const int64_t *starts,
                               const int64_t *lengths, int dtype)
{
    hmm_batch *h = plan_new(n, 0, batch, 0, NULL, lengths, dtype, 1);
    if (!h)
        return NULL;
    h->size = size;
    h->starts = starts;
    return h;
}

/* The logs of A, A^T and pi for log space, made once per forward by the
 * first sequence that needs them (any thread; rare).  -1 if out of memory. */
static int plan_logs(hmm_batch *h)
{
    int have, status = 0;
    #pragma omp atomic read
    have = h->have_logs;
    if (have)
        return 0;
    #pragma omp critical(hmm_plan_logs)
    {
        if (!h->have_logs) {
            const int n = h->n;
            if (!h->logA64) {
                h->logA64 = malloc(sizeof(double) * n * n);
                h->logAT64 = malloc(sizeof(double) * n * n);
                h->logpi64 = malloc(sizeof(double) * n);
            }
            if (!h->logA64 || !h->logAT64 || !h->logpi64) {
                status = -1;
            } else {
                for (int i = 0; i < n; ++i) {
                    h->logpi64[i] = log(h->pi64[i]);
                    for (int j = 0; j < n; ++j)
                        h->logAT64[(size_t)j * n + i] = h->logA64[(size_t)i * n + j]
                            = log(h->A64[(size_t)i * n + j]);
                }
                #pragma omp atomic write
                h->have_logs = 1;
            }
        }
    }
    return status;
}

/* Sequence b of a dense plan by the reference, into fresh arrays: E, pred
 * (len, n), scale (len,), then logE's rows in double and alpha, in one block
 * at *mem.  In a weak plan, where the checked reference reports a state lost
 * to the range (or the forward already found one: redo[b] = 2), in log space
 * instead: la (len, n) in E's place, lc (len,) in scale's, *log_space = 1.
 * Returns its log-likelihood; *mem NULL if out of memory. */
static double dense_forward_double(hmm_batch *h, int64_t b, double **mem, int *log_space)
{
    const int n = h->n, len = (int)h->lengths[b];
    const size_t rows = (size_t)len * n, first = (size_t)h->starts[b] * n;
    double *d = *mem = malloc(sizeof(double) * (3 * rows + len + n));
    *log_space = 0;
    if (!d)
        return 0.0;
    double *le = d + 2 * rows + len;
    for (size_t k = 0; k < rows; ++k)
        le[k] = h->dtype == HMM_FLOAT32 ? ((const float *)h->logE)[first + k]
                                        : ((const double *)h->logE)[first + k];
    if (!h->weak)
        return hmm_dense_forward_scaled(n, len, h->A64, h->pi64, le, d, d + rows, d + 2 * rows,
                                        le + rows);
    int lost = h->redo[b] == 2;
    if (!lost) {
        const double ll = hmm_dense_forward_scaled_checked(n, len, h->A64, h->pi64, le, d, d + rows,
                                                           d + 2 * rows, le + rows,
                                                           h->floor_alpha64, &lost);
        if (!lost)
            return ll;
    }
    *log_space = 1;
    if (plan_logs(h) != 0) {
        free(d);
        *mem = NULL;
        return 0.0;
    }
    return hmm_dense_forward_log(n, len, h->logAT64, h->logpi64, le, d, d + 2 * rows);
}

/* *ll = log-likelihood of sequence b in double, by the reference function.
 * -1 if out of memory. */
static int forward_double(hmm_batch *h, int64_t b, double *ll)
{
    if (h->dense) {
        double *mem;
        int log_space;
        *ll = dense_forward_double(h, b, &mem, &log_space);
        free(mem);
        if (log_space)
            h->redo[b] = 2;             /* the backward goes to log space at once */
        return mem ? 0 : -1;
    }
    const int n = h->n, len = (int)h->lengths[b];
    double *scale = malloc(sizeof(double) * len), *rows = malloc(sizeof(double) * 2 * n);
    const int status = scale && rows ? 0 : -1;
    if (status == 0)        /* pred_stride 0: only the last step's pred is kept */
        *ll = hmm_forward_scaled(n, len, h->A64, h->BT64, h->pi64, h->obs + b * h->T,
                                 rows, 0, scale, rows + n);
    free(scale);
    free(rows);
    return status;
}

/* Adds g * the gradient of sequence b's log-likelihood, computed in double
 * by the reference functions, into a group accumulator laid out as the
 * blocked path's: dA (np, np), dBT (m + 1, np), dpi (np).  -1 if out of memory. */
static int backward_double(hmm_batch *h, int64_t b, double g, double *acc)
{
    if (h->dense) {             /* dA, dpi into acc; g * gamma into dlogE, in its dtype */
        const int n = h->n, np = h->np, len = (int)h->lengths[b];
        double *mem, *work = malloc(sizeof(double) * HMM_BACKWARD_WORK(n));
        double *d = calloc((size_t)n * n + n + (size_t)len * n, sizeof(double));
        int log_space;
        const double ll = dense_forward_double(h, b, &mem, &log_space);
        const int status = mem && work && d ? 0 : -1;
        if (status == 0 && ll != ll) {         /* NaN in the log-emissions: NaN gradients */
            for (int i = 0; i < n; ++i) {
                for (int j = 0; j < n; ++j)
                    acc[(size_t)i * h->np + j] += NAN;
                acc[(size_t)h->np * h->np + h->np + i] += NAN;     /* dpi (after 1 row of BT) */
            }
            const size_t first = (size_t)h->starts[b] * n, count = (size_t)len * n;
            for (size_t k = 0; k < count; ++k) {
                if (h->dtype == HMM_FLOAT32)
                    ((float *)h->dlogE)[first + k] = NAN;
                else
                    ((double *)h->dlogE)[first + k] = NAN;
            }
        } else if (status == 0 && ll != -INFINITY) {
            double *dA = d, *dpi = d + (size_t)n * n, *gamma = dpi + n;
            const size_t rows = (size_t)len * n;
            if (log_space)      /* la, lc where E, scale were; logE's rows after them */
                hmm_dense_backward_log(n, len, h->logA64, mem + 2 * rows + len, mem, mem + 2 * rows,
                                       g, dA, dpi, gamma, work);
            else
                hmm_dense_backward_scaled(n, len, h->AT64, mem, mem + rows, mem + 2 * rows, g, dA,
                                          dpi, gamma, work);
            double *aA = acc, *api = acc + (size_t)np * np + np;     /* (m + 1 = 1 row of BT) */
            for (int i = 0; i < n; ++i) {
                for (int j = 0; j < n; ++j)
                    aA[(size_t)i * np + j] += dA[(size_t)i * n + j];
                api[i] += dpi[i];
            }
            const size_t first = (size_t)h->starts[b] * n, count = (size_t)len * n;
            if (h->dtype == HMM_FLOAT32)
                for (size_t k = 0; k < count; ++k)
                    ((float *)h->dlogE)[first + k] = (float)gamma[k];
            else
                memcpy((double *)h->dlogE + first, gamma, sizeof(double) * count);
        }
        free(mem);
        free(work);
        free(d);
        return status;
    }
    const int n = h->n, m = h->m, np = h->np, len = (int)h->lengths[b];
    const int32_t *obs = h->obs + b * h->T;
    double *pred = malloc(sizeof(double) * (size_t)len * n);
    double *scale = malloc(sizeof(double) * len), *alpha = malloc(sizeof(double) * n);
    double *work = malloc(sizeof(double) * HMM_BACKWARD_WORK(n));
    double *d = calloc((size_t)n * n + (size_t)(m + 1) * n + n, sizeof(double));
    int status = -1;
    if (pred && scale && alpha && work && d) {
        status = 0;
        if (hmm_forward_scaled(n, len, h->A64, h->BT64, h->pi64, obs, pred, n, scale, alpha) != -INFINITY) {
            double *dA = d, *dBT = d + (size_t)n * n, *dpi = dBT + (size_t)(m + 1) * n;
            hmm_backward_scaled(n, len, h->AT64, h->BT64, obs, pred, scale, g, dA, dBT, dpi, work);
            double *aA = acc, *aBT = acc + (size_t)np * np, *api = aBT + (size_t)(m + 1) * np;
            for (int i = 0; i < n; ++i)
                for (int j = 0; j < n; ++j)
                    aA[(size_t)i * np + j] += dA[(size_t)i * n + j];
            for (int k = 0; k <= m; ++k)
                for (int i = 0; i < n; ++i)
                    aBT[(size_t)k * np + i] += dBT[(size_t)k * n + i];
            for (int i = 0; i < n; ++i)
                api[i] += dpi[i];
        }
    }
    free(pred);
    free(scale);
    free(alpha);
    free(work);
    free(d);
    return status;
}

/* The lane kernel (hmm_batch_lanes.h, after the float64 instantiation it uses). */
static int lanes_forward(hmm_batch *h, int nt);
static int lanes_backward(hmm_batch *h, const double *gll, double *acc, int64_t groups, int nt);

/* The blocked forward and backward, once per compute dtype. */
#define REAL float
#define SUF f32
#define IS_FLOAT32 1
#include "hmm_batch_impl.h"
#undef REAL
#undef SUF
#undef IS_FLOAT32

#define REAL double
#define SUF f64
#define IS_FLOAT32 0
#include "hmm_batch_impl.h"
#undef REAL
#undef SUF
#undef IS_FLOAT32

#include "hmm_batch_lanes.h"

#ifdef HMM_NARROW           /* again with 32-byte vectors, for narrow plans */
#undef HMM_VBYTES
#define HMM_VBYTES 32
#define REAL float
#define SUF f32n
#define IS_FLOAT32 1
#include "hmm_batch_impl.h"
#undef REAL
#undef SUF
#undef IS_FLOAT32

#define REAL double
#define SUF f64n
#define IS_FLOAT32 0
#include "hmm_batch_impl.h"
#undef REAL
#undef SUF
#undef IS_FLOAT32
#undef HMM_VBYTES
#define HMM_VBYTES 64
#endif

/* The blocked forward and backward of h's compute dtype and vector width. */
/* Threads for one pass: no more than the work feeds - about HMM_THREAD_WORK multiply-adds each (a
 * small batch, e.g. a CRF's 32 x 50 at N=9, runs faster on one thread than it waits for a second,
 * and a busy machine stalls an OpenMP team) - nor than there are blocks.  Results do not depend on
 * the thread count, so this changes only the time. */
#define HMM_THREAD_WORK 250000
static int pass_threads(const hmm_batch *h, int nt)
{
    const int64_t steps = h->nblocks > 0 ? h->step_off[h->nblocks] : 0;
    int64_t most = steps * h->np * h->np / HMM_THREAD_WORK;
    if (most > h->nblocks)
        most = h->nblocks;
    if (most < nt)
        nt = (int)most;
    return nt < 1 ? 1 : nt;
}

static int forward_any(hmm_batch *h, const void *A, const void *B, const void *pi, int nt)
{
    nt = pass_threads(h, nt);
#ifdef HMM_NARROW
    if (h->narrow)
        return h->dtype == HMM_FLOAT32 ? forward_f32n(h, A, B, pi, nt) : forward_f64n(h, A, B, pi, nt);
#endif
    return h->dtype == HMM_FLOAT32 ? forward_f32(h, A, B, pi, nt) : forward_f64(h, A, B, pi, nt);
}

static int backward_any(hmm_batch *h, const double *gll, double *acc, int64_t groups, int nt)
{
    nt = pass_threads(h, nt);
#ifdef HMM_NARROW
    if (h->narrow)
        return h->dtype == HMM_FLOAT32 ? backward_f32n(h, gll, acc, groups, nt)
                                       : backward_f64n(h, gll, acc, groups, nt);
#endif
    return h->dtype == HMM_FLOAT32 ? backward_f32(h, gll, acc, groups, nt)
                                   : backward_f64(h, gll, acc, groups, nt);
}

int hmm_batch_forward(hmm_batch *h, const void *A, const void *B,
                      const void *pi, double *ll, int num_threads)
{
    int status = forward_any(h, A, B, pi, num_threads);
    if (status == 0)
        memcpy(ll, h->ll, sizeof(double) * h->batch);
    return status;
}

/* dA, dB, dpi's row i: the sums over the groups of acc, in group order. */
static void sum_groups(const hmm_batch *h, const double *acc, size_t width, int64_t groups, int i,
                       double *dA, double *dB, double *dpi)
{
    const int n = h->n, m = h->m, np = h->np;
    const double *aBT = acc + (size_t)np * np, *api = aBT + (size_t)(m + 1) * np;
    for (int j = 0; j < n; ++j) {
        double s = 0.0;
        for (int64_t g = 0; g < groups; ++g)
            s += acc[g * width + (size_t)i * np + j];
        dA[(size_t)i * n + j] = s;
    }
    for (int k = 0; k < m; ++k) {
        double s = 0.0;
        for (int64_t g = 0; g < groups; ++g)
            s += aBT[g * width + (size_t)k * np + i];
        dB[(size_t)i * m + k] = s;
    }
    double s = 0.0;
    for (int64_t g = 0; g < groups; ++g)
        s += api[g * width + i];
    dpi[i] = s;
}

int hmm_batch_backward(hmm_batch *h, const double *gll, double *dA,
                       double *dB, double *dpi, int num_threads)
{
    const int n = h->n;
    const size_t width = acc_width(h);
    const int64_t groups = h->groups;
    const size_t acc_bytes = sizeof(double) * width * groups;
    double *acc;
    if (acc_bytes <= HMM_KEEP_ACC_BYTES) {
        if (!h->acc && !(h->acc = malloc(acc_bytes)))
            return -1;
        acc = h->acc;
        memset(acc, 0, acc_bytes);
    } else {
        acc = calloc(width * groups, sizeof(double));
        if (!acc)
            return -1;
    }
    int status = backward_any(h, gll, acc, groups, num_threads);
    if (status == 0) {
        /* Groups summed in order, element by element (any thread may take any
         * element: the order of the sum is fixed), on the threads the passes had:
         * a small batch's sum is too little work for a second thread to wait for. */
        const int nt = pass_threads(h, num_threads);
        if (nt > 1) {
            #pragma omp parallel for num_threads(nt) schedule(static)
            for (int i = 0; i < n; ++i)
                sum_groups(h, acc, width, groups, i, dA, dB, dpi);
        } else {
            for (int i = 0; i < n; ++i)
                sum_groups(h, acc, width, groups, i, dA, dB, dpi);
        }
    }
    if (acc != h->acc)
        free(acc);
    return status;
}

int hmm_batch_forward_dense(hmm_batch *h, const void *A, const void *pi, const void *logE,
                            double *ll, int num_threads)
{
    if (!h->dense)
        return -1;
    h->logE = logE;
    int status = forward_any(h, A, NULL, pi, num_threads);
    h->logE = NULL;
    if (status == 0)
        memcpy(ll, h->ll, sizeof(double) * h->batch);
    return status;
}

/* Zeroes the rows of dlogE (size, n) that lie in no sequence.  -1 if out of memory. */
static int zero_gaps(const hmm_batch *h, void *dlogE, size_t item)
{
    int64_t *pairs = malloc(sizeof(int64_t) * 2 * (h->batch ? h->batch : 1));
    if (!pairs)
        return -1;
    int64_t k = 0;
    for (int64_t b = 0; b < h->batch; ++b)
        if (h->lengths[b] > 0) {
            pairs[2 * k] = h->starts[b];
            pairs[2 * k + 1] = h->starts[b] + h->lengths[b];
            ++k;
        }
    qsort(pairs, k, 2 * sizeof(int64_t), cmp_pairs_asc);
    const size_t row = item * h->n;
    int64_t covered = 0;                /* rows before it are in a sequence or zeroed */
    for (int64_t i = 0; i <= k; ++i) {
        const int64_t next = i < k ? pairs[2 * i] : h->size;
        if (next > covered)
            memset((char *)dlogE + covered * row, 0, (size_t)(next - covered) * row);
        if (i < k && pairs[2 * i + 1] > covered)
            covered = pairs[2 * i + 1];
    }
    free(pairs);
    return 0;
}

int hmm_batch_backward_dense(hmm_batch *h, const double *gll, const void *logE, double *dA,
                             double *dpi, void *dlogE, int num_threads)
{
    if (!h->dense)
        return -1;
    const size_t item = h->dtype == HMM_FLOAT32 ? sizeof(float) : sizeof(double);
    const size_t bytes = (size_t)h->size * h->n * item;
    void *out = dlogE ? dlogE : malloc(bytes ? bytes : 1);     /* (the driver writes it anyway) */
    if (!out)
        return -1;
    /* The driver writes every row of every sequence (0 for those without a
     * gradient); the rows of no sequence (padding) are zeroed here. */
    if (zero_gaps(h, out, item) != 0) {
        if (!dlogE)
            free(out);
        return -1;
    }
    h->dlogE = out;
    h->logE = logE;
    h->stream_dlogE = dlogE && (h->n * item) % 64 == 0 && (uintptr_t)dlogE % 64 == 0
                      && bytes >= HMM_STREAM_BYTES;
    double dB;      /* m = 0: no emission table, never written */
    const int status = hmm_batch_backward(h, gll, dA, &dB, dpi, num_threads);
    h->dlogE = NULL;
    h->stream_dlogE = 0;
    h->logE = NULL;
    if (!dlogE)
        free(out);
    return status;
}

/* Viterbi: sequences of similar length (neighbours in the length order) are
 * advanced HMM_VITERBI_LANES at a time, one step of each in turn.  A step of
 * one sequence is a short chain of dependent adds, compares and blends
 * (delta_t needs all of delta_{t-1}); at small N that chain's latency, not
 * the arithmetic, bounds a sequence (about 40 cycles a step at N = 4).
 * Interleaving independent sequences lets the core overlap their chains:
 * measured at N = 4 (AVX-512, one thread, 500 sequences of 20..200), 1, 2, 4
 * and 8 lanes took 0.95, 0.63, 0.56 and 0.54 ms; at N = 16, where a step is
 * bound by throughput rather than latency, lanes made no difference.  Each
 * sequence goes through
 * exactly hmm_viterbi's operations, so results do not depend on the batch,
 * the grouping or the thread count. */
#define HMM_VITERBI_LANES 4

/* dense: a constant at each call; the emission row of step t of sequence b is
 * logE's row starts[b] + t (dense) or logBT's row of its symbol. */
static inline __attribute__((always_inline)) int
viterbi_batch(const int dense, int n, int64_t batch, const int32_t *obs,
              const int64_t *starts, const int64_t *lengths, const double *logA,
              const double *logBT, const double *logE, const double *logpi,
              double *log_prob, int32_t *paths, int num_threads)
{
    int64_t *order = malloc(sizeof(int64_t) * (batch ? batch : 1));
    const int64_t nseq = order ? order_by_length(batch, lengths, order) : -1;
    if (nseq < 0) {
        free(order);
        return -1;
    }
    for (int64_t b = 0; b < batch; ++b)
        if (lengths[b] <= 0)
            log_prob[b] = 0.0;
    const int64_t longest = nseq ? lengths[order[0]] : 1;
    /* Lanes per group: fewer when there are fewer sequences, or when each
     * thread's back pointers (lanes x longest x n) would pass 256 MB. */
    int64_t width = nseq < HMM_VITERBI_LANES ? (nseq ? nseq : 1) : HMM_VITERBI_LANES;
    while (width > 1 && (size_t)width * longest * n * sizeof(int32_t) > ((size_t)256 << 20))
        width /= 2;
    const int64_t ngroups = (nseq + width - 1) / width;
    int failed = 0;
    #pragma omp parallel num_threads(num_threads)
    {
        /* per thread: back pointers and two delta rows of each lane */
        int32_t *back = malloc(sizeof(int32_t) * width * (size_t)longest * n);
        double *work = malloc(sizeof(double) * width * 2 * (size_t)n);
        if (!back || !work) {
            #pragma omp atomic write
            failed = 1;
        }
        #pragma omp for schedule(dynamic)
        for (int64_t g = 0; g < ngroups; ++g) {
            if (!back || !work)
                continue;
            const int64_t first = g * width;
            const int lanes = (int)(nseq - first < width ? nseq - first : width);
            const int32_t *o[HMM_VITERBI_LANES];
            const double *le[HMM_VITERBI_LANES];
            int64_t len[HMM_VITERBI_LANES];
            for (int q = 0; q < lanes; ++q) {
                const int64_t b = order[first + q];
                o[q] = dense ? NULL : obs + starts[b];
                le[q] = dense ? logE + (size_t)starts[b] * n : NULL;
                len[q] = lengths[b];
                const double *e = dense ? le[q] : logBT + (size_t)o[q][0] * n;
                double *d = work + (size_t)q * 2 * n;
                for (int j = 0; j < n; ++j)
                    d[j] = logpi[j] + e[j];                  /* delta_0 */
            }
            /* lane 0 is the longest; a lane drops out when its sequence ends */
            for (int64_t t = 1; t < len[0]; ++t) {
                for (int q = 0; q < lanes; ++q) {
                    if (t >= len[q])
                        break;
                    double *w = work + (size_t)q * 2 * n;
                    hmm_viterbi_step(n, w + (size_t)((t - 1) & 1) * n, logA,
                                     dense ? le[q] + (size_t)t * n : logBT + (size_t)o[q][t] * n,
                                     w + (size_t)(t & 1) * n,
                                     back + ((size_t)q * longest + t) * n);
                }
            }
            for (int q = 0; q < lanes; ++q) {
                const int64_t b = order[first + q];
                log_prob[b] = hmm_viterbi_backtrace(
                    n, (int)len[q], work + (size_t)q * 2 * n + (size_t)((len[q] - 1) & 1) * n,
                    back + (size_t)q * longest * n, paths + starts[b]);
            }
        }
        free(back);
        free(work);
    }
    free(order);
    return failed ? -1 : 0;
}


int hmm_batch_viterbi(int n, int64_t batch, const int32_t *obs,
                      const int64_t *starts, const int64_t *lengths,
                      const double *logA, const double *logBT,
                      const double *logpi, double *log_prob, int32_t *paths,
                      int num_threads)
{
    return viterbi_batch(0, n, batch, obs, starts, lengths, logA, logBT, NULL, logpi, log_prob,
                         paths, num_threads);
}

int hmm_batch_viterbi_dense(int n, int64_t batch, const int64_t *starts,
                            const int64_t *lengths, const double *logA,
                            const double *logE, const double *logpi,
                            double *log_prob, int32_t *paths, int num_threads)
{
    return viterbi_batch(1, n, batch, NULL, starts, lengths, logA, NULL, logE, logpi, log_prob,
                         paths, num_threads);
}


/* Posteriors: one sequence after another on each thread (its forward into the
 * thread's scratch, then the posteriors from it), exactly as hmm_forward_scaled
 * and hmm_posteriors_scaled give them one at a time. */
int hmm_batch_posteriors(int n, int64_t batch, const int32_t *obs,
                         const int64_t *starts, const int64_t *lengths,
                         const double *A, const double *AT, const double *BT,
                         const double *pi, double *ll, double *gamma,
                         int num_threads)
{
    int64_t longest = 1;
    for (int64_t b = 0; b < batch; ++b)
        if (lengths[b] > longest)
            longest = lengths[b];
    int failed = 0;
    #pragma omp parallel num_threads(num_threads)
    {
        double *pred = malloc(sizeof(double) * (size_t)longest * n);
        double *scale = malloc(sizeof(double) * (size_t)longest);
        double *work = malloc(sizeof(double) * 3 * (size_t)n);   /* alpha, then the posteriors' 2n */
        if (!pred || !scale || !work) {
            #pragma omp atomic write
            failed = 1;
        }
        #pragma omp for schedule(dynamic, 4)
        for (int64_t b = 0; b < batch; ++b) {
            if (!pred || !scale || !work)
                continue;
            const int len = (int)lengths[b];
            if (len <= 0) {
                ll[b] = 0.0;
                continue;
            }
            const int32_t *o = obs + starts[b];
            double *g = gamma + (size_t)starts[b] * n;
            ll[b] = hmm_forward_scaled(n, len, A, BT, pi, o, pred, n, scale, work);
            if (ll[b] == -INFINITY) {
                for (size_t r = 0; r < (size_t)len * n; ++r)
                    g[r] = NAN;                             /* no posterior of an impossible sequence */
            } else {
                hmm_posteriors_scaled(n, len, AT, BT, o, pred, scale, g, work + n);
            }
        }
        free(pred);
        free(scale);
        free(work);
    }
    return failed ? -1 : 0;
}


void hmm_batch_sample(int n, int m, int64_t count, int len, const double *cumA,
                      const double *cumB, const double *cumpi, const double *u,
                      int32_t *states, int32_t *obs, int num_threads)
{
    #pragma omp parallel for num_threads(num_threads) schedule(static)
    for (int64_t b = 0; b < count; ++b)
        hmm_sample(n, m, len, cumA, cumB, cumpi, u + (size_t)b * 2 * len,
                   states + (size_t)b * len, obs + (size_t)b * len);
}
