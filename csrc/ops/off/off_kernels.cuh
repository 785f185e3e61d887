// CUDA kernels of off_gradients, off_gradients_stack and their backward ops,
// compiled by nvcc (off_cuda.cu launches them) and by NVRTC at run time
// (mvaccel/ops/_nvrtc.py). Device code only: no ATen, no standard library.
//
// One thread per pixel of a row (blockIdx.x, threadIdx.x), one grid row per
// image row (blockIdx.y, strided when there are more rows than the grid
// holds). Neighbouring threads read neighbouring columns, so the 3x3 stencil
// loads coalesce and hit L1 for the shared rows.
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
    o[0] = static_cast<scalar_t>(sobel_x<acc_t>(cur, p.cur.sh, H, W, y, x));
    o[C * HW] =
        static_cast<scalar_t>(sobel_y<acc_t>(cur, p.cur.sh, H, W, y, x));
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
    const acc_t v = frame_grad<acc_t>(g, gv, p.S, C, H, W, b, t, c, y, x);
    fo.frame(b, t)[c * H * W + y * W + x] = static_cast<scalar_t>(v);
  }
}

}  // namespace off
}  // namespace mvaccel
