#include "hmm_kernel.h"

#include <float.h>
#include <math.h>
#include <string.h>

/* out (n) = v (n) @ M (n, n), M row-major: out is a sum of rows of M.
 * Eight (then four, then one) rows per sweep over out: fewer loads and stores
 * of out and independent multiply-adds.  Row pointers rather than i*n + j
 * indexing, which -fwrapv (in Python's CFLAGS) would keep from vectorising. */
static void vecmat(int n, const double *restrict v, const double *restrict M,
                   double *restrict out)
{
    for (int j = 0; j < n; ++j)
        out[j] = 0.0;
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        const double *restrict M0 = M + (size_t)i * n;
        const double *restrict M1 = M0 + n, *restrict M2 = M1 + n;
        const double *restrict M3 = M2 + n, *restrict M4 = M3 + n;
        const double *restrict M5 = M4 + n, *restrict M6 = M5 + n;
        const double *restrict M7 = M6 + n;
        const double v0 = v[i], v1 = v[i + 1], v2 = v[i + 2], v3 = v[i + 3];
        const double v4 = v[i + 4], v5 = v[i + 5], v6 = v[i + 6], v7 = v[i + 7];
#pragma omp simd
        for (int j = 0; j < n; ++j)
            out[j] += ((v0 * M0[j] + v1 * M1[j]) + (v2 * M2[j] + v3 * M3[j]))
                    + ((v4 * M4[j] + v5 * M5[j]) + (v6 * M6[j] + v7 * M7[j]));
    }
    for (; i + 4 <= n; i += 4) {
        const double *restrict M0 = M + (size_t)i * n;
        const double *restrict M1 = M0 + n, *restrict M2 = M1 + n;
        const double *restrict M3 = M2 + n;
        const double v0 = v[i], v1 = v[i + 1], v2 = v[i + 2], v3 = v[i + 3];
#pragma omp simd
        for (int j = 0; j < n; ++j)
            out[j] += (v0 * M0[j] + v1 * M1[j]) + (v2 * M2[j] + v3 * M3[j]);
    }
    for (; i < n; ++i) {
        const double vi = v[i];
        const double *restrict Mi = M + (size_t)i * n;
#pragma omp simd
        for (int j = 0; j < n; ++j)
            out[j] += vi * Mi[j];
    }
}

double hmm_forward_scaled(int n, int len, const double *restrict A,
                          const double *restrict BT, const double *restrict pi,
                          const int32_t *restrict obs, double *restrict pred,
                          ptrdiff_t pred_stride, double *restrict scale,
                          double *restrict alpha)
{
    /* log P = sum_t log c_t, taken as the log of running products of the
     * c_t: a log per step costs a third of the step at small n.  A product
     * is flushed into ll before it can leave [2^-900, 2^900], and a c_t
     * outside [2^-400, 2^400] (unnormalised parameters) goes to ll on its
     * own; the extra rounding is one ulp per factor of a product, ~1e-16
     * relative in ll. */
    double ll = 0.0, prod = 1.0;
    for (int t = 0; t < len; ++t) {
        double *restrict p = pred + t * pred_stride;
        if (t == 0) {
            for (int j = 0; j < n; ++j)
                p[j] = pi[j];
        } else {
            vecmat(n, alpha, A, p);                 /* pred_t = alpha_hat_{t-1} @ A */
        }
        const double *restrict e = BT + (size_t)obs[t] * n;
        double c = 0.0;
        for (int j = 0; j < n; ++j) {
            const double v = p[j] * e[j];
            alpha[j] = v;
            c += v;
        }
        scale[t] = c;
        if (c == 0.0)
            return -INFINITY;
        const double inv = 1.0 / c;
        for (int j = 0; j < n; ++j)
            alpha[j] *= inv;
        if (c > 0x1p-400 && c < 0x1p400) {
            prod *= c;
            if (prod < 0x1p-500 || prod > 0x1p500) {
                ll += log(prod);
                prod = 1.0;
            }
        } else {
            ll += log(c);
        }
    }
    return ll + log(prod);
}

/* See hmm_kernel.h.  The categorical forward's recursion with a per-step
 * shift; the log of c_t is taken per step (no running product: the shifts
 * must be added anyway, and this is the rare path). */
