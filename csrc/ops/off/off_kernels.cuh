// CUDA kernels of off_gradients, off_gradients_stack and their backward ops,
// compiled by nvcc (off_cuda.cu launches them) and by NVRTC at run time
// (mvaccel/ops/_nvrtc.py). Device code only: no ATen, no standard library.
//
// One thread per pixel of a row (blockIdx.x, threadIdx.x), one grid row per
// image row (blockIdx.y, strided when there are more rows than the grid
// holds). Neighbouring threads read neighbouring columns, so the 3x3 stencil
// loads coalesce and hit L1 for the shared rows.
//
// channels_last (forward_cl_kernel, backward_cl_kernel: the channel is the
// fastest dimension of the inputs, unit stride, and of the outputs): one
// thread per (pixel, channel) of an image row, channel fastest
// (blockIdx.x * blockDim.x + threadIdx.x = x * C + c), so neighbouring
// threads read and write neighbouring channels of one pixel.
#pragma once

#include "off_math.cuh"

namespace mvaccel {
namespace off {

constexpr int kThreads = 128;
constexpr int64_t kMaxGridY = 65535;

template <typename scalar_t>
__global__ void forward_kernel(const scalar_t* __restrict__ cur0,
                               const scalar_t* __restrict__ prev0,
                               scalar_t* __restrict__ out, Plan p,
                               int64_t rows) {
  using acc_t = opmath_t<scalar_t>;
  const int64_t x = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (x >= p.W) return;
  const int64_t H = p.H, W = p.W, C = p.C, HW = p.H * p.W;
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
    const int64_t y = r % H;
    const int64_t plane = r / H;
    const int64_t c = plane % C;
    const int64_t bs = plane / C;
    const int64_t s = bs % p.S, b = bs / p.S;
    const scalar_t* cur = cur0 + b * p.cur.sb + s * p.cur.ss + c * p.cur.sc;
    const scalar_t* prev =
        prev0 + b * p.prev.sb + s * p.prev.ss + c * p.prev.sc;
    scalar_t* o = out + (bs * 3 * C + c) * HW + y * W + x;
    o[0] = static_cast<scalar_t>(sobel_x<acc_t>(cur, p.cur.sh, 1, H, W, y, x));
    o[C * HW] =
        static_cast<scalar_t>(sobel_y<acc_t>(cur, p.cur.sh, 1, H, W, y, x));
    o[2 * C * HW] =
        static_cast<scalar_t>(static_cast<acc_t>(cur[y * p.cur.sh + x]) -
                              static_cast<acc_t>(prev[y * p.prev.sh + x]));
  }
}

template <typename scalar_t>
__global__ void backward_kernel(const scalar_t* __restrict__ g, View gv, Plan p,
                                FrameOut<scalar_t> fo, int64_t rows) {
  using acc_t = opmath_t<scalar_t>;
  const int64_t x = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (x >= p.W) return;
  const int64_t H = p.H, W = p.W, C = p.C, T = p.S + 1;
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
    const int64_t y = r % H;
    const int64_t plane = r / H;
    const int64_t c = plane % C;
    const int64_t bt = plane / C;
    const int64_t t = bt % T, b = bt / T;
    const acc_t v = frame_grad<acc_t>(g, gv, 1, p.S, C, H, W, b, t, c, y, x);
    fo.frame(b, t)[c * H * W + y * W + x] = static_cast<scalar_t>(v);
  }
}

// channels_last forward: inputs with unit channel stride (View.sc is not
// read), columns cur_sw / prev_sw apart; the output (B, S, 3C, H, W) has the
// channel fastest: pair bs, pixel (y, x) at ((bs * H + y) * W + x) * 3C,
// Fx at + c, Fy at + C + c, Ft at + 2C + c. rows = B * S * H.
template <typename scalar_t>
__global__ void forward_cl_kernel(const scalar_t* __restrict__ cur0,
                                  const scalar_t* __restrict__ prev0,
                                  scalar_t* __restrict__ out, Plan p,
                                  int64_t cur_sw, int64_t prev_sw,
                                  int64_t rows) {
  using acc_t = opmath_t<scalar_t>;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t H = p.H, W = p.W, C = p.C;
  if (i >= W * C) return;
  const int64_t x = i / C, c = i - x * C;
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
    const int64_t y = r % H;
    const int64_t bs = r / H;
    const int64_t s = bs % p.S, b = bs / p.S;
    const scalar_t* cur = cur0 + b * p.cur.sb + s * p.cur.ss + c;
    const scalar_t* prev = prev0 + b * p.prev.sb + s * p.prev.ss + c;
    scalar_t* o = out + ((bs * H + y) * W + x) * 3 * C + c;
    o[0] = static_cast<scalar_t>(
        sobel_x<acc_t>(cur, p.cur.sh, cur_sw, H, W, y, x));
    o[C] = static_cast<scalar_t>(
        sobel_y<acc_t>(cur, p.cur.sh, cur_sw, H, W, y, x));
    o[2 * C] = static_cast<scalar_t>(
        static_cast<acc_t>(cur[y * p.cur.sh + x * cur_sw]) -
        static_cast<acc_t>(prev[y * p.prev.sh + x * prev_sw]));
  }
}

// channels_last backward: the gradient g has unit channel stride (gv.sc ==
// 1) and columns g_sw apart; frame t's gradient is written channel fastest
// (pixel (y, x), channel c at fo.frame(b, t) + (y * W + x) * C + c).
// rows = B * (S + 1) * H.
template <typename scalar_t>
__global__ void backward_cl_kernel(const scalar_t* __restrict__ g, View gv,
                                   int64_t g_sw, Plan p, FrameOut<scalar_t> fo,
                                   int64_t rows) {
  using acc_t = opmath_t<scalar_t>;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t H = p.H, W = p.W, C = p.C, T = p.S + 1;
  if (i >= W * C) return;
  const int64_t x = i / C, c = i - x * C;
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
    const int64_t y = r % H;
    const int64_t bt = r / H;
    const int64_t t = bt % T, b = bt / T;
    const acc_t v = frame_grad<acc_t>(g, gv, g_sw, p.S, C, H, W, b, t, c, y, x);
    fo.frame(b, t)[(y * W + x) * C + c] = static_cast<scalar_t>(v);
  }
}

}  // namespace off
}  // namespace mvaccel
