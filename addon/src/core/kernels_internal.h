// Declarations shared by the kernel files (kernels.cc: formats, packing, dispatch; cpu_features.cc:
// CPU detection; kernels_scalar.cc / kernels_avx2.cc / kernels_avx512.cc: one instruction set each).
// Not part of the addon's interface.
//
// The packed layout (built by prepare_matrix, the only thing linear() reads when present):
// W is cut into panels of kPanel = 16 consecutive rows (out-features), the last one zero-padded.
// Inside a panel the 16 rows are interleaved along K, so one 64-byte load gives "16 rows at k":
// the SIMD lanes are out-features, activations are broadcast, and results are stored as vectors
// straight into y[t][rows] without horizontal sums. The same layout serves decode (stream each
// panel once) and prefill (GEMM microkernels reading panels as the B operand). Every format keeps
// its own precision, so `packed` is no larger than `data` (plus padding) and could replace it:
//   F32:  float    [kp][16]                                        (kp = cols rounded up to 4)
//   BF16: uint16   [kp/2][16][2]   pairs (k, k+1) of one row side by side, as vdpbf16ps wants
//   F16:  uint16   [kp][16]
//   Q8:   float    scales[16], then int8 [kp][16]
//   Q4:   per group of 32 k: float scales[16], then uint8 [16][16] where byte [j][r] is byte j of
//         row r's group (low nibble: k = 32g + j, high nibble: k = 32g + j + 16). Rows have
//         ceil(cols / 32) groups, a short last one zero-padded (as quantize_q4 writes them).
// Panels are stored one after the other, each panel_bytes() long (a multiple of 64).
#pragma once
#include <cstdint>

#include "kernels.h"

// BMRT_NO_SIMD builds only the portable code (to check the non-x86 build on an x86 machine).
#if (defined(__x86_64__) || defined(_M_X64)) && !defined(BMRT_NO_SIMD)
#define BMRT_X86 1
#ifdef _MSC_VER
#define BMRT_TARGET(x)  // MSVC compiles any intrinsic without target attributes
#else
#define BMRT_TARGET(x) __attribute__((target(x)))
#endif
#define BMRT_AVX2 BMRT_TARGET("avx2,fma,f16c")
#define BMRT_AVX512 BMRT_TARGET("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")
#define BMRT_AVX512BF16 BMRT_TARGET("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx2,fma,f16c")
#endif

namespace bmrt {
namespace detail {

// Kernel families in increasing capability; a CPU that runs one runs all below it.
enum class Family { Scalar = 0, Avx2 = 1, Avx512 = 2, Avx512Bf16 = 3 };

Family detected_family();  // best the CPU supports (cpu_features.cc)
Family active_family();    // what linear() uses now (detected or forced)
const char* family_name(Family f);

constexpr int64_t kPanel = 16;

inline int64_t panel_count(int64_t rows) { return (rows + kPanel - 1) / kPanel; }
inline int64_t padded_cols(int64_t cols) { return (cols + 3) / 4 * 4; }
int64_t panel_bytes(WeightFormat f, int64_t cols);
inline const uint8_t* panel_ptr(const Matrix& w, int64_t p) {
  return static_cast<const uint8_t*>(w.packed) + p * panel_bytes(w.format, w.cols);
}

// One linear() call as the per-ISA kernels see it.
struct Job {
  const Matrix* w = nullptr;
  const float* x = nullptr;  // [n][cols] row-major
  int64_t n = 0;
  const float* bias = nullptr;
  float* y = nullptr;        // [n][rows]
  // Prefill only: activations repacked per block of `mr` tokens (see pack_activations).
  int mr = 0;
  const float* xp = nullptr;      // fp32: block b (tokens t0..t0+m) at xp + t0*cols, [k][m]
  const uint32_t* xbp = nullptr;  // bf16 pairs: block b at xbp + t0*pairs, [k/2][m]
  // Q4 decode: sum of each group of 32 activations, [n][ceil(cols/32)] (folds the "- 8" in once).
  const float* xsum = nullptr;
};

// Token blocks of a prefill: n tokens cut into blocks of at most mr, sizes as even as possible
// (128 tokens with mr 12 -> 7 x 12 + 4 x 11) so no block runs a mostly-empty microkernel.
struct TokenBlocks {
  int64_t count, base, extra;  // `extra` blocks of base+1 tokens, then blocks of base tokens
  TokenBlocks(int64_t n, int mr) {
    count = (n + mr - 1) / mr;
    base = n / count;
    extra = n % count;
  }
  int64_t start(int64_t b) const { return b * base + (b < extra ? b : extra); }
  int64_t size(int64_t b) const { return base + (b < extra ? 1 : 0); }
};

// Fills 16 rows x kc columns of fp32 from panel p (any format) starting at column k0: out[k][16].
// k0 and kc multiples of 32 for Q4 (except a final partial block ending at cols).
void dequantize_panel_portable(const Matrix& w, int64_t p, int64_t k0, int64_t kc, float* out);

// Per-ISA entry points: compute y for panels [p0, p1) and all n tokens of the job.
// decode_*: n <= kDecodeMax (AVX2: kDecodeMaxAvx2), reads job.x directly. gemm_*: any n, reads
// the packed activations.
constexpr int64_t kDecodeMax = 8;
void linear_panels_scalar(const Job& job, int64_t p0, int64_t p1);
constexpr int kMrAvx2 = 6, kMrAvx512 = 12, kMrBf16 = 12;
constexpr int64_t kDecodeMaxAvx2 = 4;  // fewer ymm registers: more tokens go to the GEMM path
void decode_avx2(const Job& job, int64_t p0, int64_t p1);
void gemm_avx2(const Job& job, int64_t p0, int64_t p1);
void decode_avx512(const Job& job, int64_t p0, int64_t p1);
void gemm_avx512(const Job& job, int64_t p0, int64_t p1);      // fp32 microkernel (any format)
void gemm_avx512bf16(const Job& job, int64_t p0, int64_t p1);  // BF16 weights, vdpbf16ps
void round_to_bf16_pairs_avx512bf16(const float* src, int64_t count, uint32_t* dst_pairs);

// attend() on AVX-512 (the portable version lives in kernels.cc).
void attend_avx512(const float* q, const float* keys, const float* values, int64_t count, int64_t stride, int dim,
                   float scale, float* scores, float* out);

// Probe loops (return a value so the work cannot be optimised away).
double sum_floats_scalar(const float* p, int64_t n);
double sum_floats_avx2(const float* p, int64_t n);
double sum_floats_avx512(const float* p, int64_t n);
double fma_chains_scalar(int64_t iterations, double* flops);
double fma_chains_avx2(int64_t iterations, double* flops);
double fma_chains_avx512(int64_t iterations, double* flops);
double bf16_chains_avx512bf16(int64_t iterations, double* flops);

}  // namespace detail
}  // namespace bmrt
