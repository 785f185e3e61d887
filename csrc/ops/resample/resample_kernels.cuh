// CUDA kernels of block_upsample, mv_resize and their backward ops, compiled
// by nvcc (resample_cuda.cu launches them) and by NVRTC at run time
// (mvaccel/ops/_nvrtc.py). Device code only: no ATen, no standard library.
//
// Layout: one thread per output pixel of a row (blockIdx.x, threadIdx.x) and
// one grid row per (n, c, y) image row (blockIdx.y, strided when there are
// more rows than the grid holds), so no thread divides its linear index.
#pragma once

#include "resample_math.cuh"

namespace mvaccel {
namespace resample {

constexpr int kThreads = 256;
constexpr int64_t kMaxGridY = 65535;

template <typename scalar_t>
__global__ void forward_kernel(const scalar_t* __restrict__ x,
                               scalar_t* __restrict__ out, const Args a) {
  using acc_t = opmath_t<scalar_t>;
  const Plan& p = a.p;
  const Strides& xs = a.src;
  const Strides& os = a.dst;
  const int64_t C = a.C;
  const int64_t ox =
      static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (ox >= p.out_w) return;
  const auto ay = p.axis_y<acc_t>();
  const auto ax = p.axis_x<acc_t>();
  int64_t ix0, ix1;
  acc_t wx1;
  ax.src(ox, ix0, ix1, wx1);
  for (int64_t r = blockIdx.y; r < a.rows; r += gridDim.y) {
    const int64_t oy = r % p.out_h;
    const int64_t c = (r / p.out_h) % C;
    const int64_t n = r / (p.out_h * C);
    int64_t iy0, iy1;
    acc_t wy1;
    ay.src(oy, iy0, iy1, wy1);
    const scalar_t* plane = x + n * xs.s0 + c * xs.s1;
    const acc_t f = channel_factor<acc_t>(p, c);
    acc_t v;
    if (p.mode == kLinear) {
      const scalar_t* r0 = plane + iy0 * xs.s2;
      const scalar_t* r1 = plane + iy1 * xs.s2;
      const acc_t wx0 = acc_t(1) - wx1;
      const acc_t top = wx0 * static_cast<acc_t>(r0[ix0 * xs.s3]) +
                        wx1 * static_cast<acc_t>(r0[ix1 * xs.s3]);
      const acc_t bot = wx0 * static_cast<acc_t>(r1[ix0 * xs.s3]) +
                        wx1 * static_cast<acc_t>(r1[ix1 * xs.s3]);
      v = (acc_t(1) - wy1) * top + wy1 * bot;
    } else {
      v = static_cast<acc_t>(plane[iy0 * xs.s2 + ix0 * xs.s3]);
    }
    out[n * os.s0 + c * os.s1 + oy * os.s2 + ox * os.s3] =
        static_cast<scalar_t>(v * f);
  }
}

template <typename scalar_t>
__global__ void backward_kernel(const scalar_t* __restrict__ grad,
                                scalar_t* __restrict__ gin, const Args a) {
  using acc_t = opmath_t<scalar_t>;
  const Plan& p = a.p;
  const Strides& gs = a.src;
  const int64_t C = a.C;
  const int64_t ix =
      static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (ix >= p.in_w) return;
  const auto ay = p.axis_y<acc_t>();
  const auto ax = p.axis_x<acc_t>();
  int64_t xlo, xhi;
  ax.dst_range(ix, xlo, xhi);
  for (int64_t r = blockIdx.y; r < a.rows; r += gridDim.y) {
    const int64_t iy = r % p.in_h;
    const int64_t c = (r / p.in_h) % C;
    const int64_t n = r / (p.in_h * C);
    int64_t ylo, yhi;
    ay.dst_range(iy, ylo, yhi);
    const scalar_t* g = grad + n * gs.s0 + c * gs.s1;
    acc_t sum = acc_t(0);
    for (int64_t oy = ylo; oy < yhi; ++oy) {
      const acc_t wy = ay.weight(oy, iy);
      acc_t rs = acc_t(0);
      for (int64_t ox = xlo; ox < xhi; ++ox) {
        rs +=
            ax.weight(ox, ix) * static_cast<acc_t>(g[oy * gs.s2 + ox * gs.s3]);
      }
      sum += wy * rs;
    }
    gin[r * p.in_w + ix] =
        static_cast<scalar_t>(sum * channel_factor<acc_t>(p, c));
  }
}

}  // namespace resample
}  // namespace mvaccel