/* The body of both: lost NULL, no check (hmm_dense_forward_scaled), else
 * the check of hmm_dense_forward_scaled_checked. */
static inline __attribute__((always_inline)) double
dense_forward_body(int n, int len, const double *restrict A, const double *restrict pi,
                   const double *restrict logE, double *restrict E, double *restrict pred,
                   double *restrict scale, double *restrict alpha, double floor_alpha,
                   int *lost)
{
    double ll = 0.0;
    if (lost)
        *lost = 0;
    for (int t = 0; t < len; ++t) {
        double *restrict p = pred + (size_t)t * n;
        const double *restrict le = logE + (size_t)t * n;
        double *restrict e = E + (size_t)t * n;
        if (t == 0) {
            for (int j = 0; j < n; ++j)
                p[j] = pi[j];
        } else {
            vecmat(n, alpha, A, p);
        }
        double s = -INFINITY;
        for (int j = 0; j < n; ++j) {
            if (le[j] != le[j])
                return NAN;                         /* NaN in, NaN out (E, pred unwritten) */
            s = le[j] > s ? le[j] : s;
        }
        if (s == -INFINITY)
            return -INFINITY;                       /* no state can emit it */
        double c = 0.0;
        for (int j = 0; j < n; ++j) {
            e[j] = exp(le[j] - s);
            c += p[j] * e[j];
        }
        if (!(c >= 0x1p-900)) {
            /* The likeliest emitter is (next to) unreachable: shift by the
             * largest log pred + logE instead, so that c_t >= 1 unless the
             * step is impossible.  (Unreachable states may then get huge E:
             * only their gradient, not ll, sees it.) */
            double s2 = -INFINITY;
            for (int j = 0; j < n; ++j)
                if (p[j] > 0.0 && le[j] + log(p[j]) > s2)
                    s2 = le[j] + log(p[j]);
            if (s2 == -INFINITY)
                return -INFINITY;
            s = s2;
            c = 0.0;
            for (int j = 0; j < n; ++j) {
                /* capped where unreachable, so that 0 * E stays 0 (not NaN) */
                e[j] = p[j] > 0.0 ? exp(le[j] - s) : exp(fmin(le[j] - s, 700.0));
                c += p[j] > 0.0 ? p[j] * e[j] : 0.0;
            }
        }
        scale[t] = c;
        if (lost && !*lost) {
            /* a state of nonzero probability whose term left double's full precision */
            const double floor = fmax(0x1p-1000, floor_alpha * c);
            for (int j = 0; j < n; ++j)
                if (p[j] > 0.0 && le[j] > -INFINITY && p[j] * e[j] < floor)
                    *lost = 1;
        }
        const double inv = 1.0 / c;
        for (int j = 0; j < n; ++j)
            alpha[j] = p[j] > 0.0 ? p[j] * e[j] * inv : 0.0;
        ll += log(c) + s;
    }
    return ll;
}

double hmm_dense_forward_scaled(int n, int len, const double *restrict A,
                                const double *restrict pi, const double *restrict logE,
                                double *restrict E, double *restrict pred,
                                double *restrict scale, double *restrict alpha)
{
    return dense_forward_body(n, len, A, pi, logE, E, pred, scale, alpha, 0.0, NULL);
}

double hmm_dense_forward_scaled_checked(int n, int len, const double *restrict A,
                                        const double *restrict pi, const double *restrict logE,
                                        double *restrict E, double *restrict pred,
                                        double *restrict scale, double *restrict alpha,
                                        double floor_alpha, int *lost)
{
    return dense_forward_body(n, len, A, pi, logE, E, pred, scale, alpha, floor_alpha, lost);
}

/* log sum_i exp(x[i] + y[i]) over n terms: -INFINITY if every term is. */
static double log_sum_exp2(int n, const double *restrict x, const double *restrict y)
{
    double m = -INFINITY;
    for (int i = 0; i < n; ++i)
        m = x[i] + y[i] > m ? x[i] + y[i] : m;
    if (m == -INFINITY)
        return -INFINITY;
    double s = 0.0;
    for (int i = 0; i < n; ++i)
        s += exp(x[i] + y[i] - m);
    return m + log(s);
}

