// Host-side helpers of every mvaccel op (ATen: checks, dispatch); the
// device-safe part is device.cuh.
#pragma once

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>

#include <cstdint>

// MVACCEL_HD, OpMath: the device-safe part, which the kernel headers include
// without ATen (NVRTC compiles them too).
#include "device.cuh"

namespace mvaccel {
template <>
struct OpMath<c10::Half> {
  using type = float;
};
template <>
struct OpMath<c10::BFloat16> {
  using type = float;
};
static_assert(sizeof(c10::Half) == 2 && sizeof(c10::BFloat16) == 2,
              "16-bit floats travel to NVRTC kernels as 2-byte bits");
}  // namespace mvaccel

// Floating dtypes every op accepts: float32, float64, float16, bfloat16.
#define MVACCEL_DISPATCH_FLOATING(TYPE, NAME, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(                 \
      at::ScalarType::Half, at::ScalarType::BFloat16, TYPE, NAME, __VA_ARGS__)

namespace mvaccel {

// A user-facing check on a tensor's rank that names the op, the argument
// and the shape it got.
inline void check_dim(const at::Tensor& t, int64_t dim, const char* op,
                      const char* arg, const char* layout) {
  TORCH_CHECK(t.dim() == dim, op, ": expected ", arg, " of shape ", layout,
              " (", dim, " dimensions), got shape ", t.sizes());
}

inline void check_floating(const at::Tensor& t, const char* op,
                           const char* arg) {
  TORCH_CHECK(at::isFloatingType(t.scalar_type()), op, ": expected ", arg,
              " to be float32, float64, float16 or bfloat16, got ",
              t.scalar_type());
}

}  // namespace mvaccel
