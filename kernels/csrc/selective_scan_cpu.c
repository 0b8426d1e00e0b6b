/* Fused CPU selective scan (the compiled core of the `chunked` backend, ssm/chunked_scan.py).
 *
 * Per batch element b, channel d (group g = d / (dim / G)) and state index n:
 *
 *     h_t[n, d] = exp(dt_t[d] * A[n, d]) * h_{t-1}[n, d] + dt_t[d] * u_t[d] * B_t[g, n]     (h_{-1} = 0)
 *     p_t[d]    = sum_n C_t[g, n] * h_t[n, d] + D[d] * u_t[d]
 *     y_t[d]    = p_t[d] * silu(z_t[d])                          (D and z optional)
 *
 * with the step dt_t[d] = softplus(delta_t[d] + delta_bias[d]) (bias and softplus optional). A padded
 * step (mask 0) keeps the state, outputs 0 and gets zero gradients. Layouts: channels last, the layout of
 * Mamba's activations, so a whole step of all channels is one contiguous row:
 *
 *     u, delta, z, y, dy,            (batch, L, dim) with element strides (sb, st, 1): any batch and time
 *     du, ddelta, dz                 stride, channels contiguous (outputs contiguous)
 *     mask                           (batch, L) uint8 with strides (sb, st), or NULL (every step real)
 *     B, C                           (batch, G, N, L) with any element strides (sb, sg, sn, st)
 *     dB, dC                         (batch, L, G, N) contiguous
 *     A, dA                          (N, dim) contiguous; D, dD, delta_bias, dbias (dim,) or NULL
 *     ckpt                           (batch, n_chunks + 1, N, dim): the state entering each chunk of
 *                                    `chunk` steps, and at index n_chunks the last state
 *     dlast                          (batch, N, dim) or NULL: gradient of the last state
 *
 * The forward keeps only the chunk-entry states. The backward walks the chunks last to first, recomputes a
 * chunk's decays and states from its checkpoint (chunk x N x dim values per thread, cache-resident), and
 * runs the adjoint g_t = dy_t C_t + a_{t+1} g_{t+1} back through it; p_t is recomputed from the states, so
 * nothing per step is stored between the passes. Batch rows are independent except for dA, dD and dbias, which
 * the caller gives each thread (a disjoint batch slice) separately. Inner loops run over contiguous
 * channels, so they vectorise without horizontal reductions (an exp made of plain arithmetic for float).
 *
 * No Python API is used: the kernels are called through ctypes (kernels/selective_scan_cpu.py).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sscan_common.h"

/* the step of one row: dt[d] = softplus?(delta[d] + bias[d]) */
#define SSCAN_STEP_ROW(T, SOFTPLUS, deltat, bias, softplus, dtrow, dim)                                   \
    do {                                                                                                   \
        SSCAN_SIMD                                                                                         \
        for (int64_t d = 0; d < (dim); ++d) {                                                              \
            const T v = (deltat)[d] + ((bias) ? (bias)[d] : 0);                                            \
            (dtrow)[d] = (softplus) ? SOFTPLUS(v) : v;                                                     \
        }                                                                                                  \
    } while (0)

#define SSCAN_PADDED(mask, m_sb, m_st, b, t) ((mask) && !(mask)[(b) * (m_sb) + (t) * (m_st)])

/* the inputs both kernels take, in this order (kernels/cpu_lib.py mirrors it as _SCAN): shape, u, delta
 * and z rows (pointer, batch and time strides), A, B and C (pointer and four strides), D, delta_bias,
 * softplus, mask (pointer, batch and time strides) */
#define SSCAN_INPUTS(T)                                                                                    \
    int64_t batch, int64_t L, int64_t dim, int64_t N, int64_t G, int64_t chunk, const T *u, int64_t u_sb,  \
        int64_t u_st, const T *delta, int64_t dl_sb, int64_t dl_st, const T *z, int64_t z_sb, int64_t z_st,\
        const T *A, const T *B, int64_t B_sb, int64_t B_sg, int64_t B_sn, int64_t B_st, const T *C,        \
        int64_t C_sb, int64_t C_sg, int64_t C_sn, int64_t C_st, const T *D, const T *bias,                 \
        int64_t softplus, const uint8_t *mask, int64_t m_sb, int64_t m_st

