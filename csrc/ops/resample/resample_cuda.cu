// CUDA kernels of block_upsample, mv_resize and their backward ops.
//
// Layout: one thread per output pixel of a row (blockIdx.x, threadIdx.x) and
// one grid row per (n, c, y) image row (blockIdx.y, strided when there are
// more rows than the grid holds), so no thread divides its linear index.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>

#include "resample_checks.h"

namespace mvaccel {
namespace resample {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxGridY = 65535;

struct Strides {
  int64_t s0, s1, s2, s3;
};

inline Strides strides_of(const at::Tensor& t) {
  return {t.stride(0), t.stride(1), t.stride(2), t.stride(3)};
}

template <typename scalar_t>
__global__ void forward_kernel(const scalar_t* __restrict__ x, Strides xs,
                               scalar_t* __restrict__ out, Strides os,
                               int64_t C, int64_t rows, Plan p) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t ox =
      static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (ox >= p.out_w) return;
  const auto ay = p.axis_y<acc_t>();
  const auto ax = p.axis_x<acc_t>();
  int64_t ix0, ix1;
  acc_t wx1;
  ax.src(ox, ix0, ix1, wx1);
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
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
__global__ void backward_kernel(const scalar_t* __restrict__ grad, Strides gs,
                                scalar_t* __restrict__ gin, int64_t C,
                                int64_t rows, Plan p) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t ix =
      static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (ix >= p.in_w) return;
  const auto ay = p.axis_y<acc_t>();
  const auto ax = p.axis_x<acc_t>();
  int64_t xlo, xhi;
  ax.dst_range(ix, xlo, xhi);
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
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

dim3 grid_for(int64_t width, int64_t rows) {
  const int64_t gx = (width + kThreads - 1) / kThreads;
  return dim3(static_cast<unsigned>(gx),
              static_cast<unsigned>(std::min(rows, kMaxGridY)));
}

at::Tensor run_forward(const at::Tensor& x, const Plan& p) {
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor out = empty_like_format(x, x.size(0), x.size(1), p.out_h, p.out_w);
  if (out.numel() == 0) return out;
  const int64_t C = x.size(1);
  const int64_t rows = x.size(0) * C * p.out_h;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  MVACCEL_DISPATCH_FLOATING(x.scalar_type(), "mvaccel_resample_cuda", [&] {
    forward_kernel<scalar_t><<<grid_for(p.out_w, rows), kThreads, 0, stream>>>(
        x.const_data_ptr<scalar_t>(), strides_of(x),
        out.mutable_data_ptr<scalar_t>(), strides_of(out), C, rows, p);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

at::Tensor run_backward(const at::Tensor& grad, const Plan& p) {
  const c10::cuda::CUDAGuard guard(grad.device());
  at::Tensor gin =
      at::empty({grad.size(0), grad.size(1), p.in_h, p.in_w}, grad.options());
  if (gin.numel() == 0) return gin;
  const int64_t C = grad.size(1);
  const int64_t rows = grad.size(0) * C * p.in_h;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  MVACCEL_DISPATCH_FLOATING(
      grad.scalar_type(), "mvaccel_resample_bwd_cuda", [&] {
        backward_kernel<scalar_t>
            <<<grid_for(p.in_w, rows), kThreads, 0, stream>>>(
                grad.const_data_ptr<scalar_t>(), strides_of(grad),
                gin.mutable_data_ptr<scalar_t>(), C, rows, p);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
  return gin;
}

at::Tensor block_upsample_cuda(const at::Tensor& x, int64_t block_h,
                               int64_t block_w, int64_t out_h, int64_t out_w,
                               c10::string_view mode) {
  return run_forward(x, check_block_upsample(x, block_h, block_w, out_h, out_w,
                                             std::string(mode)));
}

at::Tensor block_upsample_backward_cuda(const at::Tensor& grad, int64_t in_h,
                                        int64_t in_w, int64_t block_h,
                                        int64_t block_w,
                                        c10::string_view mode) {
  return run_backward(
      grad, check_block_upsample_backward(grad, in_h, in_w, block_h, block_w,
                                          std::string(mode)));
}

at::Tensor mv_resize_cuda(const at::Tensor& mv, int64_t out_h, int64_t out_w,
                          c10::string_view mode) {
  return run_forward(mv, check_mv_resize(mv, out_h, out_w, std::string(mode)));
}

at::Tensor mv_resize_backward_cuda(const at::Tensor& grad, int64_t in_h,
                                   int64_t in_w, c10::string_view mode) {
  return run_backward(
      grad, check_mv_resize_backward(grad, in_h, in_w, std::string(mode)));
}

}  // namespace
}  // namespace resample

TORCH_LIBRARY_IMPL(mvaccel, CUDA, m) {
  m.impl("block_upsample", &resample::block_upsample_cuda);
  m.impl("_block_upsample_backward", &resample::block_upsample_backward_cuda);
  m.impl("mv_resize", &resample::mv_resize_cuda);
  m.impl("_mv_resize_backward", &resample::mv_resize_backward_cuda);
}

}  // namespace mvaccel
