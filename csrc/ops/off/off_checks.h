// Argument checks of off_gradients, off_gradients_stack and their backward
// ops: one host function per entry point, called as the first line of the CPU
// and the CUDA kernel (the same checks and messages on every backend),
// before rows_contiguous copies anything. They end with the planned
// allocation checked against the device's available memory. The fake (meta)
// kernels in mvaccel/ops/off.py mirror them.
#pragma once

#include "../memory.h"
#include "off.h"

namespace mvaccel {
namespace off {

// Bytes rows_contiguous(t) allocates.
inline double row_copy_bytes(const at::Tensor& t) {
  return t.size(-1) <= 1 || t.stride(-1) == 1
             ? 0.0
             : bytes_of(t, static_cast<double>(t.numel()));
}

inline void check_pair(const at::Tensor& f_t, const at::Tensor& f_prev) {
  const char* op = "mvaccel.off_gradients";
  check_dim(f_t, 4, op, "f_t", "(N, C, H, W)");
  check_dim(f_prev, 4, op, "f_prev", "(N, C, H, W)");
  check_floating(f_t, op, "f_t");
  TORCH_CHECK(f_t.sizes() == f_prev.sizes(), op,
              ": f_t and f_prev must have the same shape, got ", f_t.sizes(),
              " and ", f_prev.sizes());
  TORCH_CHECK(f_t.scalar_type() == f_prev.scalar_type(), op,
              ": f_t and f_prev must have the same dtype, got ",
              f_t.scalar_type(), " and ", f_prev.scalar_type());
  TORCH_CHECK(f_t.device() == f_prev.device(), op,
              ": f_t and f_prev must be on the same device, got ", f_t.device(),
              " and ", f_prev.device());
  const double n = static_cast<double>(f_t.numel());
  const double copies =
      is_channels_last(f_t, 1)
          ? (f_prev.stride(1) == 1 ? 0.0 : bytes_of(f_prev, n))
          : row_copy_bytes(f_t) + row_copy_bytes(f_prev);
  check_fits_in_memory(op, f_t.device(), bytes_of(f_t, 3 * n) + copies,
                       "the (N, 3C, H, W) output and input copies");
}

inline void check_stack(const at::Tensor& f) {
  const char* op = "mvaccel.off_gradients_stack";
  check_dim(f, 5, op, "f", "(N, T, C, H, W)");
  check_floating(f, op, "f");
  TORCH_CHECK(f.size(1) >= 2, op,
              ": the stack needs at least 2 frames (T >= 2), got shape ",
              f.sizes());
  const double pairs = static_cast<double>(f.numel()) /
                       static_cast<double>(f.size(1)) *
                       static_cast<double>(f.size(1) - 1);
  check_fits_in_memory(op, f.device(),
                       bytes_of(f, 3 * pairs) +
                           (is_channels_last(f, 2) ? 0.0 : row_copy_bytes(f)),
                       "the (N, T - 1, 3C, H, W) output and a row-contiguous "
                       "copy");
}

inline void check_grad_pair(const at::Tensor& grad) {
  const char* op = "mvaccel._off_gradients_backward";
  check_dim(grad, 4, op, "grad", "(N, 3C, H, W)");
  check_floating(grad, op, "grad");
  TORCH_CHECK(grad.size(1) % 3 == 0, op,
              ": grad must have 3C channels (Fx, Fy, Ft), got shape ",
              grad.sizes());
  check_fits_in_memory(
      op, grad.device(),
      bytes_of(grad, 2.0 / 3.0 * grad.numel()) +
          (is_channels_last(grad, 1) ? 0.0 : row_copy_bytes(grad)),
      "the two (N, C, H, W) gradients");
}

inline void check_grad_stack(const at::Tensor& grad) {
  const char* op = "mvaccel._off_gradients_stack_backward";
  check_dim(grad, 5, op, "grad", "(N, T - 1, 3C, H, W)");
  check_floating(grad, op, "grad");
  TORCH_CHECK(grad.size(2) % 3 == 0, op,
              ": grad must have 3C channels (Fx, Fy, Ft), got shape ",
              grad.sizes());
  const double frames = grad.size(1) > 0
                            ? static_cast<double>(grad.numel()) / 3.0 /
                                  static_cast<double>(grad.size(1)) *
                                  static_cast<double>(grad.size(1) + 1)
                            : 0.0;
  check_fits_in_memory(
      op, grad.device(),
      bytes_of(grad, frames) +
          (is_channels_last(grad, 2) ? 0.0 : row_copy_bytes(grad)),
      "the (N, T, C, H, W) gradient");
}

}  // namespace off
}  // namespace mvaccel
