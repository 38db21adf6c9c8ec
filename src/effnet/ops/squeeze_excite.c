/* Squeeze-and-excitation's full-size passes, channels-last float32: x and the gradients are (n, hw, c) contiguous,
   the per-image vectors (pooled, gate, their gradients) are (n, c) contiguous.

   forward:   pooled = mean_hw x                                  (se_pool_nhwc)
              out = x * gate                                      (se_scale_nhwc)
   backward:  dgate = sum_hw grad * x,  pooled again              (se_backward_sums_nhwc, one pass)
              dx = grad * gate + dmean                            (se_grad_x_nhwc, one pass; dmean = dpooled / hw)
   The small MLP between pooled and gate, and its backward, run in torch on (n, c) tensors.

   Each call handles the channel range [c0, c1) of every row, so a thread split over channels changes no channel's
   result.  The channel loops use a GCC / clang vector of 8 floats (AVX2 and AVX-512 alike; no branches in the
   loops) and then single channels.  The elementwise passes go row by row.

   A sum runs over the rows of one image in chunks of CHUNK rows, each with four float32 accumulators (rows 4j,
   4j+1, 4j+2, 4j+3 of the chunk; a left-over row goes to the first) added as (a0 + a1) + (a2 + a3), and the chunks'
   sums in double.  Two loop orders form exactly these sums: for narrow channel ranges and short chunks, each block
   of 8 channels walks the chunk's rows with its accumulators in registers (several rows in flight instead of one
   chain of dependent adds; the chunk stays in L1 from one block to the next); otherwise the rows are read in
   order into four accumulator rows in memory.  A channel gets the same arithmetic in a vector lane or on its own,
   in either order, so the pooled mean of the backward pass equals the forward's. */

#include <stdlib.h>
#include <string.h>
#include "parallel.h"

#define CHUNK 64
#define W 8      /* floats in a vector (add_double takes 8) */
#define NARROW 32 /* channel ranges up to this many, or chunks up to CHUNK rows: the register walk */

typedef float vf __attribute__((vector_size(W * sizeof(float))));
typedef float vf4 __attribute__((vector_size(4 * sizeof(float))));
typedef double vd4 __attribute__((vector_size(4 * sizeof(double))));

static inline vf load(const float *p) {
    vf v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void store(float *p, vf v) { memcpy(p, &v, sizeof v); }

static inline long min_l(long a, long b) { return a < b ? a : b; }

/* tot[0..W) += s, in double */
static inline void add_double(double *tot, vf s) {
    vf4 lo = {s[0], s[1], s[2], s[3]}, hi = {s[4], s[5], s[6], s[7]};
    vd4 t0, t1;
    memcpy(&t0, tot, sizeof t0);
    memcpy(&t1, tot + 4, sizeof t1);
    t0 += __builtin_convertvector(lo, vd4);
    t1 += __builtin_convertvector(hi, vd4);
    memcpy(tot, &t0, sizeof t0);
    memcpy(tot + 4, &t1, sizeof t1);
}

/* tot[0..W) += sum of rows [r0, r1) of x (row stride c) */
static inline void sum_block(const float *x, long c, long r0, long r1, double *tot) {
    vf a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
    long r = r0;
    for (; r + 4 <= r1; r += 4) {
        a0 += load(x + r * c);
        a1 += load(x + (r + 1) * c);
        a2 += load(x + (r + 2) * c);
        a3 += load(x + (r + 3) * c);
    }
    for (; r < r1; r++) a0 += load(x + r * c);
    add_double(tot, (a0 + a1) + (a2 + a3));
}

static inline void sum_one(const float *x, long c, long r0, long r1, double *tot) {
    float a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    long r = r0;
    for (; r + 4 <= r1; r += 4) {
        a0 += x[r * c];
        a1 += x[(r + 1) * c];
        a2 += x[(r + 2) * c];
        a3 += x[(r + 3) * c];
    }
    for (; r < r1; r++) a0 += x[r * c];
    *tot += (double)((a0 + a1) + (a2 + a3));
}

/* tg[0..W) += sum of g * x and tx[0..W) += sum of x over rows [r0, r1) */
static inline void sums2_block(const float *g, const float *x, long c, long r0, long r1, double *tg, double *tx) {
    vf a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0}, b0 = {0}, b1 = {0}, b2 = {0}, b3 = {0};
    long r = r0;
    for (; r + 4 <= r1; r += 4) {
        vf x0 = load(x + r * c), x1 = load(x + (r + 1) * c), x2 = load(x + (r + 2) * c), x3 = load(x + (r + 3) * c);
        a0 += load(g + r * c) * x0;
        a1 += load(g + (r + 1) * c) * x1;
        a2 += load(g + (r + 2) * c) * x2;
        a3 += load(g + (r + 3) * c) * x3;
        b0 += x0, b1 += x1, b2 += x2, b3 += x3;
    }
    for (; r < r1; r++) {
        vf x0 = load(x + r * c);
        a0 += load(g + r * c) * x0;
        b0 += x0;
    }
    add_double(tg, (a0 + a1) + (a2 + a3));
    add_double(tx, (b0 + b1) + (b2 + b3));
}

