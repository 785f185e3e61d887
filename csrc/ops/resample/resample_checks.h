// Argument checks of block_upsample, mv_resize and their backward ops: one
// host function per entry point, called as the first line of the CPU and the
// CUDA kernel (the same checks, the same messages on every backend). Each
// returns the Plan of the call. The fake (meta) kernels in
// mvaccel/ops/resample.py mirror them.
#pragma once

#include <string>

#include "../memory.h"
#include "resample.h"

namespace mvaccel {
namespace resample {

inline Plan block_upsample_plan(const char* op, int64_t in_h, int64_t in_w,
                                int64_t block_h, int64_t block_w, int64_t out_h,
                                int64_t out_w, const std::string& mode) {
  TORCH_CHECK(mode == "nearest" || mode == "bilinear", op,
              ": mode must be 'nearest' or 'bilinear', got '", mode, "'");
  TORCH_CHECK(block_h >= 1 && block_w >= 1, op,
              ": block size must be positive, got (", block_h, ", ", block_w,
              ")");
  TORCH_CHECK(out_h >= 1 && out_w >= 1, op,
              ": output size must be positive, got (", out_h, ", ", out_w, ")");
  const int64_t need_h = (out_h + block_h - 1) / block_h;
  const int64_t need_w = (out_w + block_w - 1) / block_w;
  TORCH_CHECK(in_h == need_h && in_w == need_w, op, ": a (", out_h, ", ", out_w,
              ") output with (", block_h, ", ", block_w, ") blocks needs a (",
              need_h, ", ", need_w, ") block grid (ceil(out / block)), got (",
              in_h, ", ", in_w, ")");
  Plan p;
  p.mode = mode == "nearest" ? kNearestBlock : kLinear;
  p.in_h = in_h;
  p.in_w = in_w;
  p.out_h = out_h;
  p.out_w = out_w;
  p.block_h = block_h;
  p.block_w = block_w;
  p.scale_h = 1.0 / static_cast<double>(block_h);
  p.scale_w = 1.0 / static_cast<double>(block_w);
  p.factor_x = p.factor_y = 1.0;
  p.scale_values = false;
  return p;
}

inline Plan mv_resize_plan(const char* op, int64_t in_h, int64_t in_w,
                           int64_t out_h, int64_t out_w,
                           const std::string& mode) {
  TORCH_CHECK(mode == "nearest" || mode == "bilinear", op,
              ": mode must be 'nearest' or 'bilinear', got '", mode, "'");
  TORCH_CHECK(out_h >= 1 && out_w >= 1, op,
              ": output size must be positive, got (", out_h, ", ", out_w, ")");
  TORCH_CHECK(in_h >= 1 && in_w >= 1, op,
              ": input field must have a positive size, got (", in_h, ", ",
              in_w, ")");
  Plan p;
  p.mode = mode == "nearest" ? kNearestExact : kLinear;
  p.in_h = in_h;
  p.in_w = in_w;
  p.out_h = out_h;
  p.out_w = out_w;
  p.block_h = p.block_w = 1;
  p.scale_h = static_cast<double>(in_h) / static_cast<double>(out_h);
  p.scale_w = static_cast<double>(in_w) / static_cast<double>(out_w);
  p.factor_x = static_cast<double>(out_w) / static_cast<double>(in_w);
  p.factor_y = static_cast<double>(out_h) / static_cast<double>(in_h);
  p.scale_values = true;
  return p;
}

// The output is the only large allocation (the kernels read their input in
// place, whatever its strides).
inline void check_output_fits(const char* op, const at::Tensor& ref, int64_t h,
                              int64_t w) {
  const double numel = static_cast<double>(ref.size(0)) *
                       static_cast<double>(ref.size(1)) *
                       static_cast<double>(h) * static_cast<double>(w);
  check_fits_in_memory(op, ref.device(), bytes_of(ref, numel), "the output");
}

inline Plan check_block_upsample(const at::Tensor& x, int64_t block_h,
                                 int64_t block_w, int64_t out_h, int64_t out_w,
                                 const std::string& mode) {
  const char* op = "mvaccel.block_upsample";
  check_dim(x, 4, op, "x", "(N, C, Hb, Wb)");
  check_floating(x, op, "x");
  const Plan p = block_upsample_plan(op, x.size(2), x.size(3), block_h, block_w,
                                     out_h, out_w, mode);
  check_output_fits(op, x, p.out_h, p.out_w);
  return p;
}

inline Plan check_block_upsample_backward(const at::Tensor& grad, int64_t in_h,
                                          int64_t in_w, int64_t block_h,
                                          int64_t block_w,
                                          const std::string& mode) {
  const char* op = "mvaccel._block_upsample_backward";
  check_dim(grad, 4, op, "grad", "(N, C, H, W)");
  check_floating(grad, op, "grad");
  const Plan p = block_upsample_plan(op, in_h, in_w, block_h, block_w,
                                     grad.size(2), grad.size(3), mode);
  check_output_fits(op, grad, p.in_h, p.in_w);
  return p;
}

inline Plan check_mv_resize(const at::Tensor& mv, int64_t out_h, int64_t out_w,
                            const std::string& mode) {
  const char* op = "mvaccel.mv_resize";
  check_dim(mv, 4, op, "mv", "(N, 2, H, W)");
  check_floating(mv, op, "mv");
  TORCH_CHECK(mv.size(1) == 2, op,
              ": expected mv of shape (N, 2, H, W) (channel 0 = x, 1 = y), "
              "got shape ",
              mv.sizes());
  const Plan p = mv_resize_plan(op, mv.size(2), mv.size(3), out_h, out_w, mode);
  check_output_fits(op, mv, p.out_h, p.out_w);
  return p;
}

inline Plan check_mv_resize_backward(const at::Tensor& grad, int64_t in_h,
                                     int64_t in_w, const std::string& mode) {
  const char* op = "mvaccel._mv_resize_backward";
  check_dim(grad, 4, op, "grad", "(N, 2, H, W)");
  check_floating(grad, op, "grad");
  TORCH_CHECK(grad.size(1) == 2, op,
              ": expected grad of shape (N, 2, H, W), got shape ",
              grad.sizes());
  const Plan p =
      mv_resize_plan(op, in_h, in_w, grad.size(2), grad.size(3), mode);
  check_output_fits(op, grad, p.in_h, p.in_w);
  return p;
}

}  // namespace resample
}  // namespace mvaccel
