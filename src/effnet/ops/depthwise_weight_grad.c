/* The weight gradient of a depthwise 2-D convolution, channels-last float32.

   grad_w[c, a, b] = sum over n, i, j of  x[n, i*s + a - pt, j*s + b - pl, c] * grad_y[n, i, j, c]

   Taps that fall in the zero padding contribute nothing: for each kernel column b the range of output columns j
   whose input column is inside the image is computed once, so no tap is ever tested.  Channels are processed in
   blocks of 16 (then 8, then one at a time for what is left): a block's values of one pixel are contiguous in
   channels-last memory, so the innermost loops are fixed-length vector loops the compiler turns into SIMD
   multiply-adds.  For one output row i and kernel row a, the k accumulators of a block stay in registers over every
   image and output column; each multiply-add then costs one load of x and one of grad_y.

   Threads: the exported kernel splits the channels in multiples of 16 between OpenMP's threads (`parallel.h`:
   torch's own runtime).  A channel's sums are formed in the same order whatever the split, so the result does not
   depend on the thread count. */

#include <string.h>
#include "parallel.h"

#define MAX_K 11

struct dims {
    long n, h, w, c, ho, wo, k, s, pt, pl;
    long j_lo[MAX_K], j_hi[MAX_K]; /* for kernel column b: output columns [j_lo, j_hi) read inside the image */
};

/* One kernel row a at output row i, channels [c0, c0 + WIDTH): acc[b] = sum_n sum_j x(n, y, j*s+b-pl) g(n, i, j). */
#define ROW_SUMS(WIDTH)                                                                                            \
    static void row_sums_##WIDTH(const struct dims *d, const float *x, const float *gy, long i, long y, long c0,  \
                                 float *row_total) {                                                               \
        float acc[MAX_K][WIDTH];                                                                                   \
        memset(acc, 0, sizeof(acc));                                                                               \
        for (long n = 0; n < d->n; n++) {                                                                          \
            const float *xrow = x + ((n * d->h + y) * d->w) * d->c + c0;                                           \
            const float *grow = gy + ((n * d->ho + i) * d->wo) * d->c + c0;                                        \
            for (long b = 0; b < d->k; b++) {                                                                      \
                const float *xb = xrow + (b - d->pl) * d->c;                                                       \
                for (long j = d->j_lo[b]; j < d->j_hi[b]; j++) {                                                   \
                    const float *xv = xb + j * d->s * d->c;                                                        \
                    const float *gv = grow + j * d->c;                                                             \
                    for (int q = 0; q < WIDTH; q++) acc[b][q] += xv[q] * gv[q];                                    \
                }                                                                                                  \
            }                                                                                                      \
        }                                                                                                          \
        for (long b = 0; b < d->k; b++)                                                                            \
            for (int q = 0; q < WIDTH; q++) row_total[b * WIDTH + q] += acc[b][q];                                 \
    }

ROW_SUMS(16)
ROW_SUMS(8)
ROW_SUMS(1)

/* Channels [c0, c0 + width) for width 16, 8 or 1: out[c, a, b] for every tap. */
static void block_sums(const struct dims *d, const float *x, const float *gy, float *out, long c0, int width) {
    float total[MAX_K * MAX_K * 16];
    memset(total, 0, sizeof(total));
    for (long i = 0; i < d->ho; i++) {
        for (long a = 0; a < d->k; a++) {
            long y = i * d->s + a - d->pt;
            if (y < 0 || y >= d->h) continue;
            float *row_total = total + a * d->k * width;
            if (width == 16) row_sums_16(d, x, gy, i, y, c0, row_total);
            else if (width == 8) row_sums_8(d, x, gy, i, y, c0, row_total);
            else row_sums_1(d, x, gy, i, y, c0, row_total);
        }
    }
    for (long q = 0; q < width; q++)
        for (long t = 0; t < d->k * d->k; t++) out[(c0 + q) * d->k * d->k + t] = total[t * width + q];
}

/* x: (n, h, w, c), gy: (n, ho, wo, c), out: (c, k, k), all contiguous.  Computes channels [c_begin, c_end).
   Returns 0; -1 for a kernel above MAX_K or a stride below 1. */
static int depthwise_weight_grad_nhwc_range(const float *x, const float *gy, float *out, long n, long h, long w,
                                            long c, long ho, long wo, long k, long s, long pt, long pl, long c_begin,
                                            long c_end) {
    if (k > MAX_K || k < 1 || s < 1) return -1;
    struct dims d = {n, h, w, c, ho, wo, k, s, pt, pl, {0}, {0}};
    for (long b = 0; b < k; b++) {
        /* input column j*s + b - pl must lie in [0, w) */
        long lo = pl - b > 0 ? (pl - b + s - 1) / s : 0;
        long hi = w - 1 + pl - b >= 0 ? (w - 1 + pl - b) / s + 1 : 0;
        d.j_lo[b] = lo;
        d.j_hi[b] = hi < wo ? hi : wo;
    }
    long c0 = c_begin;
    for (; c0 + 16 <= c_end; c0 += 16) block_sums(&d, x, gy, out, c0, 16);
    for (; c0 + 8 <= c_end; c0 += 8) block_sums(&d, x, gy, out, c0, 8);
    for (; c0 < c_end; c0 += 1) block_sums(&d, x, gy, out, c0, 1);
    return 0;
}

EFFNET_PARALLEL(depthwise_weight_grad_nhwc, 16, (const float *x, const float *gy, float *out, long n, long h, long w,
                long c, long ho, long wo, long k, long s, long pt, long pl, long k0, long k1, long threads),
                (x, gy, out, n, h, w, c, ho, wo, k, s, pt, pl, a, b))