/* log sum_i exp(x[i]) over n terms: -INFINITY if every term is. */
static double log_sum_exp(int n, const double *restrict x)
{
    double m = -INFINITY;
    for (int i = 0; i < n; ++i)
        m = x[i] > m ? x[i] : m;
    if (m == -INFINITY)
        return -INFINITY;
    double s = 0.0;
    for (int i = 0; i < n; ++i)
        s += exp(x[i] - m);
    return m + log(s);
}

double hmm_dense_forward_log(int n, int len, const double *restrict logAT,
                             const double *restrict logpi, const double *restrict logE,
                             double *restrict la, double *restrict lc)
{
    double ll = 0.0;
    for (int t = 0; t < len; ++t) {
        const double *restrict le = logE + (size_t)t * n;
        double *restrict v = la + (size_t)t * n;
        for (int j = 0; j < n; ++j)
            if (le[j] != le[j])
                return NAN;
        for (int j = 0; j < n; ++j) {
            if (le[j] == -INFINITY)
                v[j] = -INFINITY;
            else if (t == 0)
                v[j] = logpi[j] + le[j];
            else        /* log pred_t(j) = log sum_i alpha_hat_{t-1}(i) A[i, j] */
                v[j] = log_sum_exp2(n, la + (size_t)(t - 1) * n, logAT + (size_t)j * n) + le[j];
        }
        const double c = log_sum_exp(n, v);
        if (c == -INFINITY)
            return -INFINITY;
        lc[t] = c;
        for (int j = 0; j < n; ++j)
            v[j] -= c;
        ll += c;
    }
    return ll;
}

void hmm_dense_backward_log(int n, int len, const double *restrict logA,
                            const double *restrict logE, const double *restrict la,
                            const double *restrict lc, double g, double *restrict dA,
                            double *restrict dpi, double *restrict gamma, double *restrict work)
{
    double *restrict lb = work;             /* lb_t */
    double *restrict w = work + n;          /* logE[t] + lb_t - lc[t] */
    double *restrict nb = work + 2 * (size_t)n;
    for (int j = 0; j < n; ++j)
        lb[j] = 0.0;
    for (int t = len - 1; t >= 0; --t) {
        const double *restrict le = logE + (size_t)t * n;
        const double *restrict a = la + (size_t)t * n;
        double *restrict gm = gamma + (size_t)t * n;
        double sum = 0.0;
        for (int j = 0; j < n; ++j) {
            gm[j] = exp(a[j] + lb[j]);      /* a = -inf: 0 (lb is finite or -inf) */
            sum += gm[j];
            w[j] = le[j] + lb[j] - lc[t];
        }
        /* The step's posteriors sum to 1: the logs' rounding (absolute, ~1e-12 at scores of
         * 1e4) shared by the row's terms and the step's xi terms is divided out. */
        const double gs = sum > 0.0 ? g / sum : g;
        for (int j = 0; j < n; ++j)
            gm[j] *= gs;
        if (t == 0) {
            for (int i = 0; i < n; ++i)
                dpi[i] += gs * fmin(exp(w[i]), DBL_MAX);
            break;
        }
        const double *restrict ap = la + (size_t)(t - 1) * n;
        for (int i = 0; i < n; ++i) {
            double *restrict d = dA + (size_t)i * n;
            if (ap[i] != -INFINITY)
                for (int j = 0; j < n; ++j)
                    d[j] += gs * fmin(exp(ap[i] + w[j]), DBL_MAX);
            nb[i] = log_sum_exp2(n, logA + (size_t)i * n, w);
        }
        memcpy(lb, nb, sizeof(double) * n);
    }
}

/* dA += X^T Y for X, Y (k, n) row-major: the sum of k outer products
 * x_r (outer) y_r.  Each 16-wide slice of a dA row stays in registers over
 * the k rows (independent accumulation chains), so dA is read and
 * written once per block rather than once per time step. */
