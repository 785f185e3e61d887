// CUDA kernels of tvnet_iterations and its backward, compiled by nvcc
// (tvnet_cuda.cu launches them) and by NVRTC at run time
// (mvaccel/ops/_nvrtc.py). Device code only: no ATen, no standard library.
//
// One thread per pixel of the (N, H, W) grid; each pass of tvnet_math.h is
// one launch, so an iteration is two launches forward and three backward.
// Filter gradients: each block sums its threads' terms in shared memory and
// adds the 8 sums to the iteration's row of grad_wf / grad_wb atomically.
#pragma once

#include "tvnet_math.h"

namespace mvaccel {
namespace tvnet {

constexpr int kThreads = 256;

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

}  // namespace tvnet
}  // namespace mvaccel
