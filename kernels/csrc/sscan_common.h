/* Shared by the compiled CPU kernels: target clones, the vectorisation hint and a vectorisable exp. */
#ifndef SSCAN_COMMON_H
#define SSCAN_COMMON_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
/* one build, three code paths picked at load time by the CPU's features (AVX-512, AVX2+FMA, baseline) */
#define SSCAN_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define SSCAN_CLONES
#endif

/* vectorisation hint (honoured with -fopenmp-simd, see setup.py; ignored otherwise) */
#define SSCAN_SIMD _Pragma("omp simd")

/* exp for float from arithmetic only (no libm call), so that channel loops vectorise.
 * Range reduction x = k ln2 + r with |r| <= ln2/2 (ln2 split in two parts), a degree-6 polynomial for
 * exp(r) (the Cephes expf coefficients, relative error ~1e-7), and 2^k built in the exponent bits.
 * Inputs are clamped to [-87, 88]: exp(-87) is about the smallest normal float, exp(88) the largest. */
static inline float sscan_expf(float x) {
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    float k = x * 1.44269504088896341f;
    k = (k + 12582912.0f) - 12582912.0f; /* round to nearest: adding 1.5 * 2^23 drops the fraction */
    float r = x - k * 0.693359375f;
    r = r + k * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t bits = ((int32_t)k + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

static inline double sscan_exp(double x) { return exp(x); }

/* softplus with torch's threshold (x > 20: x), from arithmetic only so that channel loops vectorise:
 * max(x, 0) + log1p(e), e = exp(-|x|) in (0, 1], and log1p(e) = 2 atanh(s) with s = e / (2 + e) <= 1/3,
 * whose odd series up to s^15 is accurate to ~1e-8 relative (s^2 <= 1/9). */
static inline float sscan_softplusf(float x) {
    const float e = sscan_expf(x < 0 ? x : -x);
    const float s = e / (2.0f + e), s2 = s * s;
    float p = 1.0f / 15.0f;
    p = p * s2 + 1.0f / 13.0f;
    p = p * s2 + 1.0f / 11.0f;
    p = p * s2 + 1.0f / 9.0f;
    p = p * s2 + 1.0f / 7.0f;
    p = p * s2 + 1.0f / 5.0f;
    p = p * s2 + 1.0f / 3.0f;
    p = p * s2 + 1.0f;
    const float y = (x > 0 ? x : 0.0f) + 2.0f * s * p;
    return x > 20.0f ? x : y;
}

static inline double sscan_softplus(double x) { return x > 20.0 ? x : log1p(exp(x)); }

#endif