static void add_outer_products(int n, int k, const double *restrict X,
                               const double *restrict Y, double *restrict dA)
{
    enum { W = 16 };
    for (int i = 0; i < n; ++i) {
        double *restrict Di = dA + (size_t)i * n;
        int j = 0;
        for (; j + W <= n; j += W) {
            double acc[W];
            for (int q = 0; q < W; ++q)
                acc[q] = Di[j + q];
            for (int r = 0; r < k; ++r) {
                const double x = X[(size_t)r * n + i];
                const double *restrict y = Y + (size_t)r * n + j;
                for (int q = 0; q < W; ++q)
                    acc[q] += x * y[q];
            }
            for (int q = 0; q < W; ++q)
                Di[j + q] = acc[q];
        }
        for (; j < n; ++j) {
            double acc = Di[j];
            for (int r = 0; r < k; ++r)
                acc += X[(size_t)r * n + i] * Y[(size_t)r * n + j];
            Di[j] = acc;
        }
    }
}

/* Derivation.  With unscaled alpha_t, beta_t and P = P(obs), the scaled
 * quantities are alpha_hat_t = alpha_t / (c_1..c_t) and
 * beta_hat_t = beta_t / (c_{t+1}..c_T), with beta_hat_T = 1 and
 *   beta_hat_{t-1}(i) = sum_j A[i,j] B[j,o_t] beta_hat_t(j) / c_t.
 * P is linear in each parameter occurrence, so with r_t = beta_hat_t / c_t
 * and u_t = B[:,o_t] * r_t:
 *   d log P / d pi[i]     = u_1(i)
 *   d log P / d A[i,j]    = sum_{t>1} alpha_hat_{t-1}(i) u_t(j)
 *   d log P / d B[j,o_t] += pred_t(j) r_t(j)     (pred_t = alpha_hat_{t-1} A)
 * No division by a parameter, so zero probabilities are harmless.  The
 * incoming gradient g is folded into beta_hat (the recursion is linear).
 * The dA sum is taken HMM_BLOCK steps at a time (add_outer_products). */
/* The body of both backwards: categorical (dense = 0: the emission of step t
 * is row obs[t] of BT, its gradient added to dBT) or dense (dense = 1: row t
 * of E, its gradient g * gamma_t = pred_t * E_t * r_t written to gamma). */
static inline __attribute__((always_inline)) void
backward_body(const int dense, int n, int len, const double *restrict AT,
              const double *restrict BT, const int32_t *restrict obs,
              const double *restrict E, const double *restrict pred,
              const double *restrict scale, double g, double *restrict dA,
              double *restrict dBT, double *restrict dpi, double *restrict gamma,
              double *restrict work)
{
    double *restrict w = work;                         /* g * beta_hat_t */
    double *restrict X = work + n;                     /* alpha_hat_{t-1} rows */
    double *restrict U = X + (size_t)HMM_BLOCK * n;    /* u_t rows */
    int k = 0;                                         /* rows held in X, U */
    for (int j = 0; j < n; ++j)
        w[j] = g;
    for (int t = len - 1; t >= 0; --t) {
        const double *restrict e = dense ? E + (size_t)t * n : BT + (size_t)obs[t] * n;
        const double *restrict p = pred + (size_t)t * n;
        double *restrict u = U + (size_t)k * n;
        const double ic = 1.0 / scale[t];
        if (dense) {
            /* An unreachable state (p = 0) after a second shift may have a huge E:
             * u is capped (so that A's zeros times u stay 0, not NaN), its gamma is 0. */
            double *restrict gm = gamma + (size_t)t * n;
            for (int j = 0; j < n; ++j) {
                const double r = w[j] * ic;
                u[j] = fmin(e[j] * r, DBL_MAX);
                gm[j] = p[j] > 0.0 ? p[j] * u[j] : 0.0;
            }
        } else {
            double *restrict de = dBT + (size_t)obs[t] * n;
            for (int j = 0; j < n; ++j) {
                const double r = w[j] * ic;
                de[j] += p[j] * r;
                u[j] = e[j] * r;
            }
        }
        if (t == 0) {
            for (int j = 0; j < n; ++j)
                dpi[j] += u[j];
            break;
        }
        const double *restrict pp = pred + (size_t)(t - 1) * n;
        const double *restrict ep = dense ? E + (size_t)(t - 1) * n : BT + (size_t)obs[t - 1] * n;
        double *restrict a = X + (size_t)k * n;
        const double icp = 1.0 / scale[t - 1];
        for (int i = 0; i < n; ++i)
            a[i] = pp[i] * ep[i] * icp;
        vecmat(n, u, AT, w);                        /* beta_hat_{t-1} = A @ u_t */
        if (dense)
            for (int j = 0; j < n; ++j)
                w[j] = fmin(w[j], DBL_MAX);
        if (++k == HMM_BLOCK || t == 1) {
            add_outer_products(n, k, X, U, dA);
            k = 0;
        }
    }
}

