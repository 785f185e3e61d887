// Per-pixel math of off_gradients and off_gradients_stack (Sobel, frame
// gradients, the plan of a call), shared by the C++ loops, the nvcc kernels
// and NVRTC. The formulas are in off.h.
#pragma once

#include "../../device.cuh"

namespace mvaccel {
namespace off {

// Value of a plane at (y, x), zero outside (the zero padding). Rows are
// `sh` elements apart, columns `sw` (1 in a contiguous plane, the channel
// count in a channels_last one).
template <typename acc_t, typename scalar_t>
MVACCEL_HD acc_t at_or_zero(const scalar_t* plane, int64_t sh, int64_t sw,
                            int64_t H, int64_t W, int64_t y, int64_t x) {
  return (y >= 0 && y < H && x >= 0 && x < W)
             ? static_cast<acc_t>(plane[y * sh + x * sw])
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
// elements apart, columns `sw`.
template <typename acc_t, typename scalar_t>
MVACCEL_HD acc_t sobel_x(const scalar_t* plane, int64_t sh, int64_t sw,
                         int64_t H, int64_t W, int64_t y, int64_t x) {
  auto v = [&](int64_t dy, int64_t dx) {
    return at_or_zero<acc_t>(plane, sh, sw, H, W, y + dy, x + dx);
  };
  return sobel_x_of<acc_t>(v(-1, -1), v(-1, 1), v(0, -1), v(0, 1), v(1, -1),
                           v(1, 1));
}

template <typename acc_t, typename scalar_t>
MVACCEL_HD acc_t sobel_y(const scalar_t* plane, int64_t sh, int64_t sw,
                         int64_t H, int64_t W, int64_t y, int64_t x) {
  auto v = [&](int64_t dy, int64_t dx) {
    return at_or_zero<acc_t>(plane, sh, sw, H, W, y + dy, x + dx);
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
// Fixed-width PODs: kernel arguments, mirrored by mvaccel/ops/_nvrtc.py.
static_assert(sizeof(View) == 32 && sizeof(Plan) == 104, "see _nvrtc.py");

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
static_assert(sizeof(FrameOut<float>) == 40, "see _nvrtc.py");

// Gradient reaching frame t (0..S) at (y, x) of channel c, from the output
// gradient g (view gv, channel stride gv.sc, row stride gv.sh, column
// stride sw).
template <typename acc_t, typename scalar_t>
MVACCEL_HD acc_t frame_grad(const scalar_t* g, const View& gv, int64_t sw,
                            int64_t S, int64_t C, int64_t H, int64_t W,
                            int64_t b, int64_t t, int64_t c, int64_t y,
                            int64_t x) {
  acc_t acc = acc_t(0);
  if (t >= 1) {  // frame t is the current frame of pair t - 1
    const scalar_t* base = g + b * gv.sb + (t - 1) * gv.ss + c * gv.sc;
    acc += static_cast<acc_t>(base[2 * C * gv.sc + y * gv.sh + x * sw]) -
           sobel_x<acc_t>(base, gv.sh, sw, H, W, y, x) -
           sobel_y<acc_t>(base + C * gv.sc, gv.sh, sw, H, W, y, x);
  }
  if (t <= S - 1) {  // frame t is the previous frame of pair t
    acc -= static_cast<acc_t>(
        g[b * gv.sb + t * gv.ss + (2 * C + c) * gv.sc + y * gv.sh + x * sw]);
  }
  return acc;
}

}  // namespace off
}  // namespace mvaccel
