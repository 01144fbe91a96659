/* hmm_mix: see hmm_mix.h. */
#include "hmm_mix.h"

#include <math.h>

/* One state's K components c -> its log-sum-exp; r (NULL or K values, may be c) the
 * responsibilities. */
static inline double mix_state(int K, const double *c, double *r)
{
    double top = c[0];
    int nan = isnan(top);
    for (int k = 1; k < K; k++) {
        double v = c[k];
        if (isnan(v))
            nan = 1;
        else if (v > top)
            top = v;
    }
    if (nan || !isfinite(top))
        top = 0.0;
    double e[K];
    double total = 0.0;
    for (int k = 0; k < K; k++) {
        e[k] = exp(c[k] - top);
        total += e[k];
    }
    if (r) {
        for (int k = 0; k < K; k++) {
            double v = e[k] / total;
            r[k] = isfinite(v) ? v : 0.0;
        }
    }
    return log(total) + top;
}

void hmm_mix_logsumexp(int64_t n, int N, int K, const double *comp, double *out, double *resp,
                       int num_threads)
{
    const int64_t S = (int64_t)N * K;
    if (num_threads < 1)
        num_threads = 1;
    #pragma omp parallel for num_threads(num_threads) schedule(static, 256) if (num_threads > 1)
    for (int64_t t = 0; t < n; t++) {
        const double *c = comp + t * S;
        double *o = out + t * N;
        double *r = resp ? resp + t * S : 0;
        if (K == 1) {
            for (int i = 0; i < N; i++) {
                double v = c[i];
                o[i] = v;
                if (r)
                    r[i] = isfinite(v) ? 1.0 : 0.0;
            }
            continue;
        }
        for (int i = 0; i < N; i++)
            o[i] = mix_state(K, c + (int64_t)i * K, r ? r + (int64_t)i * K : 0);
    }
}
