/* Squeeze-and-excitation's full-size passes, channels-last float32: x and the gradients are (n, hw, c) contiguous,
   the per-image vectors (pooled, gate, their gradients) are (n, c) contiguous.

   forward:   pooled = mean_hw x                                  (se_pool_nhwc)
              out = x * gate                                      (se_scale_nhwc)
   backward:  dgate = sum_hw grad * x,  pooled again              (se_backward_sums_nhwc, one pass)
              dx = grad * gate + dpooled / hw                     (se_grad_x_nhwc, one pass)
   The small MLP between pooled and gate, and its backward, run in torch on (n, c) tensors.

   Each call handles the channel range [c0, c1) of every row, so a thread split over channels does not change any
   channel's result: its sum is formed in the same order whatever the range.  Sums run in float32 over chunks of
   CHUNK rows and in double over the chunks; the pooled mean of the backward pass is formed exactly as the
   forward's.  The channel loops are plain restrict-qualified loops without branches, which GCC and clang
   vectorise for AVX2 and AVX-512 alike. */

#include <stdlib.h>
#include <string.h>

#define CHUNK 64

/* acc[q] += xr[q] */
static inline void add_row(float *restrict acc, const float *restrict xr, long nc) {
    for (long q = 0; q < nc; q++) acc[q] += xr[q];
}

/* acc[q] += g[q] * xr[q]; accx[q] += xr[q] */
static inline void add_rows2(float *restrict acc, float *restrict accx, const float *restrict g,
                             const float *restrict xr, long nc) {
    for (long q = 0; q < nc; q++) {
        acc[q] += g[q] * xr[q];
        accx[q] += xr[q];
    }
}

static inline void add_double(double *restrict total, const float *restrict part, long nc) {
    for (long q = 0; q < nc; q++) total[q] += (double)part[q];
}

/* out[q] = xr[q] * s[q] */
static inline void scale_row(float *restrict out, const float *restrict xr, const float *restrict s, long nc) {
    for (long q = 0; q < nc; q++) out[q] = xr[q] * s[q];
}

/* out[q] = g[q] * s[q] + d[q] */
static inline void grad_row(float *restrict out, const float *restrict g, const float *restrict s,
                            const float *restrict d, long nc) {
    for (long q = 0; q < nc; q++) out[q] = g[q] * s[q] + d[q];
}

/* pooled[i, q] = mean over the hw rows of image i of x[i, :, q].  Returns 0, or -1 if out of memory. */
int se_pool_nhwc(const float *x, float *pooled, long n, long hw, long c, long c0, long c1) {
    long nc = c1 - c0;
    if (nc <= 0) return 0;
    float *part = malloc(sizeof(float) * (size_t)nc);
    double *total = malloc(sizeof(double) * (size_t)nc);
    if (!part || !total) {
        free(part), free(total);
        return -1;
    }
    for (long i = 0; i < n; i++) {
        const float *xi = x + i * hw * c + c0;
        memset(total, 0, sizeof(double) * (size_t)nc);
        for (long r0 = 0; r0 < hw; r0 += CHUNK) {
            long r1 = r0 + CHUNK < hw ? r0 + CHUNK : hw;
            memset(part, 0, sizeof(float) * (size_t)nc);
            for (long r = r0; r < r1; r++) add_row(part, xi + r * c, nc);
            add_double(total, part, nc);
        }
        for (long q = 0; q < nc; q++) pooled[i * c + c0 + q] = (float)(total[q] / (double)hw);
    }
    free(part), free(total);
    return 0;
}

/* out[i, r, q] = x[i, r, q] * gate[i, q] */
int se_scale_nhwc(const float *x, const float *gate, float *out, long n, long hw, long c, long c0, long c1) {
    long nc = c1 - c0;
    for (long i = 0; i < n; i++)
        for (long r = 0; r < hw; r++) {
            long at = (i * hw + r) * c + c0;
            scale_row(out + at, x + at, gate + i * c + c0, nc);
        }
    return 0;
}

/* dgate[i, q] = sum over the hw rows of image i of grad * x, and pooled[i, q] = their mean of x (the same value
   se_pool_nhwc gives).  Returns 0, or -1 if out of memory. */
int se_backward_sums_nhwc(const float *grad, const float *x, float *dgate, float *pooled, long n, long hw, long c,
                          long c0, long c1) {
    long nc = c1 - c0;
    if (nc <= 0) return 0;
    float *part = malloc(sizeof(float) * (size_t)nc * 2);
    double *total = malloc(sizeof(double) * (size_t)nc * 2);
    if (!part || !total) {
        free(part), free(total);
        return -1;
    }
    float *pg = part, *px = part + nc;
    double *tg = total, *tx = total + nc;
    for (long i = 0; i < n; i++) {
        long base = i * hw * c + c0;
        memset(total, 0, sizeof(double) * (size_t)nc * 2);
        for (long r0 = 0; r0 < hw; r0 += CHUNK) {
            long r1 = r0 + CHUNK < hw ? r0 + CHUNK : hw;
            memset(part, 0, sizeof(float) * (size_t)nc * 2);
            for (long r = r0; r < r1; r++) add_rows2(pg, px, grad + base + r * c, x + base + r * c, nc);
            add_double(tg, pg, nc);
            add_double(tx, px, nc);
        }
        for (long q = 0; q < nc; q++) {
            dgate[i * c + c0 + q] = (float)tg[q];
            pooled[i * c + c0 + q] = (float)(tx[q] / (double)hw);
        }
    }
    free(part), free(total);
    return 0;
}

/* dx[i, r, q] = grad[i, r, q] * gate[i, q] + dmean[i, q]   (dmean: the pooled vector's gradient divided by hw) */
int se_grad_x_nhwc(const float *grad, const float *gate, const float *dmean, float *dx, long n, long hw, long c,
                   long c0, long c1) {
    long nc = c1 - c0;
    for (long i = 0; i < n; i++)
        for (long r = 0; r < hw; r++) {
            long at = (i * hw + r) * c + c0;
            grad_row(dx + at, grad + at, gate + i * c + c0, dmean + i * c + c0, nc);
        }
    return 0;
}
