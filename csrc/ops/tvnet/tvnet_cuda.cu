// CUDA kernels of tvnet_iterations and its backward.
//
// One thread per pixel of the (N, H, W) grid; each pass of tvnet_math.h is
// one launch, so an iteration is two launches forward and three backward.
// Filter gradients: each block sums its threads' terms in shared memory and
// adds the 8 sums to the iteration's row of grad_wf / grad_wb atomically.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <tuple>

#include "tvnet_checks.h"

namespace mvaccel {
namespace tvnet {
namespace {

constexpr int kThreads = 256;

inline unsigned blocks_for(int64_t n) {
  return static_cast<unsigned>((n + kThreads - 1) / kThreads);
}

struct Pixel {
  int64_t n, y, x;
  bool valid;
};

__device__ inline Pixel pixel_of(const Dims& d) {
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t HW = d.H * d.W;
  Pixel px;
  px.valid = t < d.N * HW;
  px.n = t / HW;
  px.y = (t % HW) / d.W;
  px.x = t % d.W;
  return px;
}

template <typename T>
__global__ void pass_u_kernel(T* u, const T* p, const T* w, const T* wb_it,
                              Dims d, T l_t, T theta, T grad_eps) {
  const Pixel q = pixel_of(d);
  if (!q.valid) return;
  const int64_t HW = d.H * d.W;
  pass_u<T>(u + q.n * 2 * HW, p + q.n * 4 * HW, w + q.n * 3 * HW, d.H, d.W, q.y,
            q.x, taps_of<T>(wb_it, 0), taps_of<T>(wb_it, 1), l_t, theta,
            grad_eps);
}

template <typename T>
__global__ void pass_p_kernel(const T* u, T* p, const T* wf_it, Dims d, T taut,
                              T eps) {
  const Pixel q = pixel_of(d);
  if (!q.valid) return;
  const int64_t HW = d.H * d.W;
  pass_p<T>(u + q.n * 2 * HW, p + q.n * 4 * HW, d.H, d.W, q.y, q.x,
            taps_of<T>(wf_it, 0), taps_of<T>(wf_it, 1), taut, eps);
}

// Sum acc[0..8) over the block and add it to out[0..8).
template <typename T>
__device__ void block_add(T* acc, T* out) {
  __shared__ T buf[kTaps][kThreads];
  for (int j = 0; j < kTaps; ++j) buf[j][threadIdx.x] = acc[j];
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) {
      for (int j = 0; j < kTaps; ++j)
        buf[j][threadIdx.x] += buf[j][threadIdx.x + s];
    }
    __syncthreads();
  }
  if (threadIdx.x < kTaps) atomicAdd(out + threadIdx.x, buf[threadIdx.x][0]);
}

template <typename T>
__global__ void pass_p_backward_kernel(const T* ucur, int64_t ucur_planes,
                                       const T* st, T* gp, T* g4,
                                       const T* wf_it, T* gwf_it, Dims d,
                                       T taut, T eps) {
  const Pixel q = pixel_of(d);
  T acc[kTaps] = {};
  if (q.valid) {
    const int64_t HW = d.H * d.W;
    const Taps<T> f[2] = {taps_of<T>(wf_it, 0), taps_of<T>(wf_it, 1)};
    pass_p_backward<T>(ucur + q.n * ucur_planes * HW,
                       st + q.n * 6 * HW + 2 * HW, gp + q.n * 4 * HW,
                       g4 + q.n * 4 * HW, d.H, d.W, q.y, q.x, f, taut, eps,
                       acc);
  }
  block_add<T>(acc, gwf_it);
}

template <typename T>
__global__ void pass_g_kernel(T* gu, const T* g4, const T* wf_it, Dims d) {
  const Pixel q = pixel_of(d);
  if (!q.valid) return;
  const int64_t HW = d.H * d.W;
  const Taps<T> f[2] = {taps_of<T>(wf_it, 0), taps_of<T>(wf_it, 1)};
  pass_g<T>(gu + q.n * 2 * HW, g4 + q.n * 4 * HW, d.H, d.W, q.y, q.x, f);
}

template <typename T>
__global__ void pass_u_backward_kernel(const T* st, const T* w, const T* G,
                                       T* gp, T* gw, T* gu_old, const T* wb_it,
                                       T* gwb_it, Dims d, T l_t, T theta,
                                       T grad_eps) {
  const Pixel q = pixel_of(d);
  T acc[kTaps] = {};
  if (q.valid) {
    const int64_t HW = d.H * d.W;
    const Taps<T> b[2] = {taps_of<T>(wb_it, 0), taps_of<T>(wb_it, 1)};
    const T* uold = st + q.n * 6 * HW;
    pass_u_backward<T>(uold, uold + 2 * HW, w + q.n * 3 * HW, G + q.n * 2 * HW,
                       gp + q.n * 4 * HW, gw + q.n * 3 * HW,
                       gu_old + q.n * 2 * HW, d.H, d.W, q.y, q.x, b, l_t, theta,
                       grad_eps, acc);
  }
  block_add<T>(acc, gwb_it);
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
