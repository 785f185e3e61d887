// Device-safe basics shared by every kernel header (*.cuh, *_math.h): the
// host/device function macro, fixed-width integers, the accumulation type
// of each scalar type (opmath) and, under NVRTC, 16-bit float types.
//
// Three compilers read the kernel headers: the host C++ compiler (CPU
// loops), nvcc (the built CUDA extension) and NVRTC at run time
// (mvaccel/ops/_nvrtc.py). NVRTC has no C++ standard library and no ATen, so
// nothing here or in a kernel header may include either: host-only code
// (TORCH_CHECK, at::Tensor, planning) stays in the ops' .h / .cu files.
#pragma once

#ifndef __CUDACC_RTC__
#include <cstdint>
#else
// NVRTC: the LP64 widths of <cstdint>.
typedef signed char int8_t;
typedef short int16_t;
typedef int int32_t;
typedef long int64_t;
typedef unsigned char uint8_t;
typedef unsigned short uint16_t;
typedef unsigned int uint32_t;
typedef unsigned long uint64_t;
#endif

// Inline math that both the C++ loops (.cpp) and the CUDA kernels include:
// written once, compiled by the host compiler, nvcc and NVRTC.
#if defined(__CUDACC__) || defined(__HIPCC__) || defined(__CUDACC_RTC__)
#define MVACCEL_HD __host__ __device__ __forceinline__
#else
#define MVACCEL_HD inline
#endif

namespace mvaccel {

// Accumulation type of a scalar type: the type itself, except that 16-bit
// floats accumulate in float (as at::opmath_type). common.h adds c10::Half
// and c10::BFloat16 for the host and nvcc builds; NVRTC's 16-bit types are
// below.
template <typename T>
struct OpMath {
  using type = T;
};
template <typename T>
using opmath_t = typename OpMath<T>::type;

#ifdef __CUDACC_RTC__
// Storage-compatible stand-ins for c10::Half / c10::BFloat16 (2 bytes, the
// same bits), converted through float like PyTorch's jiterator preamble:
// NVRTC ships without cuda_fp16.h.
struct __align__(2) half_t {
  uint16_t x;
  half_t() = default;
  __device__ half_t(float f) {
    asm("{ cvt.rn.f16.f32 %0, %1; }" : "=h"(x) : "f"(f));
  }
  __device__ operator float() const {
    float f;
    asm("{ cvt.f32.f16 %0, %1; }" : "=f"(f) : "h"(x));
    return f;
  }
};

struct __align__(2) bfloat16_t {
  uint16_t x;
  bfloat16_t() = default;
  // Round to nearest even, NaN kept quiet (c10::BFloat16's rule).
  __device__ bfloat16_t(float f) {
    const uint32_t u = __float_as_uint(f);
    if (f != f) {
      x = 0x7FC0;
    } else {
      const uint32_t rounding_bias = 0x7FFFu + ((u >> 16) & 1u);
      x = static_cast<uint16_t>((u + rounding_bias) >> 16);
    }
  }
  __device__ operator float() const {
    return __uint_as_float(static_cast<uint32_t>(x) << 16);
  }
};

template <>
struct OpMath<half_t> {
  using type = float;
};
template <>
struct OpMath<bfloat16_t> {
  using type = float;
};
#endif

// 16 bytes of T: one vector load or store (ld/st.global.v4.b32 or .v2.b64)
// where the address is 16-byte aligned.
template <typename T>
struct alignas(16) Vec16 {
  static constexpr int kN = 16 / sizeof(T);
  T v[kN];
};

// 16-byte load / store at a 16-byte aligned global address: one vector
// instruction on the device (a uint4 load; an explicit st.global.v4, since a
// struct or uint4 copy of values computed separately may be split into
// scalar stores), a struct copy on the host.
template <typename T>
MVACCEL_HD Vec16<T> load16(const T* src) {
  Vec16<T> v;
#ifdef __CUDA_ARCH__
  *reinterpret_cast<uint4*>(&v) = *reinterpret_cast<const uint4*>(src);
#else
  v = *reinterpret_cast<const Vec16<T>*>(src);
#endif
  return v;
}

template <typename T>
MVACCEL_HD void store16(T* dst, const Vec16<T>& v) {
#ifdef __CUDA_ARCH__
  union {
    Vec16<T> v;
    uint32_t w[4];
  } u;
  u.v = v;
  asm volatile("st.global.v4.u32 [%0], {%1, %2, %3, %4};" ::"l"(dst),
               "r"(u.w[0]), "r"(u.w[1]), "r"(u.w[2]), "r"(u.w[3])
               : "memory");
#else
  *reinterpret_cast<Vec16<T>*>(dst) = v;
#endif
}

}  // namespace mvaccel
