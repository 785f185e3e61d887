// CUDA entries of off_gradients, off_gradients_stack and their backward ops:
// checks, planning and launches of the kernels in off_kernels.cuh.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <tuple>

#include "off.h"
#include "off_checks.h"
#include "off_kernels.cuh"

namespace mvaccel {
namespace off {
namespace {

dim3 grid_for(int64_t width, int64_t rows) {
  const int64_t gx = (width + kThreads - 1) / kThreads;
  return dim3(static_cast<unsigned>(gx),
              static_cast<unsigned>(std::min(rows, kMaxGridY)));
}

// forward_kernel's 16-byte tiles: W a multiple of V, both planes' pointers
// and every stride 16-byte aligned (mvaccel/ops/_nvrtc.py mirrors it).
bool vector_tiles(const void* cur, const void* prev, const Plan& p,
                  int64_t elem) {
  const auto al = [&](int64_t elems) { return (elems * elem) % 16 == 0; };
  return al(p.W) && reinterpret_cast<uintptr_t>(cur) % 16 == 0 &&
         reinterpret_cast<uintptr_t>(prev) % 16 == 0 && al(p.cur.sb) &&
         al(p.cur.ss) && al(p.cur.sc) && al(p.cur.sh) && al(p.prev.sb) &&
         al(p.prev.ss) && al(p.prev.sc) && al(p.prev.sh);
}

at::Tensor run_forward(const at::Tensor& cur_src, const at::Tensor& prev_src,
                       const Plan& p, int64_t cur_offset,
                       at::IntArrayRef shape) {
  const c10::cuda::CUDAGuard guard(cur_src.device());
  at::Tensor out = at::empty(shape, cur_src.options());
  if (out.numel() == 0) return out;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  MVACCEL_DISPATCH_FLOATING(cur_src.scalar_type(), "mvaccel_off_cuda", [&] {
    const scalar_t* cur = cur_src.const_data_ptr<scalar_t>() + cur_offset;
    const scalar_t* prev = prev_src.const_data_ptr<scalar_t>();
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    const bool vec = vector_tiles(cur, prev, p, sizeof(scalar_t));
    const int64_t V = vec ? 16 / static_cast<int64_t>(sizeof(scalar_t)) : 1;
    const int64_t total =
        p.B * p.S * p.C * ((p.H + kRows - 1) / kRows) * ((p.W + V - 1) / V);
    const dim3 grid(static_cast<unsigned>(
        std::min<int64_t>((total + kThreads - 1) / kThreads, kMaxBlocks)));
    if (vec) {
      forward_kernel<scalar_t, true>
          <<<grid, kThreads, 0, stream>>>(cur, prev, o, p, total);
    } else {
      forward_kernel<scalar_t, false>
          <<<grid, kThreads, 0, stream>>>(cur, prev, o, p, total);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

// channels_last forward into a channels_last output (forward_cl_kernel).
at::Tensor run_forward_cl(const at::Tensor& cur_src, const at::Tensor& prev_src,
                          const Plan& p, int64_t cur_offset, int64_t cur_sw,
                          int64_t prev_sw, at::Tensor out) {
  if (out.numel() == 0) return out;
  const int64_t rows = p.B * p.S * p.H;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  MVACCEL_DISPATCH_FLOATING(cur_src.scalar_type(), "mvaccel_off_cl_cuda", [&] {
    forward_cl_kernel<scalar_t>
        <<<grid_for(p.W * p.C, rows), kThreads, 0, stream>>>(
            cur_src.const_data_ptr<scalar_t>() + cur_offset,
            prev_src.const_data_ptr<scalar_t>(),
            out.mutable_data_ptr<scalar_t>(), p, cur_sw, prev_sw, rows);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

template <typename scalar_t>
void launch_backward_cl(const at::Tensor& grad, const View& gv, int64_t g_sw,
                        const Plan& p, const FrameOut<scalar_t>& fo) {
  const int64_t rows = p.B * (p.S + 1) * p.H;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  backward_cl_kernel<scalar_t>
      <<<grid_for(p.W * p.C, rows), kThreads, 0, stream>>>(
          grad.const_data_ptr<scalar_t>(), gv, g_sw, p, fo, rows);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename scalar_t>
void launch_backward(const at::Tensor& grad, const View& gv, const Plan& p,
                     const FrameOut<scalar_t>& fo) {
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const scalar_t* g = grad.const_data_ptr<scalar_t>();
  const auto al = [](int64_t elems) {
    return (elems * static_cast<int64_t>(sizeof(scalar_t))) % 16 == 0;
  };
  const auto al_ptr = [](const void* q) {
    return reinterpret_cast<uintptr_t>(q) % 16 == 0;
  };
  // backward_kernel's 16-byte tiles (mvaccel/ops/_nvrtc.py mirrors it).
  const bool vec = al(p.W) && al_ptr(g) && al(gv.sb) && al(gv.ss) &&
                   al(gv.sc) && al(gv.sh) && al_ptr(fo.first) &&
                   al_ptr(fo.rest) && al(fo.sb_first) && al(fo.sb_rest) &&
                   al(fo.st_rest);
  const int64_t V = vec ? 16 / static_cast<int64_t>(sizeof(scalar_t)) : 1;
  const int64_t total =
      p.B * (p.S + 1) * p.C * ((p.H + kRows - 1) / kRows) * ((p.W + V - 1) / V);
  const dim3 grid(static_cast<unsigned>(
      std::min<int64_t>((total + kThreads - 1) / kThreads, kMaxBlocks)));
  if (vec) {
    backward_kernel<scalar_t, true>
        <<<grid, kThreads, 0, stream>>>(g, gv, p, fo, total);
  } else {
    backward_kernel<scalar_t, false>
        <<<grid, kThreads, 0, stream>>>(g, gv, p, fo, total);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

at::Tensor off_gradients_cuda(const at::Tensor& f_t_in,
                              const at::Tensor& f_prev_in) {
  check_pair(f_t_in, f_prev_in);
  if (is_channels_last(f_t_in, 1)) {
    const c10::cuda::CUDAGuard guard(f_t_in.device());
    const at::Tensor f_prev = channels_unit_stride(f_prev_in);
    const Plan p = plan_pair(f_t_in, f_prev);
    return run_forward_cl(
        f_t_in, f_prev, p, 0, f_t_in.stride(3), f_prev.stride(3),
        at::empty(
            {p.B, 3 * p.C, p.H, p.W},
            f_t_in.options().memory_format(at::MemoryFormat::ChannelsLast)));
  }
  const at::Tensor f_t = rows_contiguous(f_t_in);
  const at::Tensor f_prev = rows_contiguous(f_prev_in);
  const Plan p = plan_pair(f_t, f_prev);
  return run_forward(f_t, f_prev, p, 0, {p.B, 3 * p.C, p.H, p.W});
}

at::Tensor off_gradients_stack_cuda(const at::Tensor& f_in) {
  check_stack(f_in);
  if (is_channels_last(f_in, 2)) {
    const c10::cuda::CUDAGuard guard(f_in.device());
    const Plan p = plan_stack(f_in);
    return run_forward_cl(
        f_in, f_in, p, f_in.stride(1), f_in.stride(4), f_in.stride(4),
        empty_frames_cl(p.B, p.S, 3 * p.C, p.H, p.W, f_in.options()));
  }
  const at::Tensor f = rows_contiguous(f_in);
  const Plan p = plan_stack(f);
  return run_forward(f, f, p, f.stride(1), {p.B, p.S, 3 * p.C, p.H, p.W});
}

std::tuple<at::Tensor, at::Tensor> off_gradients_backward_cuda(
    const at::Tensor& grad_in) {
  check_grad_pair(grad_in);
  const c10::cuda::CUDAGuard guard(grad_in.device());
  const bool cl = is_channels_last(grad_in, 1);
  const at::Tensor grad = cl ? grad_in : rows_contiguous(grad_in);
  Plan p;
  p.B = grad.size(0);
  p.S = 1;
  p.C = grad.size(1) / 3;
  p.H = grad.size(2);
  p.W = grad.size(3);
  const auto opt = grad.options().memory_format(
      cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous);
  at::Tensor g_t = at::empty({p.B, p.C, p.H, p.W}, opt);
  at::Tensor g_prev = at::empty({p.B, p.C, p.H, p.W}, opt);
  if (g_t.numel() == 0) return {g_t, g_prev};
  const View gv{grad.stride(0), 0, grad.stride(1), grad.stride(2)};
  const int64_t CHW = p.C * p.H * p.W;
  MVACCEL_DISPATCH_FLOATING(grad.scalar_type(), "mvaccel_off_bwd_cuda", [&] {
    const FrameOut<scalar_t> fo{g_prev.mutable_data_ptr<scalar_t>(),
                                g_t.mutable_data_ptr<scalar_t>(), CHW, CHW, 0};
    if (cl) {
      launch_backward_cl<scalar_t>(grad, gv, grad.stride(3), p, fo);
    } else {
      launch_backward<scalar_t>(grad, gv, p, fo);
    }
  });
  return {g_t, g_prev};
}

at::Tensor off_gradients_stack_backward_cuda(const at::Tensor& grad_in) {
  check_grad_stack(grad_in);
  const c10::cuda::CUDAGuard guard(grad_in.device());
  const bool cl = is_channels_last(grad_in, 2);
  const at::Tensor grad = cl ? grad_in : rows_contiguous(grad_in);
  Plan p;
  p.B = grad.size(0);
  p.S = grad.size(1);
  p.C = grad.size(2) / 3;
  p.H = grad.size(3);
  p.W = grad.size(4);
  at::Tensor gf =
      cl ? empty_frames_cl(p.B, p.S + 1, p.C, p.H, p.W, grad.options())
         : at::empty({p.B, p.S + 1, p.C, p.H, p.W}, grad.options());
  if (gf.numel() == 0 || p.S == 0) return gf.zero_();
  const int64_t CHW = p.C * p.H * p.W;
  const int64_t TCHW = (p.S + 1) * CHW;
  MVACCEL_DISPATCH_FLOATING(
      grad.scalar_type(), "mvaccel_off_stack_bwd_cuda", [&] {
        scalar_t* base = gf.mutable_data_ptr<scalar_t>();
        const FrameOut<scalar_t> fo{base, base + CHW, TCHW, TCHW, CHW};
        if (cl) {
          launch_backward_cl<scalar_t>(grad, grad_view(grad), grad.stride(4), p,
                                       fo);
        } else {
          launch_backward<scalar_t>(grad, grad_view(grad), p, fo);
        }
      });
  return gf;
}

}  // namespace
}  // namespace off

TORCH_LIBRARY_IMPL(mvaccel, CUDA, m) {
  m.impl("off_gradients", &off::off_gradients_cuda);
  m.impl("off_gradients_stack", &off::off_gradients_stack_cuda);
  m.impl("_off_gradients_backward", &off::off_gradients_backward_cuda);
  m.impl("_off_gradients_stack_backward",
         &off::off_gradients_stack_backward_cuda);
}

}  // namespace mvaccel
