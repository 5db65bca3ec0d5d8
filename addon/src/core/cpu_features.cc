// Which kernel family this CPU can run: AVX-512 (F/BW/VL/DQ) with or without AVX512_BF16,
// AVX2 with FMA and F16C, or the portable scalar code. Detection checks the OS saves the wide
// registers (XCR0) as well as the CPUID bits, since a VM can hide AVX-512 state.
#include <atomic>

#include "kernels_internal.h"

#ifdef BMRT_X86
#ifdef _MSC_VER
#include <immintrin.h>
#include <intrin.h>
#endif
#endif

namespace bmrt {
namespace detail {

static Family detect() {
#ifdef BMRT_X86
#ifdef _MSC_VER
  int info[4];
  __cpuid(info, 0);
  const int max_leaf = info[0];
  __cpuid(info, 1);
  const bool fma = (info[2] & (1 << 12)) != 0, osxsave = (info[2] & (1 << 27)) != 0,
             f16c = (info[2] & (1 << 29)) != 0;
  if (!osxsave || max_leaf < 7) return Family::Scalar;
  const unsigned long long xcr0 = _xgetbv(0);
  const bool ymm_state = (xcr0 & 0x6) == 0x6, zmm_state = (xcr0 & 0xe6) == 0xe6;
  __cpuidex(info, 7, 0);
  const bool avx2 = (info[1] & (1 << 5)) != 0 && fma && f16c && ymm_state;
  const bool avx512 = avx2 && zmm_state && (info[1] & (1 << 16)) && (info[1] & (1 << 17)) &&
                      (info[1] & (1 << 30)) && (info[1] & (1u << 31));
  __cpuidex(info, 7, 1);
  const bool bf16 = (info[0] & (1 << 5)) != 0;
#else
  __builtin_cpu_init();
  // __builtin_cpu_supports also checks the OS-enabled state (XCR0) in libgcc / compiler-rt.
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
  const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  const bool bf16 = __builtin_cpu_supports("avx512bf16");
#endif
  if (avx512 && bf16) return Family::Avx512Bf16;
  if (avx512) return Family::Avx512;
  if (avx2) return Family::Avx2;
#endif
  return Family::Scalar;
}

Family detected_family() {
  static const Family family = detect();
  return family;
}

static std::atomic<int> forced{-1};  // -1: automatic

Family active_family() {
  const int f = forced.load(std::memory_order_relaxed);
  return f < 0 ? detected_family() : static_cast<Family>(f);
}

const char* family_name(Family f) {
  switch (f) {
    case Family::Scalar: return "scalar";
    case Family::Avx2: return "avx2";
    case Family::Avx512: return "avx512";
    case Family::Avx512Bf16: return "avx512bf16";
  }
  return "?";
}

}  // namespace detail

std::string cpu_kernel_family() { return detail::family_name(detail::active_family()); }

bool force_kernel_family(const std::string& name) {
  using detail::Family;
  if (name.empty()) {
    detail::forced = -1;
    return true;
  }
  for (Family f : {Family::Scalar, Family::Avx2, Family::Avx512, Family::Avx512Bf16}) {
    if (name != detail::family_name(f)) continue;
    if (static_cast<int>(f) > static_cast<int>(detail::detected_family())) return false;
    detail::forced = static_cast<int>(f);
    return true;
  }
  return false;
}

}  // namespace bmrt