void hmm_backward_scaled(int n, int len, const double *restrict AT,
                         const double *restrict BT,
                         const int32_t *restrict obs,
                         const double *restrict pred,
                         const double *restrict scale, double g,
                         double *restrict dA, double *restrict dBT,
                         double *restrict dpi, double *restrict work)
{
    backward_body(0, n, len, AT, BT, obs, NULL, pred, scale, g, dA, dBT, dpi, NULL, work);
}

/* The same derivation with E_t in place of B[:, o_t]: d log P / d logE[t, i]
 * = E[t, i] d log P / d E[t, i] = pred_t(i) E[t, i] r_t(i) = gamma_t(i) (the
 * shifts s_t cancel: log P is exactly sum_t log c_t + s_t for any s_t). */
void hmm_dense_backward_scaled(int n, int len, const double *restrict AT,
                               const double *restrict E, const double *restrict pred,
                               const double *restrict scale, double g,
                               double *restrict dA, double *restrict dpi,
                               double *restrict gamma, double *restrict work)
{
    backward_body(1, n, len, AT, NULL, NULL, E, pred, scale, g, dA, NULL, dpi, gamma, work);
}

/* Viterbi, as hmmlearn 0.3.3 computes it (see the header): the same sums and
 * maxima in the same order, so the log probability matches bit for bit
 * given the same logs (numpy's log and std::log may differ by an ulp).
 * Back pointers: >= while scanning i upwards keeps the highest index among
 * ties (n-1 when every candidate is -inf); the final argmax uses strict >,
 * the lowest index.  delta_{t-1} and delta_t alternate between the two
 * halves of work. */
/* Viterbi's inner step, max-plus over predecessors, for 4 successors at a
 * time in GCC/Clang vector registers (4 doubles: one AVX2 register, or two
 * SSE2 ones).  Plain loops did not vectorise well here: with best and its
 * argmax kept in memory every predecessor i waits on the previous one's
 * store, and the compiler's own unrolled blocks fell back to scalar code.
 * Two chains (even and odd i) keep two independent dependency chains in
 * flight; they are merged at the end with the same tie rule. */
typedef double v4d __attribute__((vector_size(32)));
typedef long long v4l __attribute__((vector_size(32)));
typedef double v8d __attribute__((vector_size(64)));
typedef long long v8l __attribute__((vector_size(64)));

/* dn[j] = max_i (d[i] + logA[i, j]) + e[j] and bk[j] = its argmax, for the
 * W = 4 or 8 successors j0 .. j0+W-1.  i ascends and >= keeps the later of
 * equal candidates, so among ties the highest i wins (hmmlearn's
 * backtrace); the argmax is carried as a double so that each lane's choice
 * is one blend.  (A macro, as C has no templates over the vector width.) */
