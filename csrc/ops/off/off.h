// Optical Flow guided Feature (Sun et al., CVPR 2018): the math behind
// off_gradients and off_gradients_stack (device-safe code in off_math.cuh,
// shared by the C++ loops, nvcc and NVRTC) and the host-side planning of a
// call (argument checks: off_checks.h).
//
// For a feature plane f_t and the same channel of an earlier frame f_prev
// (both H x W), the op writes three planes:
//
//   Fx = Kx (x) f_t     Kx = [-1 0 1; -2 0 2; -1 0 1]     (paper eq. 5)
//   Fy = Ky (x) f_t     Ky = [ 1 2 1;  0 0 0; -1 -2 -1]   (paper eq. 6)
//   Ft = f_t - f_prev                                      (paper eq. 7)
//
// where (x) is cross-correlation with zero padding (F.conv2d(..., padding=1)
// with these kernels, what Caffe's convolution layer computes). Fx grows
// with x (to the right); Fy, with the paper's kernel, grows when the feature
// decreases downwards.
//
// Shapes: pairs are described as a (B, S) grid of frame pairs with C
// channels each. off_gradients: B = N, S = 1, cur = f_t, prev = f_prev.
// off_gradients_stack: f is (N, T, C, H, W), B = N, S = T - 1,
// cur = f[:, 1:], prev = f[:, :-1] (views, no copy). The output is
// contiguous (B, S, 3C, H, W): channels [0, C) are Fx, [C, 2C) Fy and
// [2C, 3C) Ft.
//
// Backward (the adjoint; correlation with a 180-degree rotated Sobel kernel
// is correlation with the negated kernel):
//
//   dL/df_t    = Gt - Kx (x) Gx - Ky (x) Gy
//   dL/df_prev = -Gt
//
// For a stack, frame t receives the first term from pair t - 1 (t >= 1) and
// the second from pair t (t <= T - 2).
//
// Layout: when f_t (the stack f; the backward's grad) is channels_last
// (is_channels_last below), the output (the frame gradients) is too, and the
// channels_last kernels run with the channel as the fastest dimension;
// otherwise the output is contiguous. For 5-D tensors channels_last means
// each (C, H, W) frame is: strides (S*H*W*3C, H*W*3C, 1, W*3C, 3C).
#pragma once

#include "../../common.h"
#include "off_math.cuh"

namespace mvaccel {
namespace off {

// Inputs whose last dimension is not unit stride are copied (the kernels
// read rows); any other strides are used as they are.
inline at::Tensor rows_contiguous(const at::Tensor& t) {
  return t.size(-1) <= 1 || t.stride(-1) == 1 ? t : t.contiguous();
}

// True when the channel dimension `cdim` of t is unit stride and its columns
// are not: channels_last frames (mvaccel/ops/off.py mirrors this rule).
inline bool is_channels_last(const at::Tensor& t, int64_t cdim) {
  return t.size(cdim) > 1 && t.stride(cdim) == 1 &&
         (t.size(-1) <= 1 || t.stride(-1) != 1);
}

// The input of a channels_last call: unit channel stride (copied to
// channels_last when it is not).
inline at::Tensor channels_unit_stride(const at::Tensor& t) {
  return t.stride(1) == 1 ? t : t.contiguous(at::MemoryFormat::ChannelsLast);
}

// An uninitialised (B, S, K, H, W) tensor whose frames are channels_last.
inline at::Tensor empty_frames_cl(int64_t B, int64_t S, int64_t K, int64_t H,
                                  int64_t W, const at::TensorOptions& opt) {
  return at::empty({B, S, H, W, K}, opt).permute({0, 1, 4, 2, 3});
}

inline Plan plan_pair(const at::Tensor& f_t, const at::Tensor& f_prev) {
  Plan p;
  p.B = f_t.size(0);
  p.S = 1;
  p.C = f_t.size(1);
  p.H = f_t.size(2);
  p.W = f_t.size(3);
  p.cur = {f_t.stride(0), 0, f_t.stride(1), f_t.stride(2)};
  p.prev = {f_prev.stride(0), 0, f_prev.stride(1), f_prev.stride(2)};
  return p;
}

inline Plan plan_stack(const at::Tensor& f) {
  Plan p;
  p.B = f.size(0);
  p.S = f.size(1) - 1;
  p.C = f.size(2);
  p.H = f.size(3);
  p.W = f.size(4);
  // Pair s reads frame s + 1 (cur) and frame s (prev): same strides, the
  // cur pointer starts one frame later.
  p.cur = {f.stride(0), f.stride(1), f.stride(2), f.stride(3)};
  p.prev = p.cur;
  return p;
}

// Gradient of the output: (B, S, 3C, H, W).
inline View grad_view(const at::Tensor& g) {
  return {g.stride(0), g.stride(1), g.stride(2), g.stride(3)};
}

}  // namespace off
}  // namespace mvaccel
