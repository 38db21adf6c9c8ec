/* silu(batch_norm(x)) in training mode, forward and backward, on channels-last float32 tensors viewed as a
   (rows, c) matrix (rows = N * H * W).

   Forward, two passes: the batch statistics (one read of x), then out = silu(x * scale + shift) (one read, one
   write).  ATen's batch norm and SiLU take four or five passes.
   Backward, two passes and no temporaries: pass 1 computes dy into grad_x's memory and sums it, pass 2 turns it
   into grad_x in place.  With xh = (x - mean) * invstd, y = xh * weight + bias, s = sigmoid(y),
   dy = grad * s * (1 + y * (1 - s)):
     grad_bias = sum dy,   grad_weight = sum dy * xh,
     grad_x = weight * invstd * (dy - grad_bias / M - xh * grad_weight / M)      (M = rows)

   Vectorisation does not depend on the compiler's: the loops are written on GCC/clang vector types of VL floats
   (16 with AVX-512, 8 otherwise), over the matrix read as one flat array in blocks of P = lcm(c, VL) floats, for
   which every per-channel parameter is kept tiled P long.  So a layer of 8 channels runs whole vectors too, and
   an AVX2-only CPU gets vector code as well as an AVX-512 one.

   Determinism: rows are cut into chunks of CHUNK rows, whatever the number of threads; each chunk's sums are
   float32 and land in their own slot of `part`, and the chunks are added in float64 in order by `*_finish`.
   Threads take whole chunks.  The batch statistics are sums of x - k and (x - k)^2 with k the mean of the first
   chunk (a shift close to the mean keeps the one-pass variance from cancelling when |mean| >> std).
   exp is `vexp` (range reduction and a degree-6 polynomial, the Cephes single-precision coefficients, within
   2 ulp of expf on [-87, 88]). */

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "parallel.h"

#if defined(__AVX512F__)
#define VL 16
#else
#define VL 8
#endif
#define CHUNK 64 /* rows per chunk: a multiple of every VL / gcd(c, VL) */

typedef float vf __attribute__((vector_size(VL * 4)));
typedef int vi __attribute__((vector_size(VL * 4)));