#define VITERBI_BLOCK(NAME, W, VD, VL)                                          \
static void NAME(int n, int j0, const double *restrict d,                      \
                 const double *restrict logA, const double *restrict e,        \
                 double *restrict dn, int32_t *restrict bk)                    \
{                                                                              \
    VD best0, best1, arg0, arg1, x, i0, i1;                                    \
    for (int q = 0; q < W; ++q) {                                              \
        best0[q] = best1[q] = -INFINITY;                                       \
        arg0[q] = arg1[q] = 0.0;                                               \
        i0[q] = 0.0;                                                           \
        i1[q] = 1.0;                                                           \
    }                                                                          \
    int i = 0;                                                                 \
    /* i0, i1: i and i + 1 in every lane, stepped by 2 (no conversion per i) */ \
    for (; i + 2 <= n; i += 2, i0 += 2.0, i1 += 2.0) {                         \
        memcpy(&x, logA + (size_t)i * n + j0, sizeof x);                       \
        const VD v0 = d[i] + x;                                                \
        memcpy(&x, logA + (size_t)(i + 1) * n + j0, sizeof x);                 \
        const VD v1 = d[i + 1] + x;                                            \
        const VL t0 = v0 >= best0, t1 = v1 >= best1;                           \
        best0 = (VD)(((VL)v0 & t0) | ((VL)best0 & ~t0));                      \
        arg0 = (VD)(((VL)i0 & t0) | ((VL)arg0 & ~t0));                         \
        best1 = (VD)(((VL)v1 & t1) | ((VL)best1 & ~t1));                       \
        arg1 = (VD)(((VL)i1 & t1) | ((VL)arg1 & ~t1));                         \
    }                                                                          \
    if (i < n) {                                                               \
        memcpy(&x, logA + (size_t)i * n + j0, sizeof x);                       \
        const VD v1 = d[i] + x;                                                \
        const VL t1 = v1 >= best1;                                             \
        best1 = (VD)(((VL)v1 & t1) | ((VL)best1 & ~t1));                       \
        arg1 = (VD)(((VL)((VD){0} + i) & t1) | ((VL)arg1 & ~t1));              \
    }                                                                          \
    /* chain 1 wins when larger, or equal with the higher predecessor */      \
    const VL t = (best1 > best0) | ((best1 == best0) & (arg1 > arg0));         \
    const VD best = (VD)(((VL)best1 & t) | ((VL)best0 & ~t));                  \
    const VD arg = (VD)(((VL)arg1 & t) | ((VL)arg0 & ~t));                     \
    for (int q = 0; q < W; ++q) {                                              \
        dn[j0 + q] = best[q] + e[j0 + q];                                      \
        bk[j0 + q] = (int32_t)arg[q];                                          \
    }                                                                          \
}

VITERBI_BLOCK(viterbi_block8, 8, v8d, v8l)
VITERBI_BLOCK(viterbi_block4, 4, v4d, v4l)

/* n = 4 exactly: one vector holds all successors, one chain over i (fewer
 * operations than two chains and their merge; a batch driver that
 * interleaves sequences hides the longer chain). */
static void viterbi_n4(const double *restrict d, const double *restrict logA,
                       const double *restrict e, double *restrict dn,
                       int32_t *restrict bk)
{
    v4d best, arg, x;
    memcpy(&x, logA, sizeof x);
    best = d[0] + x;
    arg = (v4d){0};
    for (int i = 1; i < 4; ++i) {
        memcpy(&x, logA + (size_t)i * 4, sizeof x);
        const v4d v = d[i] + x;
        const v4l t = v >= best;
        best = (v4d)(((v4l)v & t) | ((v4l)best & ~t));
        arg = (v4d)(((v4l)((v4d){0} + i) & t) | ((v4l)arg & ~t));
    }
    memcpy(&x, e, sizeof x);
    best += x;
    memcpy(dn, &best, sizeof best);
    for (int q = 0; q < 4; ++q)
        bk[q] = (int32_t)arg[q];
}

/* The same for one successor j, for the last n % 4. */
static void viterbi_one(int n, int j, const double *restrict d,
                        const double *restrict logA, const double *restrict e,
                        double *restrict dn, int32_t *restrict bk)
{
    double best = -INFINITY;
    int32_t arg = 0;
    for (int i = 0; i < n; ++i) {
        const double v = d[i] + logA[(size_t)i * n + j];
        if (v >= best) {
            best = v;
            arg = i;
        }
    }
    dn[j] = best + e[j];
    bk[j] = arg;
}

void hmm_viterbi_step(int n, const double *restrict d,
                      const double *restrict logA, const double *restrict e,
                      double *restrict dn, int32_t *restrict bk)
{
    if (n == 4) {
        viterbi_n4(d, logA, e, dn, bk);
        return;
    }
    int j0 = 0;
    for (; j0 + 8 <= n; j0 += 8)
        viterbi_block8(n, j0, d, logA, e, dn, bk);
    for (; j0 + 4 <= n; j0 += 4)
        viterbi_block4(n, j0, d, logA, e, dn, bk);
    for (; j0 < n; ++j0)
        viterbi_one(n, j0, d, logA, e, dn, bk);
}