static inline void sums2_one(const float *g, const float *x, long c, long r0, long r1, double *tg, double *tx) {
    float a0 = 0, a1 = 0, a2 = 0, a3 = 0, b0 = 0, b1 = 0, b2 = 0, b3 = 0;
    long r = r0;
    for (; r + 4 <= r1; r += 4) {
        float x0 = x[r * c], x1 = x[(r + 1) * c], x2 = x[(r + 2) * c], x3 = x[(r + 3) * c];
        a0 += g[r * c] * x0;
        a1 += g[(r + 1) * c] * x1;
        a2 += g[(r + 2) * c] * x2;
        a3 += g[(r + 3) * c] * x3;
        b0 += x0, b1 += x1, b2 += x2, b3 += x3;
    }
    for (; r < r1; r++) {
        float x0 = x[r * c];
        a0 += g[r * c] * x0;
        b0 += x0;
    }
    *tg += (double)((a0 + a1) + (a2 + a3));
    *tx += (double)((b0 + b1) + (b2 + b3));
}

/* Row-major forms of the same sums for wide channel ranges: four accumulator rows acc[k * nc + q] in memory (L1),
   the rows of the input read in order.  The same arithmetic as sum_block / sum_one, channel by channel. */
static inline void add_row(float *restrict acc, const float *restrict xr, long nc) {
    long q = 0;
    for (; q + W <= nc; q += W) store(acc + q, load(acc + q) + load(xr + q));
    for (; q < nc; q++) acc[q] += xr[q];
}

static inline void add_rows2(float *restrict acc, float *restrict accx, const float *restrict g,
                             const float *restrict xr, long nc) {
    long q = 0;
    for (; q + W <= nc; q += W) {
        vf xv = load(xr + q);
        store(acc + q, load(acc + q) + load(g + q) * xv);
        store(accx + q, load(accx + q) + xv);
    }
    for (; q < nc; q++) {
        acc[q] += g[q] * xr[q];
        accx[q] += xr[q];
    }
}

/* tot[q] += (acc[q] + acc[nc + q]) + (acc[2 nc + q] + acc[3 nc + q]) in double */
static inline void add_combined(double *restrict tot, const float *restrict acc, long nc) {
    long q = 0;
    for (; q + W <= nc; q += W)
        add_double(tot + q, (load(acc + q) + load(acc + nc + q)) + (load(acc + 2 * nc + q) + load(acc + 3 * nc + q)));
    for (; q < nc; q++) tot[q] += (double)((acc[q] + acc[nc + q]) + (acc[2 * nc + q] + acc[3 * nc + q]));
}

/* tot[0..nc) = sum over rows [0, hw) of x (row stride c): chunks of CHUNK rows, four float32 accumulators each */
static void sum_rows(const float *x, long c, long hw, long nc, double *tot, float *acc) {
    memset(tot, 0, sizeof(double) * (size_t)nc);
    for (long r0 = 0; r0 < hw; r0 += CHUNK) {
        long r1 = min_l(r0 + CHUNK, hw), q = 0;
        if (nc <= NARROW || hw <= CHUNK) {
            for (; q + W <= nc; q += W) sum_block(x + q, c, r0, r1, tot + q);
            for (; q < nc; q++) sum_one(x + q, c, r0, r1, tot + q);
            continue;
        }
        memset(acc, 0, sizeof(float) * (size_t)nc * 4);
        long r = r0;
        for (; r + 4 <= r1; r += 4)
            for (long k = 0; k < 4; k++) add_row(acc + k * nc, x + (r + k) * c, nc);
        for (; r < r1; r++) add_row(acc, x + r * c, nc);
        add_combined(tot, acc, nc);
    }
}

/* tg = sum of g * x and tx = sum of x over rows [0, hw), as sum_rows forms them */
static void sum_rows2(const float *g, const float *x, long c, long hw, long nc, double *tg, double *tx, float *acc) {
    memset(tg, 0, sizeof(double) * (size_t)nc);
    memset(tx, 0, sizeof(double) * (size_t)nc);
    for (long r0 = 0; r0 < hw; r0 += CHUNK) {
        long r1 = min_l(r0 + CHUNK, hw), q = 0;
        if (nc <= NARROW || hw <= CHUNK) {
            for (; q + W <= nc; q += W) sums2_block(g + q, x + q, c, r0, r1, tg + q, tx + q);
            for (; q < nc; q++) sums2_one(g + q, x + q, c, r0, r1, tg + q, tx + q);
            continue;
        }
        float *accx = acc + 4 * nc;
        memset(acc, 0, sizeof(float) * (size_t)nc * 8);
        long r = r0;
        for (; r + 4 <= r1; r += 4)
            for (long k = 0; k < 4; k++) add_rows2(acc + k * nc, accx + k * nc, g + (r + k) * c, x + (r + k) * c, nc);
        for (; r < r1; r++) add_rows2(acc, accx, g + r * c, x + r * c, nc);
        add_combined(tg, acc, nc);
        add_combined(tx, accx, nc);
    }
}

