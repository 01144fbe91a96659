#include "hmm_kernel.h"

#include <math.h>

double hmm_forward_scaled(int n, int len, const double *restrict A,
                          const double *restrict BT, const double *restrict pi,
                          const int32_t *restrict obs, double *restrict pred,
                          ptrdiff_t pred_stride, double *restrict scale,
                          double *restrict alpha)
{
    double ll = 0.0;
    for (int t = 0; t < len; ++t) {
        double *restrict p = pred + t * pred_stride;
        if (t == 0) {
            for (int j = 0; j < n; ++j)
                p[j] = pi[j];
        } else {
            for (int j = 0; j < n; ++j)
                p[j] = 0.0;
            for (int i = 0; i < n; ++i) {
                const double a = alpha[i];
                const double *restrict Ai = A + (size_t)i * n;
#pragma omp simd
                for (int j = 0; j < n; ++j)
                    p[j] += a * Ai[j];
            }
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
        ll += log(c);
    }
    return ll;
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
 * incoming gradient g is folded into beta_hat (the recursion is linear). */
void hmm_backward_scaled(int n, int len, const double *restrict A,
                         const double *restrict BT,
                         const int32_t *restrict obs,
                         const double *restrict pred,
                         const double *restrict scale, double g,
                         double *restrict dA, double *restrict dBT,
                         double *restrict dpi, double *restrict work)
{
    double *restrict w = work;         /* g * beta_hat_t */
    double *restrict u = work + n;     /* B[:,o_t] * w / c_t */
    double *restrict a = work + 2 * n; /* alpha_hat_{t-1} */
    for (int j = 0; j < n; ++j)
        w[j] = g;
    for (int t = len - 1; t >= 0; --t) {
        const double *restrict e = BT + (size_t)obs[t] * n;
        const double *restrict p = pred + (size_t)t * n;
        double *restrict de = dBT + (size_t)obs[t] * n;
        const double ic = 1.0 / scale[t];
        for (int j = 0; j < n; ++j) {
            const double r = w[j] * ic;
            de[j] += p[j] * r;
            u[j] = e[j] * r;
        }
        if (t == 0) {
            for (int j = 0; j < n; ++j)
                dpi[j] += u[j];
            break;
        }
        const double *restrict pp = pred + (size_t)(t - 1) * n;
        const double *restrict ep = BT + (size_t)obs[t - 1] * n;
        const double icp = 1.0 / scale[t - 1];
        for (int i = 0; i < n; ++i)
            a[i] = pp[i] * ep[i] * icp;
        /* One sweep over the rows of A and dA does both the outer-product
         * update of dA and the product A @ u for the next beta_hat. */
        for (int i = 0; i < n; ++i) {
            const double ai = a[i];
            const double *restrict Ai = A + (size_t)i * n;
            double *restrict dAi = dA + (size_t)i * n;
            double s = 0.0;
#pragma omp simd reduction(+ : s)
            for (int j = 0; j < n; ++j) {
                dAi[j] += ai * u[j];
                s += Ai[j] * u[j];
            }
            w[i] = s;
        }
    }
}
