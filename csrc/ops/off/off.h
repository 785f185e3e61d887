// Optical Flow guided Feature (Sun et al., CVPR 2018): the math behind
// off_gradients and off_gradients_stack, written once for the C++ and CUDA
// kernels.
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
#pragma once

#include "../../common.h"

namespace mvaccel {
namespace off {

// Value of a plane at (y, x), zero outside (the zero padding).
template <typename acc_t, typename scalar_t>
MVACCEL_HD acc_t at_or_zero(const scalar_t* plane, int64_t sh, int64_t H,
                            int64_t W, int64_t y, int64_t x) {
  return (y >= 0 && y < H && x >= 0 && x < W)
             ? static_cast<acc_t>(plane[y * sh + x])
             : acc_t(0);
}

// Sobel x and Sobel y (paper's kernels, cross-correlation) from the 3x3
// neighbourhood of a pixel: m* the row above, c* its own row, p* the row
// below, 0 left / 1 centre / 2 right; a neighbour outside the image is 0.
template <typename acc_t>
MVACCEL_HD acc_t sobel_x_of(acc_t m0, acc_t m2, acc_t c0, acc_t c2, acc_t p0,
                            acc_t p2) {
  return (m2 - m0) + acc_t(2) * (c2 - c0) + (p2 - p0);
}

template <typename acc_t>
MVACCEL_HD acc_t sobel_y_of(acc_t m0, acc_t m1, acc_t m2, acc_t p0, acc_t p1,
                            acc_t p2) {
  return (m0 + acc_t(2) * m1 + m2) - (p0 + acc_t(2) * p1 + p2);
}

// Sobel x and Sobel y of a plane at (y, x) with zero padding. Rows are `sh`
// elements apart; columns are unit stride.
template <typename acc_t, typename scalar_t>
MVACCEL_HD acc_t sobel_x(const scalar_t* plane, int64_t sh, int64_t H,
                         int64_t W, int64_t y, int64_t x) {
  auto v = [&](int64_t dy, int64_t dx) {
    return at_or_zero<acc_t>(plane, sh, H, W, y + dy, x + dx);
  };
  return sobel_x_of<acc_t>(v(-1, -1), v(-1, 1), v(0, -1), v(0, 1), v(1, -1),
                           v(1, 1));
}

template <typename acc_t, typename scalar_t>
MVACCEL_HD acc_t sobel_y(const scalar_t* plane, int64_t sh, int64_t H,
                         int64_t W, int64_t y, int64_t x) {
  auto v = [&](int64_t dy, int64_t dx) {
    return at_or_zero<acc_t>(plane, sh, H, W, y + dy, x + dx);
  };
  return sobel_y_of<acc_t>(v(-1, -1), v(-1, 0), v(-1, 1), v(1, -1), v(1, 0),
                           v(1, 1));
}

// Strides (in elements) of a (B, S, C, H, W) view whose rows are unit
// stride. Pair (b, s), channel c starts at b * sb + s * ss + c * sc.
struct View {
  int64_t sb, ss, sc, sh;
};

// Everything a backend needs for one call.
struct Plan {
  int64_t B, S, C, H, W;
  View cur, prev;  // forward inputs (or the stack's frame strides)
};

// Inputs whose last dimension is not unit stride are copied (the kernels
// read rows); any other strides are used as they are.
inline at::Tensor rows_contiguous(const at::Tensor& t) {
  return t.size(-1) <= 1 || t.stride(-1) == 1 ? t : t.contiguous();
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

// Where the backward writes the gradient of frame t of pair-grid row b:
// frame 0 at first + b * sb_first, frame t >= 1 at
// rest + b * sb_rest + (t - 1) * st_rest (planes of H x W, channel c at
// + c * H * W). A stack is one tensor; a pair is two (f_prev, f_t).
template <typename scalar_t>
struct FrameOut {
  scalar_t* first;
  scalar_t* rest;
  int64_t sb_first, sb_rest, st_rest;
  MVACCEL_HD scalar_t* frame(int64_t b, int64_t t) const {
    return t == 0 ? first + b * sb_first
                  : rest + b * sb_rest + (t - 1) * st_rest;
  }
};

// Gradient reaching frame t (0..S) at (y, x) of channel c, from the output
// gradient g (view gv, channel stride gv.sc, row stride gv.sh).
template <typename acc_t, typename scalar_t>
MVACCEL_HD acc_t frame_grad(const scalar_t* g, const View& gv, int64_t S,
                            int64_t C, int64_t H, int64_t W, int64_t b,
                            int64_t t, int64_t c, int64_t y, int64_t x) {
  acc_t acc = acc_t(0);
  if (t >= 1) {  // frame t is the current frame of pair t - 1
    const scalar_t* base = g + b * gv.sb + (t - 1) * gv.ss + c * gv.sc;
    acc += static_cast<acc_t>(base[2 * C * gv.sc + y * gv.sh + x]) -
           sobel_x<acc_t>(base, gv.sh, H, W, y, x) -
           sobel_y<acc_t>(base + C * gv.sc, gv.sh, H, W, y, x);
  }
  if (t <= S - 1) {  // frame t is the previous frame of pair t
    acc -= static_cast<acc_t>(
        g[b * gv.sb + t * gv.ss + (2 * C + c) * gv.sc + y * gv.sh + x]);
  }
  return acc;
}

}  // namespace off
}  // namespace mvaccel
