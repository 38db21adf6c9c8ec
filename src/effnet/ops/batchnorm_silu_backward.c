/* The backward pass of silu(batch_norm(x)) in training mode, channels-last float32, in two passes and without
   temporaries: pass 1 computes dy into grad_x's memory and sums it, pass 2 turns it into grad_x in place.  ATen
   computes it as three kernels (recompute the normalised tensor, SiLU's backward into a new tensor, batch norm's
   backward reading that tensor twice), which took 1.1-3x this kernel's time on the experiments' maps.

   With xh = (x - mean) * invstd, y = xh * weight + bias, s = sigmoid(y), dy = grad * s * (1 + y * (1 - s)):
     grad_bias = sum dy,   grad_weight = sum dy * xh,
     grad_x = weight * invstd * (dy - grad_bias / M - xh * grad_weight / M)      (M = rows: N * H * W)

   Each thread computes a channel range [c0, c1) over every row: the sums of a channel are formed in the same order
   whatever the number of threads.  Rows are summed in float32 over chunks of CHUNK rows, the chunks in float64.
   exp is computed by `exp_f` (range reduction and a degree-6 polynomial, the Cephes single-precision
   coefficients, within 2 ulp of expf on [-87, 88]) so that the compiler vectorises the channel loop. */

#include <stdlib.h>
#include <string.h>

#define CHUNK 64

static inline float exp_f(float x) {
    x = x < -87.0f ? -87.0f : x > 88.0f ? 88.0f : x;
    /* n = x / ln 2 rounded to the nearest integer: adding and subtracting 1.5 * 2^23 rounds (the compiler may not
       reassociate it without -ffast-math), and unlike floorf it vectorises without -fno-trapping-math */
    float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = x - n * 0.693359375f + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    union {
        int i;
        float f;
    } scale = {.i = ((int)n + 127) << 23}; /* 2^n */
    return p * scale.f;
}

static inline float silu_grad(float g, float y) {
    float s = 1.0f / (1.0f + exp_f(-y));
    return g * s * (1.0f + y * (1.0f - s));
}

/* Pass 1, one row's channels: dy (kept in grad_x's memory for pass 2) and its sums.  Separate
   restrict-qualified arguments let the compiler vectorise. */
static inline void sums_row(const float *restrict g, const float *restrict xr, const float *restrict mu,
                            const float *restrict is, const float *restrict w, const float *restrict b,
                            float *restrict dy_out, float *restrict pdy, float *restrict pdyx, long nc) {
    for (long q = 0; q < nc; q++) {
        float xh = (xr[q] - mu[q]) * is[q];
        float dy = silu_grad(g[q], xh * w[q] + b[q]);
        dy_out[q] = dy;
        pdy[q] += dy;
        pdyx[q] += dy * xh;
    }
}

/* Pass 2, one row's channels: grad_x from dy, in place. */
static inline void grad_row(float *restrict dy, const float *restrict xr, const float *restrict mu,
                            const float *restrict is, const float *restrict w, const float *restrict k1,
                            const float *restrict k2, long nc) {
    for (long q = 0; q < nc; q++) {
        float xh = (xr[q] - mu[q]) * is[q];
        dy[q] = w[q] * is[q] * (dy[q] - k1[q] - xh * k2[q]);
    }
}

/* grad, x, gx: (rows, c) contiguous; weight, bias, mean, invstd, gw, gb: (c,).  Returns 0, or -1 if out of memory. */
int batchnorm_silu_backward_nhwc(const float *grad, const float *x, const float *weight,
                                 const float *bias, const float *mean, const float *invstd, float *gx,
                                 float *gw, float *gb, long rows, long c, long c0, long c1) {
    long nc = c1 - c0;
    if (nc <= 0) return 0;
    float *buf = malloc(sizeof(float) * (size_t)nc * 8);
    double *sums = calloc((size_t)nc * 2, sizeof(double));
    if (!buf || !sums) {
        free(buf), free(sums);
        return -1;
    }
    float *mu = buf, *is = buf + nc, *w = buf + 2 * nc, *b = buf + 3 * nc;
    float *pdy = buf + 4 * nc, *pdyx = buf + 5 * nc, *k1 = buf + 6 * nc, *k2 = buf + 7 * nc;
    double *sdy = sums, *sdyx = sums + nc;
    for (long q = 0; q < nc; q++) {
        mu[q] = mean[c0 + q], is[q] = invstd[c0 + q], w[q] = weight[c0 + q], b[q] = bias[c0 + q];
    }
    for (long r0 = 0; r0 < rows; r0 += CHUNK) {
        long r1 = r0 + CHUNK < rows ? r0 + CHUNK : rows;
        memset(pdy, 0, sizeof(float) * (size_t)nc * 2);
        for (long r = r0; r < r1; r++)
            sums_row(grad + r * c + c0, x + r * c + c0, mu, is, w, b, gx + r * c + c0, pdy, pdyx, nc);
        for (long q = 0; q < nc; q++) sdy[q] += pdy[q], sdyx[q] += pdyx[q];
    }
    for (long q = 0; q < nc; q++) {
        gb[c0 + q] = (float)sdy[q];
        gw[c0 + q] = (float)sdyx[q];
        k1[q] = (float)(sdy[q] / (double)rows);
        k2[q] = (float)(sdyx[q] / (double)rows);
    }
    for (long r = 0; r < rows; r++) grad_row(gx + r * c + c0, x + r * c + c0, mu, is, w, k1, k2, nc);
    free(buf), free(sums);
    return 0;
}