double hmm_viterbi_backtrace(int n, int len, const double *restrict d,
                             const int32_t *restrict back,
                             int32_t *restrict path)
{
    double best = -INFINITY;
    int32_t last = 0;
    for (int j = 0; j < n; ++j) {
        if (d[j] > best) {
            best = d[j];
            last = j;
        }
    }
    path[len - 1] = last;
    for (int t = len - 1; t > 0; --t)
        path[t - 1] = back[(size_t)t * n + path[t]];
    return best;
}

double hmm_viterbi(int n, int len, const double *restrict logA,
                   const double *restrict logBT, const double *restrict logpi,
                   const int32_t *restrict obs, double *restrict work,
                   int32_t *restrict back, int32_t *restrict path)
{
    {
        const double *restrict e = logBT + (size_t)obs[0] * n;
        for (int j = 0; j < n; ++j)
            work[j] = logpi[j] + e[j];                 /* delta_0 */
    }
    for (int t = 1; t < len; ++t)                      /* delta_t from delta_{t-1} */
        hmm_viterbi_step(n, work + (size_t)((t - 1) & 1) * n, logA,
                         logBT + (size_t)obs[t] * n, work + (size_t)(t & 1) * n,
                         back + (size_t)t * n);
    return hmm_viterbi_backtrace(n, len, work + (size_t)((len - 1) & 1) * n,
                                 back, path);
}

/* gamma_t = alpha_hat_t * beta_hat_t (elementwise), the c products cancel:
 *   alpha_hat_t     = pred_t * B[:, o_t] / c_t
 *   beta_hat_{len-1} = 1,  beta_hat_{t-1} = A @ (B[:, o_t] * beta_hat_t) / c_t
 * so with u_t = B[:, o_t] * beta_hat_t / c_t (n): gamma_t = pred_t * u_t and
 * beta_hat_{t-1} = A @ u_t = u_t @ AT. */
void hmm_posteriors_scaled(int n, int len, const double *restrict AT,
                           const double *restrict BT,
                           const int32_t *restrict obs,
                           const double *restrict pred,
                           const double *restrict scale,
                           double *restrict gamma, double *restrict work)
{
    double *restrict w = work;                         /* beta_hat_t */
    double *restrict u = work + n;                     /* u_t */
    for (int j = 0; j < n; ++j)
        w[j] = 1.0;
    for (int t = len - 1; t >= 0; --t) {
        const double *restrict e = BT + (size_t)obs[t] * n;
        const double *restrict p = pred + (size_t)t * n;
        double *restrict g = gamma + (size_t)t * n;
        const double ic = 1.0 / scale[t];
        for (int j = 0; j < n; ++j) {
            const double v = e[j] * ic * w[j];
            u[j] = v;
            g[j] = p[j] * v;
        }
        if (t > 0)
            vecmat(n, u, AT, w);
    }
}

/* Index drawn by u from a cumulative row cum (k,): the smallest i with
 * cum[i] > u (binary search; cum is non-decreasing), which always has
 * positive probability.  If none, the last index whose probability
 * cum[i] - cum[i-1] (cum[0] for i = 0) is positive; 0 for an all-zero row. */
static int32_t pick(int k, const double *restrict cum, double u)
{
    int lo = 0, hi = k;
    while (lo < hi) {
        const int mid = lo + (hi - lo) / 2;
        if (cum[mid] > u)
            hi = mid;
        else
            lo = mid + 1;
    }
    if (lo < k)
        return lo;
    for (int i = k - 1; i > 0; --i)
        if (cum[i] > cum[i - 1])
            return i;
    return 0;
}

void hmm_sample(int n, int m, int len, const double *restrict cumA,
                const double *restrict cumB, const double *restrict cumpi,
                const double *restrict u, int32_t *restrict states,
                int32_t *restrict obs)
{
    int32_t s = 0;
    for (int t = 0; t < len; ++t) {
        s = pick(n, t == 0 ? cumpi : cumA + (size_t)s * n, u[2 * (size_t)t]);
        states[t] = s;
        obs[t] = pick(m, cumB + (size_t)s * m, u[2 * (size_t)t + 1]);
    }
}
