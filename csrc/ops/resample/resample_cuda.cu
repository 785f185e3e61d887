// CUDA entries of block_upsample, mv_resize and their backward ops: checks,
// planning and launches of the kernels in resample_kernels.cuh.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <limits>

#include "resample_checks.h"
#include "resample_kernels.cuh"

namespace mvaccel {
namespace resample {
namespace {

inline Strides strides_of(const at::Tensor& t) {
  return {t.stride(0), t.stride(1), t.stride(2), t.stride(3)};
}

// The grid of resample_kernels.cuh: (x, y, image), y and z capped (the
// kernels stride over the rest); images are split over z only as far as
// needed to reach kTargetThreads threads. mvaccel/ops/_nvrtc.py mirrors it.
dim3 grid_for(int64_t width, int64_t height, int64_t images) {
  const int64_t gx = (width + kThreads - 1) / kThreads;
  const int64_t per_image = std::max<int64_t>(1, gx * kThreads * height);
  const int64_t gz = std::clamp<int64_t>(
      (kTargetThreads + per_image - 1) / per_image, 1,
      std::min<int64_t>(std::max<int64_t>(images, 1), kMaxGridYZ));
  return dim3(static_cast<unsigned>(gx),
              static_cast<unsigned>(std::min(height, kMaxGridYZ)),
              static_cast<unsigned>(gz));
}

// One past the largest element offset a kernel forms on t.
int64_t offset_span(const at::Tensor& t) {
  int64_t span = 1;
  for (int64_t d = 0; d < t.dim(); ++d) {
    span += (t.size(d) - 1) * t.stride(d);
  }
  return span;
}

// 32-bit index arithmetic when every offset of the call fits.
bool fits_int32(const at::Tensor& a, const at::Tensor& b) {
  constexpr int64_t kMax = std::numeric_limits<int32_t>::max();
  return a.numel() <= kMax && b.numel() <= kMax && offset_span(a) <= kMax &&
         offset_span(b) <= kMax;
}

// The nearest-block kernel writes 16-byte vectors when the output rows are
// unit stride, the output and its row, plane and image pitches are 16-byte
// aligned (every row starts on a boundary) and a run holds a vector.
bool vector_stores(const at::Tensor& out, const Plan& p) {
  const int64_t e = out.element_size();
  const auto aligned = [&](int64_t elems) { return (elems * e) % 16 == 0; };
  return out.stride(3) == 1 &&
         reinterpret_cast<uintptr_t>(out.const_data_ptr()) % 16 == 0 &&
         aligned(out.stride(2)) && aligned(out.stride(1)) &&
         aligned(out.stride(0)) && p.block_w * e >= 16;
}

// forward_kernel's 16-byte rows: unit stride, out_w a multiple of the
// vector, the output and its pitches 16-byte aligned.
bool vector_rows(const at::Tensor& out, const Plan& p) {
  const int64_t e = out.element_size();
  const auto aligned = [&](int64_t elems) { return (elems * e) % 16 == 0; };
  return out.stride(3) == 1 &&
         reinterpret_cast<uintptr_t>(out.const_data_ptr()) % 16 == 0 &&
         aligned(p.out_w) && aligned(out.stride(2)) && aligned(out.stride(1)) &&
         aligned(out.stride(0));
}

template <typename scalar_t, typename index_t>
void launch_forward(const at::Tensor& x, at::Tensor& out, const Plan& p,
                    const Args& args, cudaStream_t stream) {
  const scalar_t* src = x.const_data_ptr<scalar_t>();
  scalar_t* dst = out.mutable_data_ptr<scalar_t>();
  if (p.mode == kNearestBlock) {
    const dim3 grid = grid_for(p.in_w, p.out_h, args.N);
    if (vector_stores(out, p)) {
      forward_block_kernel<scalar_t, index_t, true>
          <<<grid, kThreads, 0, stream>>>(src, dst, args);
    } else {
      forward_block_kernel<scalar_t, index_t, false>
          <<<grid, kThreads, 0, stream>>>(src, dst, args);
    }
  } else if (vector_rows(out, p)) {
    const int64_t V = 16 / static_cast<int64_t>(sizeof(scalar_t));
    forward_kernel<scalar_t, index_t, true>
        <<<grid_for(p.out_w / V, p.out_h, args.N), kThreads, 0, stream>>>(
            src, dst, args);
  } else {
    forward_kernel<scalar_t, index_t, false>
        <<<grid_for(p.out_w, p.out_h, args.N), kThreads, 0, stream>>>(src, dst,
                                                                      args);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

at::Tensor run_forward(const at::Tensor& x, const Plan& p) {
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor out = empty_like_format(x, x.size(0), x.size(1), p.out_h, p.out_w);
  if (out.numel() == 0) return out;
  const Args args{p, strides_of(x), strides_of(out), x.size(1), x.size(0)};
  const auto stream = c10::cuda::getCurrentCUDAStream();
  MVACCEL_DISPATCH_FLOATING(x.scalar_type(), "mvaccel_resample_cuda", [&] {
    if (fits_int32(x, out)) {
      launch_forward<scalar_t, int32_t>(x, out, p, args, stream);
    } else {
      launch_forward<scalar_t, int64_t>(x, out, p, args, stream);
    }
  });
  return out;
}

at::Tensor run_backward(const at::Tensor& grad, const Plan& p) {
  const c10::cuda::CUDAGuard guard(grad.device());
  at::Tensor gin =
      at::empty({grad.size(0), grad.size(1), p.in_h, p.in_w}, grad.options());
  if (gin.numel() == 0) return gin;
  const Args args{p, strides_of(grad), strides_of(gin), grad.size(1),
                  grad.size(0)};
  const dim3 grid = grid_for(p.in_w, p.in_h, args.N);
  const auto stream = c10::cuda::getCurrentCUDAStream();
  MVACCEL_DISPATCH_FLOATING(
      grad.scalar_type(), "mvaccel_resample_bwd_cuda", [&] {
        const scalar_t* g = grad.const_data_ptr<scalar_t>();
        scalar_t* o = gin.mutable_data_ptr<scalar_t>();
        if (fits_int32(grad, gin)) {
          backward_kernel<scalar_t, int32_t>
              <<<grid, kThreads, 0, stream>>>(g, o, args);
        } else {
          backward_kernel<scalar_t, int64_t>
              <<<grid, kThreads, 0, stream>>>(g, o, args);
        }
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