#define DEFINE_SCAN(T, SUFFIX, EXP, SOFTPLUS)                                                              \
    /* y (batch, L, dim) contiguous; ckpt as above. */                                                     \
    SSCAN_CLONES                                                                                           \
    void sscan_fwd_##SUFFIX(SSCAN_INPUTS(T), T *y, T *ckpt) {                                              \
        const int64_t per = dim / G, n_chunks = (L + chunk - 1) / chunk, S = N * dim;                      \
        T *h = (T *)malloc((size_t)(S + 3 * dim) * sizeof(T));                                             \
        if (!h) return;                                                                                    \
        T *restrict acc = h + S, *restrict w = acc + dim, *restrict dtt = w + dim;                         \
        for (int64_t b = 0; b < batch; ++b) {                                                              \
            T *ck = ckpt + b * (n_chunks + 1) * S;                                                         \
            memset(h, 0, (size_t)S * sizeof(T));                                                           \
            for (int64_t t = 0; t < L; ++t) {                                                              \
                if (t % chunk == 0) memcpy(ck + (t / chunk) * S, h, (size_t)S * sizeof(T));                \
                T *restrict yt = y + (b * L + t) * dim;                                                    \
                if (SSCAN_PADDED(mask, m_sb, m_st, b, t)) { /* state kept, output 0 */                    \
                    memset(yt, 0, (size_t)dim * sizeof(T));                                                \
                    continue;                                                                              \
                }                                                                                          \
                const T *restrict ut = u + b * u_sb + t * u_st;                                            \
                SSCAN_STEP_ROW(T, SOFTPLUS, delta + b * dl_sb + t * dl_st, bias, softplus, dtt, dim);      \
                SSCAN_SIMD                                                                                 \
                for (int64_t d = 0; d < dim; ++d) {                                                        \
                    w[d] = dtt[d] * ut[d];                                                                 \
                    acc[d] = D ? D[d] * ut[d] : 0;                                                         \
                }                                                                                          \
                for (int64_t g = 0; g < G; ++g) {                                                          \
                    const T *Bt = B + b * B_sb + g * B_sg + t * B_st, *Ct = C + b * C_sb + g * C_sg + t * C_st; \
                    for (int64_t n = 0; n < N; ++n) {                                                      \
                        const T Bn = Bt[n * B_sn], Cn = Ct[n * C_sn];                                      \
                        const T *restrict An = A + n * dim + g * per;                                      \
                        T *restrict hn = h + n * dim + g * per;                                            \
                        const T *restrict dtg = dtt + g * per, *restrict wg = w + g * per;                 \
                        T *restrict ag = acc + g * per;                                                    \
                        SSCAN_SIMD                                                                         \
                        for (int64_t j = 0; j < per; ++j) {                                                \
                            const T v = EXP(dtg[j] * An[j]) * hn[j] + wg[j] * Bn;                          \
                            hn[j] = v;                                                                     \
                            ag[j] += Cn * v;                                                               \
                        }                                                                                  \
                    }                                                                                      \
                }                                                                                          \
                if (z) {                                                                                   \
                    const T *restrict zt = z + b * z_sb + t * z_st;                                        \
                    SSCAN_SIMD                                                                             \
                    for (int64_t d = 0; d < dim; ++d) yt[d] = acc[d] * zt[d] / (1 + EXP(-zt[d]));          \
                } else {                                                                                   \
                    memcpy(yt, acc, (size_t)dim * sizeof(T));                                              \
                }                                                                                          \
            }                                                                                              \
            memcpy(ck + n_chunks * S, h, (size_t)S * sizeof(T));                                           \
        }                                                                                                  \
        free(h);                                                                                           \
    }                                                                                                      \
                                                                                                           \
    /* du, ddelta, dz (batch, L, dim) contiguous are written; dB, dC, dA, dD, dbias are accumulated into    \
     * (the caller zeroes them). */                                                                        \
    SSCAN_CLONES                                                                                           \
    void sscan_bwd_##SUFFIX(SSCAN_INPUTS(T), const T *ckpt, const T *dy, int64_t dy_sb, int64_t dy_st,    \
                            const T *dlast, T *du, T *ddelta, T *dz, T *dB, T *dC, T *dA, T *dD,           \
                            T *dbias) {                                                                    \
        const int64_t per = dim / G, n_chunks = (L + chunk - 1) / chunk, S = N * dim;                      \
        /* decays, states and steps of one chunk, the carried adjoint, and per-step channel rows */        \
        T *abuf = (T *)malloc((size_t)(2 * chunk * S + chunk * dim + S + 4 * dim) * sizeof(T));            \
        if (!abuf) return;                                                                                 \
        T *hbuf = abuf + chunk * S, *dtbuf = hbuf + chunk * S, *carry = dtbuf + chunk * dim;               \
        T *restrict w = carry + S, *restrict dyc = w + dim, *restrict s = dyc + dim, *restrict r = s + dim; \
        for (int64_t b = 0; b < batch; ++b) {                                                              \
            const T *ck = ckpt + b * (n_chunks + 1) * S;                                                   \
            if (dlast)                                                                                     \
                memcpy(carry, dlast + b * S, (size_t)S * sizeof(T));                                       \
            else                                                                                           \
                memset(carry, 0, (size_t)S * sizeof(T));                                                   \
            for (int64_t c = n_chunks - 1; c >= 0; --c) {                                                  \
                const int64_t t0 = c * chunk, t1 = t0 + chunk < L ? t0 + chunk : L;                        \
                /* 1. recompute the chunk's steps, decays and states from its entering state */            \
                for (int64_t t = t0; t < t1; ++t) {                                                        \
                    const int64_t i = t - t0;                                                              \
                    const T *hp = i ? hbuf + (i - 1) * S : ck + c * S;                                     \
                    if (SSCAN_PADDED(mask, m_sb, m_st, b, t)) {                                            \
                        memcpy(hbuf + i * S, hp, (size_t)S * sizeof(T));                                   \
                        continue;                                                                          \
                    }                                                                                      \
                    const T *restrict ut = u + b * u_sb + t * u_st;                                        \
                    T *restrict dtt = dtbuf + i * dim;                                                     \
                    SSCAN_STEP_ROW(T, SOFTPLUS, delta + b * dl_sb + t * dl_st, bias, softplus, dtt, dim);  \
                    SSCAN_SIMD                                                                             \
                    for (int64_t d = 0; d < dim; ++d) w[d] = dtt[d] * ut[d];                               \
                    for (int64_t g = 0; g < G; ++g) {                                                      \
                        const T *Bt = B + b * B_sb + g * B_sg + t * B_st;                                  \
                        for (int64_t n = 0; n < N; ++n) {                                                  \
                            const int64_t o = n * dim + g * per;                                           \
                            const T Bn = Bt[n * B_sn];                                                     \
                            const T *restrict An = A + o, *restrict hpn = hp + o;                          \
                            const T *restrict dtg = dtt + g * per, *restrict wg = w + g * per;             \
                            T *restrict an = abuf + i * S + o, *restrict hn = hbuf + i * S + o;            \
                            SSCAN_SIMD                                                                     \
                            for (int64_t j = 0; j < per; ++j) {                                            \
                                const T a = EXP(dtg[j] * An[j]);                                           \
                                an[j] = a;                                                                 \
                                hn[j] = a * hpn[j] + wg[j] * Bn;                                           \
                            }                                                                              \
                        }                                                                                  \
                    }                                                                                      \
                }                                                                                          \
                /* 2. the adjoint, last step first; every input gradient of step t from (g_t, states) */  \
                for (int64_t t = t1 - 1; t >= t0; --t) {                                                   \
                    const int64_t i = t - t0;                                                              \
                    T *restrict dut = du + (b * L + t) * dim, *restrict ddt = ddelta + (b * L + t) * dim;  \
                    if (SSCAN_PADDED(mask, m_sb, m_st, b, t)) { /* no gradient; the adjoint passes */      \
                        memset(dut, 0, (size_t)dim * sizeof(T));                                           \
                        memset(ddt, 0, (size_t)dim * sizeof(T));                                           \
                        if (z) memset(dz + (b * L + t) * dim, 0, (size_t)dim * sizeof(T));                 \
                        continue;                                                                          \
                    }                                                                                      \
                    const T *restrict ut = u + b * u_sb + t * u_st, *restrict dtt = dtbuf + i * dim;       \
                    const T *restrict dyt = dy + b * dy_sb + t * dy_st;                                    \
                    const T *hi = hbuf + i * S, *ai = abuf + i * S;                                        \
                    const T *hp = i ? hbuf + (i - 1) * S : ck + c * S;                                     \
                    /* gate: the output before it, p_t, is recomputed from the states */                   \
                    if (z) {                                                                               \
                        SSCAN_SIMD                                                                         \
                        for (int64_t d = 0; d < dim; ++d) r[d] = D ? D[d] * ut[d] : 0;                     \
                        for (int64_t g = 0; g < G; ++g) {                                                  \
                            const T *Ct = C + b * C_sb + g * C_sg + t * C_st;                              \
                            for (int64_t n = 0; n < N; ++n) {                                              \
                                const T Cn = Ct[n * C_sn];                                                 \
                                const T *restrict hn = hi + n * dim + g * per;                             \
                                T *restrict rg = r + g * per;                                              \
                                SSCAN_SIMD                                                                 \
                                for (int64_t j = 0; j < per; ++j) rg[j] += Cn * hn[j];                     \
                            }                                                                              \
                        }                                                                                  \
                        const T *restrict zt = z + b * z_sb + t * z_st;                                    \
                        T *restrict dzt = dz + (b * L + t) * dim;                                          \
                        SSCAN_SIMD                                                                         \
                        for (int64_t d = 0; d < dim; ++d) {                                                \
                            const T sig = 1 / (1 + EXP(-zt[d]));                                           \
                            dzt[d] = dyt[d] * r[d] * sig * (1 + zt[d] * (1 - sig));                        \
                            dyc[d] = dyt[d] * zt[d] * sig;                                                 \
                        }                                                                                  \
                    } else {                                                                               \
                        memcpy(dyc, dyt, (size_t)dim * sizeof(T));                                         \
                    }                                                                                      \
                    SSCAN_SIMD                                                                             \
                    for (int64_t d = 0; d < dim; ++d) {                                                    \
                        w[d] = dtt[d] * ut[d];                                                             \
                        s[d] = 0;                                                                          \
                        r[d] = 0;                                                                          \
                        if (D) dD[d] += dyc[d] * ut[d];                                                    \
                    }                                                                                      \
                    T *dBt = dB + (b * L + t) * G * N, *dCt = dC + (b * L + t) * G * N;                    \
                    for (int64_t g = 0; g < G; ++g) {                                                      \
                        const T *Bt = B + b * B_sb + g * B_sg + t * B_st;                                  \
                        const T *Ct = C + b * C_sb + g * C_sg + t * C_st;                                  \
                        for (int64_t n = 0; n < N; ++n) {                                                  \
                            const int64_t o = n * dim + g * per;                                           \
                            const T Bn = Bt[n * B_sn], Cn = Ct[n * C_sn];                                  \
                            const T *restrict an = ai + o, *restrict hn = hi + o, *restrict hpn = hp + o;  \
                            const T *restrict An = A + o, *restrict dtg = dtt + g * per;                   \
                            const T *restrict wg = w + g * per, *restrict dyg = dyc + g * per;             \
                            T *restrict cn = carry + o, *restrict dAn = dA + o;                            \
                            T *restrict sg = s + g * per, *restrict rg = r + g * per;                      \
                            T sumC = 0, sumB = 0;                                                          \
                            _Pragma("omp simd reduction(+:sumC, sumB)")                                    \
                            for (int64_t j = 0; j < per; ++j) {                                            \
                                const T gj = dyg[j] * Cn + cn[j]; /* dL/dh_t */                            \
                                const T q = gj * an[j] * hpn[j];  /* dL/d(dt A) at step t */               \
                                sumC += dyg[j] * hn[j];                                                    \
                                sumB += gj * wg[j];                                                        \
                                sg[j] += gj * Bn;                                                          \
                                rg[j] += q * An[j];                                                        \
                                dAn[j] += q * dtg[j];                                                      \
                                cn[j] = an[j] * gj; /* a_t g_t flows to step t-1 */                        \
                            }                                                                              \
                            dCt[g * N + n] += sumC;                                                        \
                            dBt[g * N + n] += sumB;                                                        \
                        }                                                                                  \
                    }                                                                                      \
                    const T *restrict dlt = delta + b * dl_sb + t * dl_st;                                 \
                    SSCAN_SIMD                                                                             \
                    for (int64_t d = 0; d < dim; ++d) {                                                    \
                        dut[d] = dtt[d] * s[d] + (D ? dyc[d] * D[d] : 0);                                  \
                        T g = ut[d] * s[d] + r[d]; /* dL/d(dt) */                                          \
                        if (softplus) { /* softplus' = sigmoid, 1 above the threshold 20 */                \
                            const T v = dlt[d] + (bias ? bias[d] : 0);                                     \
                            g = v > 20 ? g : g / (1 + EXP(-v));                                            \
                        }                                                                                  \
                        ddt[d] = g;                                                                        \
                        if (dbias) dbias[d] += g;                                                          \
                    }                                                                                      \
                }                                                                                          \
            }                                                                                              \
        }                                                                                                  \
        free(abuf);                                                                                        \
    }

DEFINE_SCAN(float, f32, sscan_expf, sscan_softplusf)
DEFINE_SCAN(double, f64, sscan_exp, sscan_softplus)
