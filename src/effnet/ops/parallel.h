/* Threads for effnet's kernels.  EFFNET_PARALLEL(name, align, params, args) defines the exported kernel `name`,
   whose last three parameters are (k0, k1, threads): it runs `name##_range` over [k0, k1) cut into `threads`
   contiguous ranges, their edges at multiples of `align` units from k0, one range per thread of OpenMP's pool.
   `args` are `name##_range`'s arguments, with `a` and `b` for the range's ends.

   Built with -fopenmp, a kernel library takes the process's libgomp: torch's own, loaded before it, so the kernels
   run on the threads torch's operators use (torch.set_num_threads sets their number), with no second set of threads
   competing with them for the cores, and a parallel region costs about a microsecond.  Without OpenMP the ranges
   run one after another.  Every range writes only its own outputs and per-chunk or per-channel sums, so no result
   depends on the split. */
#ifndef EFFNET_PARALLEL_H
#define EFFNET_PARALLEL_H

#define EFFNET_PARALLEL(name, align, params, args)                                                                   \
    int name params {                                                                                                \
        int failed = 0;                                                                                              \
        long units = (k1 - k0 + (align)-1) / (align);                                                                \
        _Pragma("omp parallel for num_threads(threads) schedule(static, 1) reduction(| : failed) if (threads > 1)")  \
        for (long t = 0; t < threads; t++) {                                                                         \
            long a = k0 + (align) * (units * t / threads), b = k0 + (align) * (units * (t + 1) / threads);           \
            if (b > k1) b = k1;                                                                                      \
            if (a < b && name##_range args) failed = 1;                                                              \
        }                                                                                                            \
        return failed ? -1 : 0;                                                                                      \
    }

#endif
