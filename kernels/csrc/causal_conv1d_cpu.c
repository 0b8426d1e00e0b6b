/* Depthwise causal convolution over time followed by SiLU, channels last (Mamba's conv branch).
 *
 *     p[b, t, d] = bias[d] + sum_k w[d, k] * x[b, t - K + 1 + k, d]      (x before t = 0 is zero)
 *     y[b, t, d] = p * sigmoid(p)
 *
 * x, y, dy, dx: (batch, L, dim) with element strides (sb, st, 1) (x and dy may be views; y and dx are
 * written contiguous); w, dw: (dim, K) contiguous; bias, dbias: (dim,) or NULL. The backward recomputes p,
 * so the forward saves nothing; dw and dbias are accumulated into (the caller zeroes them and gives each
 * thread, which owns a disjoint batch slice, its own buffers). Inner loops run over contiguous channels.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sscan_common.h"

#define DEFINE_CONV(T, SUFFIX, EXP)                                                                        \
    /* p for step t of one batch row into out (dim,) */                                                    \
    static inline void conv_pre_##SUFFIX(const T *xb, int64_t x_st, int64_t t, int64_t dim, int64_t K,    \
                                         const T *wt, const T *bias, T *restrict out) {                    \
        SSCAN_SIMD                                                                                         \
        for (int64_t d = 0; d < dim; ++d) out[d] = bias ? bias[d] : 0;                                     \
        for (int64_t k = 0; k < K; ++k) {                                                                  \
            const int64_t s = t - K + 1 + k;                                                               \
            if (s < 0) continue;                                                                           \
            const T *restrict xs = xb + s * x_st, *restrict wk = wt + k * dim;                             \
            SSCAN_SIMD                                                                                     \
            for (int64_t d = 0; d < dim; ++d) out[d] += wk[d] * xs[d];                                     \
        }                                                                                                  \
    }                                                                                                      \
                                                                                                           \
    SSCAN_CLONES                                                                                           \
    void cconv_fwd_##SUFFIX(int64_t batch, int64_t L, int64_t dim, int64_t K, const T *x, int64_t x_sb,    \
                            int64_t x_st, const T *w, const T *bias, T *y) {                               \
        /* taps transposed to (K, dim) so that a tap's weights are contiguous over channels */             \
        T *wt = (T *)malloc((size_t)(K * dim) * sizeof(T));                                                \
        if (!wt) return;                                                                                   \
        for (int64_t d = 0; d < dim; ++d)                                                                  \
            for (int64_t k = 0; k < K; ++k) wt[k * dim + d] = w[d * K + k];                                \
        for (int64_t b = 0; b < batch; ++b) {                                                              \
            for (int64_t t = 0; t < L; ++t) {                                                              \
                T *restrict yt = y + (b * L + t) * dim;                                                    \
                conv_pre_##SUFFIX(x + b * x_sb, x_st, t, dim, K, wt, bias, yt);                            \
                SSCAN_SIMD                                                                                 \
                for (int64_t d = 0; d < dim; ++d) yt[d] = yt[d] / (1 + EXP(-yt[d]));                       \
            }                                                                                              \
        }                                                                                                  \
        free(wt);                                                                                          \
    }                                                                                                      \
                                                                                                           \
    SSCAN_CLONES                                                                                           \
    void cconv_bwd_##SUFFIX(int64_t batch, int64_t L, int64_t dim, int64_t K, const T *x, int64_t x_sb,    \
                            int64_t x_st, const T *w, const T *bias, const T *dy, int64_t dy_sb,           \
                            int64_t dy_st, T *dx, T *dw, T *dbias) {                                       \
        /* taps (K, dim), their gradient (K, dim), and dL/dp of one step (dim,) */                         \
        T *wt = (T *)malloc((size_t)(2 * K * dim + dim) * sizeof(T));                                      \
        if (!wt) return;                                                                                   \
        T *dwt = wt + K * dim, *restrict dp = dwt + K * dim;                                               \
        for (int64_t d = 0; d < dim; ++d)                                                                  \
            for (int64_t k = 0; k < K; ++k) wt[k * dim + d] = w[d * K + k];                                \
        memset(dwt, 0, (size_t)(K * dim) * sizeof(T));                                                     \
        for (int64_t b = 0; b < batch; ++b) {                                                              \
            const T *xb = x + b * x_sb;                                                                    \
            memset(dx + b * L * dim, 0, (size_t)(L * dim) * sizeof(T));                                   \
            for (int64_t t = 0; t < L; ++t) {                                                              \
                const T *restrict dyt = dy + b * dy_sb + t * dy_st;                                        \
                conv_pre_##SUFFIX(xb, x_st, t, dim, K, wt, bias, dp);                                      \
                SSCAN_SIMD                                                                                 \
                for (int64_t d = 0; d < dim; ++d) { /* silu'(p) = s (1 + p (1 - s)), s = sigmoid(p) */     \
                    const T sig = 1 / (1 + EXP(-dp[d]));                                                   \
                    dp[d] = dyt[d] * sig * (1 + dp[d] * (1 - sig));                                        \
                }                                                                                          \
                if (dbias) {                                                                               \
                    SSCAN_SIMD                                                                             \
                    for (int64_t d = 0; d < dim; ++d) dbias[d] += dp[d];                                   \
                }                                                                                          \
                for (int64_t k = 0; k < K; ++k) {                                                          \
                    const int64_t s = t - K + 1 + k;                                                       \
                    if (s < 0) continue;                                                                   \
                    const T *restrict xs = xb + s * x_st, *restrict wk = wt + k * dim;                     \
                    T *restrict dxs = dx + (b * L + s) * dim, *restrict dwk = dwt + k * dim;               \
                    SSCAN_SIMD                                                                             \
                    for (int64_t d = 0; d < dim; ++d) {                                                    \
                        dxs[d] += wk[d] * dp[d];                                                           \
                        dwk[d] += xs[d] * dp[d];                                                           \
                    }                                                                                      \
                }                                                                                          \
            }                                                                                              \
        }                                                                                                  \
        for (int64_t d = 0; d < dim; ++d)                                                                  \
            for (int64_t k = 0; k < K; ++k) dw[d * K + k] += dwt[k * dim + d];                             \
        free(wt);                                                                                          \
    }

DEFINE_CONV(float, f32, sscan_expf)
DEFINE_CONV(double, f64, sscan_exp)