static inline vf load(const float *p) {
    vf v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void store(float *p, vf v) { memcpy(p, &v, sizeof v); }

static inline vf splat(float f) { return (vf){0} + f; }

static inline vf vselect(vi mask, vf a, vf b) { return (vf)(((vi)a & mask) | ((vi)b & ~mask)); }

static inline vf vexp(vf x) {
    x = vselect(x < splat(-87.0f), splat(-87.0f), x);
    x = vselect(x > splat(88.0f), splat(88.0f), x);
    /* n = x / ln 2 rounded to the nearest integer (adding and subtracting 1.5 * 2^23 rounds) */
    vf n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    vf r = x - n * 0.693359375f + n * 2.12194440e-4f;
    vf p = splat(1.9875691500e-4f);
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    vi e = (__builtin_convertvector(n, vi) + 127) << 23; /* 2^n */
    return p * (vf)e;
}

static inline float sexp(float x) {
    vf v = vexp(splat(x));
    return v[0];
}

static long gcd(long a, long b) { return b ? gcd(b, a % b) : a; }

/* P = lcm(c, VL): the flat block whose channel pattern repeats. */
static long block_len(long c) { return c / gcd(c, VL) * VL; }

/* a (c,) parameter tiled P long */
static void tile(float *dst, const float *src, long c, long p) {
    for (long i = 0; i < p; i++) dst[i] = src[i % c];
}

/* A chunk's two P-long sums folded to (c,) each: out[q] = sum of s1[j], out[c + q] = sum of s2[j], j = q mod c. */
static void fold_sums(float *out, const float *s1, const float *s2, long c, long p) {
    for (long q = 0; q < c; q++) {
        float a = 0.0f, b = 0.0f;
        for (long j = q; j < p; j += c) a += s1[j], b += s2[j];
        out[q] = a, out[c + q] = b;
    }
}

/* ---- forward ---------------------------------------------------------------------------------------------- */

/* The shift of the statistics: the mean of the first chunk's rows. */
int bn_shift_nhwc(const float *x, float *shift, long rows, long c) {
    long n = rows < CHUNK ? rows : CHUNK;
    for (long q = 0; q < c; q++) {
        double a = 0.0;
        for (long r = 0; r < n; r++) a += x[r * c + q];
        shift[q] = (float)(a / (double)n);
    }
    return 0;
}

/* Pass 1 over chunks [k0, k1): part[k * 2c + q] = sum (x - k), part[k * 2c + c + q] = sum (x - k)^2, k = shift. */
static int bn_stats_nhwc_range(const float *x, const float *shift, float *part, long rows, long c, long k0, long k1) {
    long p = block_len(c), rows_per_block = p / c;
    float *buf = malloc(sizeof(float) * (size_t)p * 3);
    if (!buf) return -1;
    float *k = buf, *s1 = buf + p, *s2 = buf + 2 * p;
    tile(k, shift, c, p);
    for (long chunk = k0; chunk < k1; chunk++) {
        long r0 = chunk * CHUNK, r1 = r0 + CHUNK < rows ? r0 + CHUNK : rows;
        memset(s1, 0, sizeof(float) * (size_t)p * 2);
        long r = r0;
        for (; r + rows_per_block <= r1; r += rows_per_block) {
            const float *xr = x + r * c;
            for (long j = 0; j < p; j += VL) {
                vf d = load(xr + j) - load(k + j);
                store(s1 + j, load(s1 + j) + d);
                store(s2 + j, load(s2 + j) + d * d);
            }
        }
        for (; r < r1; r++)
            for (long q = 0; q < c; q++) {
                float d = x[r * c + q] - k[q];
                s1[q] += d, s2[q] += d * d;
            }
        fold_sums(part + chunk * 2 * c, s1, s2, c, p);
    }
    free(buf);
    return 0;
}

EFFNET_PARALLEL(bn_stats_nhwc, 1, (const float *x, const float *shift, float *part, long rows, long c, long k0,
                long k1, long threads),
                (x, shift, part, rows, c, a, b))

/* After pass 1: the batch's mean and invstd; scale_offset = (weight * invstd, bias - mean * scale) for pass 2; the
   running statistics updated as torch's BatchNorm does (the unbiased variance into running_var). */
int bn_stats_finish(const float *part, const float *shift, const float *weight, const float *bias, float *mean,
                    float *invstd, float *scale_offset, float *running_mean, float *running_var, long rows, long c,
                    long chunks, double eps, double momentum) {
    for (long q = 0; q < c; q++) {
        double a = 0.0, b = 0.0;
        for (long k = 0; k < chunks; k++) a += part[k * 2 * c + q], b += part[k * 2 * c + c + q];
        double m = a / (double)rows, var = b / (double)rows - m * m;
        if (var < 0.0) var = 0.0;
        mean[q] = (float)(m + shift[q]);
        invstd[q] = (float)(1.0 / sqrt(var + eps));
        scale_offset[q] = weight[q] * invstd[q];
        scale_offset[c + q] = bias[q] - mean[q] * scale_offset[q];
        running_mean[q] = (float)((1.0 - momentum) * running_mean[q] + momentum * (m + shift[q]));
        running_var[q] = (float)((1.0 - momentum) * running_var[q] + momentum * var * (double)rows / (double)(rows - 1));
    }
    return 0;
}

/* Pass 2 over chunks [k0, k1): out = silu(x * scale + offset), scale_offset = (scale, offset). */
static int bn_silu_apply_nhwc_range(const float *x, const float *scale_offset, float *out, long rows, long c, long k0,
                                    long k1) {
    long p = block_len(c), rows_per_block = p / c;
    float *buf = malloc(sizeof(float) * (size_t)p * 2);
    if (!buf) return -1;
    float *a = buf, *b = buf + p;
    tile(a, scale_offset, c, p), tile(b, scale_offset + c, c, p);
    long r0 = k0 * CHUNK, r1 = k1 * CHUNK < rows ? k1 * CHUNK : rows, r = r0;
    for (; r + rows_per_block <= r1; r += rows_per_block) {
        const float *xr = x + r * c;
        float *o = out + r * c;
        for (long j = 0; j < p; j += VL) {
            vf y = load(xr + j) * load(a + j) + load(b + j);
            store(o + j, y / (1.0f + vexp(-y)));
        }
    }
    for (; r < r1; r++)
        for (long q = 0; q < c; q++) {
            float y = x[r * c + q] * a[q] + b[q];
            out[r * c + q] = y / (1.0f + sexp(-y));
        }
    free(buf);
    return 0;
}

EFFNET_PARALLEL(bn_silu_apply_nhwc, 1, (const float *x, const float *scale_offset, float *out, long rows, long c,
                long k0, long k1, long threads),
                (x, scale_offset, out, rows, c, a, b))

/* ---- backward --------------------------------------------------------------------------------------------- */

/* Pass 1 over chunks [k0, k1): dy into gx, part[k * 2c + q] = sum dy, part[k * 2c + c + q] = sum dy * xh.
   params: mean, invstd, weight, bias, each (c,). */
static int bn_silu_grad_sums_nhwc_range(const float *grad, const float *x, const float *mean, const float *invstd,
                                        const float *weight, const float *bias, float *gx, float *part, long rows,
                                        long c, long k0, long k1) {
    long p = block_len(c), rows_per_block = p / c;
    float *buf = malloc(sizeof(float) * (size_t)p * 6);
    if (!buf) return -1;
    float *mu = buf, *is = buf + p, *w = buf + 2 * p, *b = buf + 3 * p, *s1 = buf + 4 * p, *s2 = buf + 5 * p;
    tile(mu, mean, c, p), tile(is, invstd, c, p), tile(w, weight, c, p), tile(b, bias, c, p);
    for (long chunk = k0; chunk < k1; chunk++) {
        long r0 = chunk * CHUNK, r1 = r0 + CHUNK < rows ? r0 + CHUNK : rows;
        memset(s1, 0, sizeof(float) * (size_t)p * 2);
        long r = r0;
        for (; r + rows_per_block <= r1; r += rows_per_block) {
            const float *g = grad + r * c, *xr = x + r * c;
            float *d = gx + r * c;
            for (long j = 0; j < p; j += VL) {
                vf xh = (load(xr + j) - load(mu + j)) * load(is + j);
                vf y = xh * load(w + j) + load(b + j);
                vf s = 1.0f / (1.0f + vexp(-y));
                vf dy = load(g + j) * s * (1.0f + y * (1.0f - s));
                store(d + j, dy);
                store(s1 + j, load(s1 + j) + dy);
                store(s2 + j, load(s2 + j) + dy * xh);
            }
        }
        for (; r < r1; r++)
            for (long q = 0; q < c; q++) {
                float xh = (x[r * c + q] - mu[q]) * is[q], y = xh * w[q] + b[q];
                float s = 1.0f / (1.0f + sexp(-y)), dy = grad[r * c + q] * s * (1.0f + y * (1.0f - s));
                gx[r * c + q] = dy, s1[q] += dy, s2[q] += dy * xh;
            }
        fold_sums(part + chunk * 2 * c, s1, s2, c, p);
    }
    free(buf);
    return 0;
}

EFFNET_PARALLEL(bn_silu_grad_sums_nhwc, 1, (const float *grad, const float *x, const float *mean, const float *invstd,
                const float *weight, const float *bias, float *gx, float *part, long rows, long c, long k0, long k1,
                long threads),
                (grad, x, mean, invstd, weight, bias, gx, part, rows, c, a, b))

/* After pass 1: grad_weight and grad_bias, and k = (grad_bias / M, grad_weight / M) for pass 2. */
int bn_silu_grad_finish(const float *part, float *gw, float *gb, float *k, long rows, long c, long chunks) {
    for (long q = 0; q < c; q++) {
        double a = 0.0, b = 0.0;
        for (long i = 0; i < chunks; i++) a += part[i * 2 * c + q], b += part[i * 2 * c + c + q];
        gb[q] = (float)a, gw[q] = (float)b;
        k[q] = (float)(a / (double)rows), k[c + q] = (float)(b / (double)rows);
    }
    return 0;
}

/* Pass 2 over chunks [k0, k1): gx = weight * invstd * (dy - k[q] - xh * k[c + q]), in place. */
static int bn_silu_grad_input_nhwc_range(float *gx, const float *x, const float *mean, const float *invstd,
                                         const float *weight, const float *k, long rows, long c, long k0, long k1) {
    long p = block_len(c), rows_per_block = p / c;
    float *buf = malloc(sizeof(float) * (size_t)p * 5);
    if (!buf) return -1;
    float *mu = buf, *is = buf + p, *ws = buf + 2 * p, *a = buf + 3 * p, *b = buf + 4 * p;
    tile(mu, mean, c, p), tile(is, invstd, c, p), tile(a, k, c, p), tile(b, k + c, c, p);
    for (long i = 0; i < p; i++) ws[i] = weight[i % c] * is[i];
    long r0 = k0 * CHUNK, r1 = k1 * CHUNK < rows ? k1 * CHUNK : rows, r = r0;
    for (; r + rows_per_block <= r1; r += rows_per_block) {
        const float *xr = x + r * c;
        float *d = gx + r * c;
        for (long j = 0; j < p; j += VL) {
            vf xh = (load(xr + j) - load(mu + j)) * load(is + j);
            store(d + j, load(ws + j) * (load(d + j) - load(a + j) - xh * load(b + j)));
        }
    }
    for (; r < r1; r++)
        for (long q = 0; q < c; q++) {
            float xh = (x[r * c + q] - mu[q]) * is[q];
            gx[r * c + q] = ws[q] * (gx[r * c + q] - a[q] - xh * b[q]);
        }
    free(buf);
    return 0;
}

EFFNET_PARALLEL(bn_silu_grad_input_nhwc, 1, (float *gx, const float *x, const float *mean, const float *invstd,
                const float *weight, const float *k, long rows, long c, long k0, long k1, long threads),
                (gx, x, mean, invstd, weight, k, rows, c, a, b))
