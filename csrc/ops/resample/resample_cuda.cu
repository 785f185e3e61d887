// CUDA entries of block_upsample, mv_resize and their backward ops: checks,
// planning and launches of the kernels in resample_kernels.cuh.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>

#include "resample_checks.h"
#include "resample_kernels.cuh"

namespace mvaccel {
namespace resample {
namespace {

inline Strides strides_of(const at::Tensor& t) {
  return {t.stride(0), t.stride(1), t.stride(2), t.stride(3)};
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
        x.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(),
        Args{p, strides_of(x), strides_of(out), C, rows});
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
                grad.const_data_ptr<scalar_t>(),
                gin.mutable_data_ptr<scalar_t>(),
                Args{p, strides_of(grad), Strides{0, 0, 0, 0}, C, rows});
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
