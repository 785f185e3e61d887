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

}  // namespace mvaccel
