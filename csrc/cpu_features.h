// Run-time CPU feature detection: the wheel is built for generic x86-64 and each kernel picks its
// widest SIMD path here, so one binary runs everywhere and uses AVX-512 where the CPU has it.
#pragma once

namespace densescale {

enum class Isa { Generic = 0, Avx2 = 1, Avx512 = 2 };

inline Isa detect_isa() {
#if defined(__x86_64__) || defined(_M_X64)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
    return Isa::Avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
      __builtin_cpu_supports("f16c"))
    return Isa::Avx2;
#endif
  return Isa::Generic;
}

// DENSESCALE_ISA=generic|avx2|avx512 caps the choice (for tests and benchmarks of each path).
Isa active_isa();
const char* isa_name(Isa isa);

}  // namespace densescale
