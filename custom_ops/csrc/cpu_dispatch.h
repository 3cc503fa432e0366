// CPU multi-versioning shared by the CPU kernels.
#pragma once

// Multi-versioned entry points (x86-64 Linux, GCC): the same loops, inlined into each version,
// compiled for AVX-512, AVX2 and the baseline, chosen at load time by the CPU (an ifunc). Wider
// vectors change nothing in the values: lanes are independent (channels, candidate boxes), and
// nothing is fused (-ffp-contract=off) or reassociated.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define CUSTOM_OPS_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#define CUSTOM_OPS_INLINE inline __attribute__((always_inline))
#else
#define CUSTOM_OPS_CLONES
#define CUSTOM_OPS_INLINE inline
#endif