/* pooled[i, q] = mean over the hw rows of image i of x[i, :, q].  Returns 0, or -1 if out of memory. */
static int se_pool_nhwc_range(const float *x, float *pooled, long n, long hw, long c, long c0, long c1) {
    long nc = c1 - c0;
    if (nc <= 0) return 0;
    double *tot = malloc(sizeof(double) * (size_t)nc);
    float *acc = malloc(sizeof(float) * (size_t)nc * 4);
    if (!tot || !acc) {
        free(tot), free(acc);
        return -1;
    }
    for (long i = 0; i < n; i++) {
        sum_rows(x + i * hw * c + c0, c, hw, nc, tot, acc);
        for (long q = 0; q < nc; q++) pooled[i * c + c0 + q] = (float)(tot[q] / (double)hw);
    }
    free(tot), free(acc);
    return 0;
}

EFFNET_PARALLEL(se_pool_nhwc, 16, (const float *x, float *pooled, long n, long hw, long c, long k0, long k1,
                long threads),
                (x, pooled, n, hw, c, a, b))

/* out[i, r, q] = x[i, r, q] * gate[i, q] */
static int se_scale_nhwc_range(const float *x, const float *gate, float *out, long n, long hw, long c, long c0,
                               long c1) {
    long nc = c1 - c0;
    for (long i = 0; i < n; i++) {
        const float *s = gate + i * c + c0;
        for (long r = 0; r < hw; r++) {
            long at = (i * hw + r) * c + c0, q = 0;
            for (; q + W <= nc; q += W) store(out + at + q, load(x + at + q) * load(s + q));
            for (; q < nc; q++) out[at + q] = x[at + q] * s[q];
        }
    }
    return 0;
}

EFFNET_PARALLEL(se_scale_nhwc, 16, (const float *x, const float *gate, float *out, long n, long hw, long c, long k0,
                long k1, long threads),
                (x, gate, out, n, hw, c, a, b))

/* dgate[i, q] = sum over the hw rows of image i of grad * x, and pooled[i, q] = their mean of x (the value
   se_pool_nhwc gives).  Returns 0, or -1 if out of memory. */
static int se_backward_sums_nhwc_range(const float *grad, const float *x, float *dgate, float *pooled, long n, long hw,
                                       long c, long c0, long c1) {
    long nc = c1 - c0;
    if (nc <= 0) return 0;
    double *tot = malloc(sizeof(double) * (size_t)nc * 2);
    float *acc = malloc(sizeof(float) * (size_t)nc * 8);
    if (!tot || !acc) {
        free(tot), free(acc);
        return -1;
    }
    double *tg = tot, *tx = tot + nc;
    for (long i = 0; i < n; i++) {
        long base = i * hw * c + c0;
        sum_rows2(grad + base, x + base, c, hw, nc, tg, tx, acc);
        for (long q = 0; q < nc; q++) {
            dgate[i * c + c0 + q] = (float)tg[q];
            pooled[i * c + c0 + q] = (float)(tx[q] / (double)hw);
        }
    }
    free(tot), free(acc);
    return 0;
}

EFFNET_PARALLEL(se_backward_sums_nhwc, 16, (const float *grad, const float *x, float *dgate, float *pooled, long n,
                long hw, long c, long k0, long k1, long threads),
                (grad, x, dgate, pooled, n, hw, c, a, b))

/* dx[i, r, q] = grad[i, r, q] * gate[i, q] + dmean[i, q] */
static int se_grad_x_nhwc_range(const float *grad, const float *gate, const float *dmean, float *dx, long n, long hw,
                                long c, long c0, long c1) {
    long nc = c1 - c0;
    for (long i = 0; i < n; i++) {
        const float *s = gate + i * c + c0, *d = dmean + i * c + c0;
        for (long r = 0; r < hw; r++) {
            long at = (i * hw + r) * c + c0, q = 0;
            for (; q + W <= nc; q += W) store(dx + at + q, load(grad + at + q) * load(s + q) + load(d + q));
            for (; q < nc; q++) dx[at + q] = grad[at + q] * s[q] + d[q];
        }
    }
    return 0;
}

EFFNET_PARALLEL(se_grad_x_nhwc, 16, (const float *grad, const float *gate, const float *dmean, float *dx, long n,
                long hw, long c, long k0, long k1, long threads),
                (grad, gate, dmean, dx, n, hw, c, a, b))
