// Shared by the fused CPU kernels (see ase_so3/so3/cpu_kernels.py).
#pragma once

#include <cstdint>

// Explicit SIMD through GCC vector types (32 bytes: AVX width). Left to itself, the compiler
// unrolls a short channel loop and vectorizes across rows, with shuffles; and it does not
// vectorize a floating-point sum at all.
template <typename T>
struct Simd {
  static constexpr int64_t width = 32 / sizeof(T);
  typedef T V __attribute__((vector_size(32)));
  static V load(const T* p) { V v; __builtin_memcpy(&v, p, sizeof(V)); return v; }
  static void store(T* p, const V& v) { __builtin_memcpy(p, &v, sizeof(V)); }
  static T sum(const V& v) {
    T s = 0;
    for (int64_t i = 0; i < width; ++i) s += v[i];
    return s;
  }
};

