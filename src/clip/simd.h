#pragma once
// Small building blocks of the fused CPU loops (fused_ops.cpp, attention_cpu.cpp): a 16-float vector type and a
// vectorisable e^x. Functions using them are compiled once per instruction set (target_clones) and need
// -fno-trapping-math (CMakeLists.txt) so that GCC vectorises their comparisons.
#include <algorithm>
#include <cstdint>
#include <cstring>

namespace kclip::detail::simd {

// 16 floats; aligned(4): loads and stores at any float address.
typedef float v16 __attribute__((vector_size(64), aligned(4)));
constexpr int64_t kLanes = 16;

// Vectors go to helpers by reference and come from memory by an expression, never by value through a call: a
// 64-byte vector passed by value changes the calling convention between the targets of target_clones (an error
// in clang, a -Wpsabi note in GCC).
#define KCLIP_LOAD16(p) (*reinterpret_cast<const ::kclip::detail::simd::v16*>(p))
inline void store(float* p, const v16& x) { *reinterpret_cast<v16*>(p) = x; }

inline float sum(const v16& x) {
  float total = 0;
  for (int64_t i = 0; i < kLanes; ++i) total += x[i];
  return total;
}

inline float max(const v16& x) {
  float top = x[0];
  for (int64_t i = 1; i < kLanes; ++i) top = std::max(top, x[i]);
  return top;
}

// e^x in float32 within 2 ulp (Cephes' expf: 2^n · polynomial on |r| ≤ ln2/2), written so loops vectorize.
// Below -87 (where e^x leaves the normal floats) it is 0, e^-inf included; above 88 it is e^88 (no inf).
inline float exp_approx(float x) {
  const bool underflow = x < -87.0f;
  x = std::max(-87.0f, std::min(x, 88.0f));
  // n = round(x / ln2) by the float's own rounding: adding 1.5·2^23 leaves no fraction bits (|x / ln2| < 2^22)
  constexpr float kRound = 12582912.0f;
  const float n = (x * 1.44269504088896341f + kRound) - kRound;
  const float r = x - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return underflow ? 0.0f : p * scale;
}

}  // namespace kclip::detail::simd
