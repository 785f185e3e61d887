// Resampling of block-level maps and motion fields: the math behind
// block_upsample and mv_resize (device-safe code in resample_math.cuh, shared
// by the C++ loops, nvcc and NVRTC) and the host-side planning of a call.
//
// Both ops map an input plane (Hin, Win) to an output plane (Hout, Wout) one
// axis at a time. Along an axis an output index d reads input indices i0, i1
// with weights (1 - w1, w1):
//
//   kNearestBlock  i0 = i1 = d / block                     (codec semantics)
//   kNearestExact  i0 = i1 = min(floor((d + 0.5) * s), in - 1)
//   kLinear        r = max(s * (d + 0.5) - 0.5, 0); i0 = floor(r);
//                  i1 = min(i0 + 1, in - 1); w1 = r - i0    (pixel centres)
//
// where s = in / out (or 1 / block). These are the formulas of
// F.interpolate(mode="nearest-exact" / "bilinear", align_corners=False), so
// the pure-torch references in mvaccel/ops/reference.py are one call each.
//
// The backward gathers instead of scattering (deterministic, no atomics):
// input index i receives from the contiguous output range returned by
// dst_range(i), with the weight given by weight(d, i).
#pragma once

#include <cmath>
#include <string>

#include "../../common.h"
#include "resample_math.cuh"

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

// Shape checks shared by the backends; they return the plan for the call.
inline Plan plan_block_upsample(const at::Tensor& x, int64_t block_h,
                                int64_t block_w, int64_t out_h, int64_t out_w,
                                const std::string& mode) {
  const char* op = "mvaccel.block_upsample";
  check_dim(x, 4, op, "x", "(N, C, Hb, Wb)");
  check_floating(x, op, "x");
  return block_upsample_plan(op, x.size(2), x.size(3), block_h, block_w, out_h,
                             out_w, mode);
}

inline Plan plan_block_upsample_backward(const at::Tensor& grad, int64_t in_h,
                                         int64_t in_w, int64_t block_h,
                                         int64_t block_w,
                                         const std::string& mode) {
  const char* op = "mvaccel._block_upsample_backward";
  check_dim(grad, 4, op, "grad", "(N, C, H, W)");
  check_floating(grad, op, "grad");
  return block_upsample_plan(op, in_h, in_w, block_h, block_w, grad.size(2),
                             grad.size(3), mode);
}

inline Plan plan_mv_resize(const at::Tensor& mv, int64_t out_h, int64_t out_w,
                           const std::string& mode) {
  const char* op = "mvaccel.mv_resize";
  check_dim(mv, 4, op, "mv", "(N, 2, H, W)");
  check_floating(mv, op, "mv");
  TORCH_CHECK(mv.size(1) == 2, op,
              ": expected mv of shape (N, 2, H, W) (channel 0 = x, 1 = y), "
              "got shape ",
              mv.sizes());
  return mv_resize_plan(op, mv.size(2), mv.size(3), out_h, out_w, mode);
}

inline Plan plan_mv_resize_backward(const at::Tensor& grad, int64_t in_h,
                                    int64_t in_w, const std::string& mode) {
  const char* op = "mvaccel._mv_resize_backward";
  check_dim(grad, 4, op, "grad", "(N, 2, H, W)");
  check_floating(grad, op, "grad");
  TORCH_CHECK(grad.size(1) == 2, op,
              ": expected grad of shape (N, 2, H, W), got shape ",
              grad.sizes());
  return mv_resize_plan(op, in_h, in_w, grad.size(2), grad.size(3), mode);
}

// Outputs follow the memory format of their input (channels_last in,
// channels_last out), as F.interpolate does.
inline at::Tensor empty_like_format(const at::Tensor& ref, int64_t n, int64_t c,
                                    int64_t h, int64_t w) {
  return at::empty({n, c, h, w},
                   ref.options().memory_format(ref.suggest_memory_format()));
}

}  // namespace resample
}  // namespace mvaccel
