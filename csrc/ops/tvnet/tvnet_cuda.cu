// CUDA entries of tvnet_iterations and its backward: checks, buffers and the
// launches of the kernels in tvnet_kernels.cuh (two launches per iteration
// forward, three backward).
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <tuple>

#include "tvnet.h"
#include "tvnet_checks.h"
#include "tvnet_kernels.cuh"

namespace mvaccel {
namespace tvnet {
namespace {

inline unsigned blocks_for(int64_t n) {
  return static_cast<unsigned>((n + kThreads - 1) / kThreads);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> tvnet_iterations_cuda(
    const at::Tensor& u_in, const at::Tensor& p_in, const at::Tensor& warped_in,
    const at::Tensor& wf_in, const at::Tensor& wb_in, double l_t, double theta,
    double taut, double eps, double grad_eps, bool save_states) {
  const Dims d =
      check_tvnet_iterations(u_in, p_in, warped_in, wf_in, wb_in, save_states);
  const c10::cuda::CUDAGuard guard(u_in.device());
  at::Tensor u = u_in.contiguous().clone();
  at::Tensor p = p_in.contiguous().clone();
  const at::Tensor warped = warped_in.contiguous();
  const at::Tensor wf = wf_in.contiguous(), wb = wb_in.contiguous();
  at::Tensor states = save_states
                          ? at::empty({d.K, d.N, 6, d.H, d.W}, u.options())
                          : at::empty({0}, u.options());
  if (u.numel() == 0 || d.K == 0) return {u, p, states};
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const unsigned grid = blocks_for(d.N * d.H * d.W);
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "mvaccel_tvnet_cuda", [&] {
    using T = scalar_t;
    for (int64_t it = 0; it < d.K; ++it) {
      if (save_states) {
        states[it].narrow(1, 0, 2).copy_(u);
        states[it].narrow(1, 2, 4).copy_(p);
      }
      pass_u_kernel<T><<<grid, kThreads, 0, stream>>>(
          u.mutable_data_ptr<T>(), p.const_data_ptr<T>(),
          warped.const_data_ptr<T>(), wb.const_data_ptr<T>() + it * kTaps, d,
          static_cast<T>(l_t), static_cast<T>(theta), static_cast<T>(grad_eps));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      pass_p_kernel<T><<<grid, kThreads, 0, stream>>>(
          u.const_data_ptr<T>(), p.mutable_data_ptr<T>(),
          wf.const_data_ptr<T>() + it * kTaps, d, static_cast<T>(taut),
          static_cast<T>(eps));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
  return {u, p, states};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
tvnet_iterations_backward_cuda(const at::Tensor& grad_u_in,
                               const at::Tensor& grad_p_in,
                               const at::Tensor& states_in,
                               const at::Tensor& u_out_in,
                               const at::Tensor& warped_in,
                               const at::Tensor& wf_in, const at::Tensor& wb_in,
                               double l_t, double theta, double taut,
                               double eps, double grad_eps) {
  const Dims d = check_tvnet_iterations_backward(
      grad_u_in, grad_p_in, states_in, u_out_in, warped_in, wf_in, wb_in);
  const c10::cuda::CUDAGuard guard(u_out_in.device());
  at::Tensor gu = grad_u_in.contiguous().clone();
  at::Tensor gu_next = at::empty_like(gu);
  at::Tensor gp = grad_p_in.contiguous().clone();
  at::Tensor gw = at::zeros_like(warped_in, at::MemoryFormat::Contiguous);
  at::Tensor gwf = at::zeros({d.K, kTaps}, wf_in.options());
  at::Tensor gwb = at::zeros({d.K, kTaps}, wb_in.options());
  if (gu.numel() == 0 || d.K == 0) return {gu, gp, gw, gwf, gwb};
  const at::Tensor states = states_in.contiguous();
  const at::Tensor u_out = u_out_in.contiguous();
  const at::Tensor warped = warped_in.contiguous();
  const at::Tensor wf = wf_in.contiguous(), wb = wb_in.contiguous();
  at::Tensor g4 = at::empty({d.N, 4, d.H, d.W}, gu.options());
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const unsigned grid = blocks_for(d.N * d.H * d.W);
  const int64_t state_size = d.N * 6 * d.H * d.W;
  AT_DISPATCH_FLOATING_TYPES(gu.scalar_type(), "mvaccel_tvnet_bwd_cuda", [&] {
    using T = scalar_t;
    T* a = gu.mutable_data_ptr<T>();
    T* b = gu_next.mutable_data_ptr<T>();
    const T* st0 = states.const_data_ptr<T>();
    for (int64_t it = d.K - 1; it >= 0; --it) {
      const T* st = st0 + it * state_size;
      // u after iteration it: the next state (stride 6 planes) or u_out.
      const T* ucur = it == d.K - 1 ? u_out.const_data_ptr<T>()
                                    : st0 + (it + 1) * state_size;
      const int64_t ucur_planes = it == d.K - 1 ? 2 : 6;
      pass_p_backward_kernel<T><<<grid, kThreads, 0, stream>>>(
          ucur, ucur_planes, st, gp.mutable_data_ptr<T>(),
          g4.mutable_data_ptr<T>(), wf.const_data_ptr<T>() + it * kTaps,
          gwf.mutable_data_ptr<T>() + it * kTaps, d, static_cast<T>(taut),
          static_cast<T>(eps));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      // G, the whole gradient of u', over the incoming one (in a).
      pass_g_kernel<T><<<grid, kThreads, 0, stream>>>(
          a, g4.const_data_ptr<T>(), wf.const_data_ptr<T>() + it * kTaps, d);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      pass_u_backward_kernel<T><<<grid, kThreads, 0, stream>>>(
          st, warped.const_data_ptr<T>(), a, gp.mutable_data_ptr<T>(),
          gw.mutable_data_ptr<T>(), b, wb.const_data_ptr<T>() + it * kTaps,
          gwb.mutable_data_ptr<T>() + it * kTaps, d, static_cast<T>(l_t),
          static_cast<T>(theta), static_cast<T>(grad_eps));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      std::swap(a, b);
    }
  });
  return {d.K % 2 == 1 ? gu_next : gu, gp, gw, gwf, gwb};
}

}  // namespace
}  // namespace tvnet

TORCH_LIBRARY_IMPL(mvaccel, CUDA, m) {
  m.impl("tvnet_iterations", &tvnet::tvnet_iterations_cuda);
  m.impl("_tvnet_iterations_backward", &tvnet::tvnet_iterations_backward_cuda);
}

}  // namespace mvaccel
