// CUDA kernels of tvl1_flow (the whole batch at once, level by level),
// compiled by nvcc (tvl1_cuda.cu launches them) and by NVRTC at run time
// (mvaccel/ops/_nvrtc.py). Device code only: no ATen, no standard library.
//
// The inner iterations run in tvl1_iterate_tiled, which does up to kSteps
// iterations per launch on a shared-memory tile: a block loads a
// (kTY + 2 kSteps) x (kTX + 2 kSteps) region of u1, u2, p11, p12, p21, p22 and
// of the warp's constants I1wx, I1wy, rho_c, iterates in shared memory, and
// writes back the kTY x kTX core. One iteration moves the domain of
// dependence by one pixel each way (u reads p on the left and above, p reads
// u on the right and below), so after n <= kSteps iterations the core is
// exact and the halo is thrown away.
//
// A block's halo is its neighbours' core, so a launch reads the state from
// one buffer set (`in`) and writes the cores to another (`out`), and the host
// swaps them after each launch: a block that starts after its neighbour has
// finished (blocks run in waves) still reads the state before the launch.
// Writing in place would give such a block its neighbour's updated cells.
//
// Bytes per pixel and iteration (float32):
//   OpenCV CUDA (estimateU + estimateDualVariables, two launches):
//     reads I1wx, I1wy, grad, rho_c, u1, u2, 4 p (twice: both kernels),
//     u1, u2 again, writes u1, u2, diff, 4 p: about 23 planes = 92 B.
//   one fused pass per iteration (the CPU kernel's scheme): 9 reads +
//     6 writes = 60 B, the minimum when the state goes to memory each time.
//   this kernel, n iterations per launch: 9 planes read over the region
//     (44 x 28 for a 32 x 16 core: 2.4x) + 6 written = 27.7 planes / n:
//     at n = 6, 18.5 B per pixel and iteration (3.2x under the fused pass,
//     5x under OpenCV). The extra work is the recomputed halo (2.4x ALU).
//
// Stopping is per pair: the host keeps each pair's error, its OpenCV
// (every iteration) or OpenCV-CUDA (sparse) check schedule, and asks the
// kernel for as many iterations as no active pair needs a check in between;
// a stopped pair gets 0 iterations and its blocks only copy its state. The
// kernel reduces the squared update of its last iteration per pair (one
// double atomic per block), which the host reads only when a check is due.
#pragma once

#include "tvl1_math.h"

namespace mvaccel {
namespace tvl1 {

constexpr int kThreads = 256;
constexpr int kTX = 32, kTY = 16, kSteps = 6;
constexpr int kRX = kTX + 2 * kSteps, kRY = kTY + 2 * kSteps;
constexpr int kRegion = kRX * kRY;

// ---------------------------------------------------------------- pyramid

// cv::resize INTER_LINEAR of N planes (hs, ws) -> (hd, wd), times mul.
__global__ void resize_kernel(const float* __restrict__ src, int hs, int ws,
                              float* __restrict__ dst, int hd, int wd, float sy,
                              float sx, float mul) {
  const int x = blockIdx.x * blockDim.x + threadIdx.x;
  const int y = blockIdx.y * blockDim.y + threadIdx.y;
  if (x >= wd || y >= hd) return;
  const int64_t n = blockIdx.z;
  int x0, x1, y0, y1;
  float fx, fy;
  linear_taps<float, int>(x, ws, sx, x0, x1, fx);
  linear_taps<float, int>(y, hs, sy, y0, y1, fy);
  const float* s = src + n * hs * ws;
  const float top = s[y0 * ws + x0] * (1.f - fx) + s[y0 * ws + x1] * fx;
  const float bot = s[y1 * ws + x0] * (1.f - fx) + s[y1 * ws + x1] * fx;
  dst[n * hd * wd + static_cast<int64_t>(y) * wd + x] =
      (top * (1.f - fy) + bot * fy) * mul;
}

__global__ void centred_grad_kernel(const float* __restrict__ src, int H, int W,
                                    float* __restrict__ dx,
                                    float* __restrict__ dy) {
  const int x = blockIdx.x * blockDim.x + threadIdx.x;
  const int y = blockIdx.y * blockDim.y + threadIdx.y;
  if (x >= W || y >= H) return;
  const int64_t off = static_cast<int64_t>(blockIdx.z) * H * W;
  const int64_t i = off + static_cast<int64_t>(y) * W + x;
  centred_grad(src + off, W, y, x, H, W, dx[i], dy[i]);
}

// ---------------------------------------------------------------- warp

// Warps I1, I1x, I1y by the current flow and writes the constants of the
// warp's iterations: I1wx, I1wy and rho_c. Pairs with active[n] == 0 skip.
__global__ void warp_kernel(const float* __restrict__ I0,
                            const float* __restrict__ I1,
                            const float* __restrict__ I1x,
                            const float* __restrict__ I1y,
                            const float* __restrict__ u1,
                            const float* __restrict__ u2, int H, int W,
                            int mode, float* __restrict__ wx,
                            float* __restrict__ wy, float* __restrict__ rc) {
  const int x = blockIdx.x * blockDim.x + threadIdx.x;
  const int y = blockIdx.y * blockDim.y + threadIdx.y;
  if (x >= W || y >= H) return;
  const int64_t off = static_cast<int64_t>(blockIdx.z) * H * W;
  const int64_t i = off + static_cast<int64_t>(y) * W + x;
  const float a = u1[i], b = u2[i];
  float w, gx, gy;
  warp_sample3<float, int>(I1 + off, I1x + off, I1y + off, W, H, W,
                           static_cast<float>(x) + a, static_cast<float>(y) + b,
                           mode, w, gx, gy);
  wx[i] = gx;
  wy[i] = gy;
  rc[i] = residual_rho_c(w, gx, gy, a, b, I0[i]);
}

// ---------------------------------------------------------------- median

// 5x5 median (replicated border) of u1 and u2 into o1, o2 for active pairs;
// inactive pairs are copied.
__global__ void median5_kernel(const float* __restrict__ u1,
                               const float* __restrict__ u2, int H, int W,
                               const int* __restrict__ active,
                               float* __restrict__ o1, float* __restrict__ o2) {
  const int x = blockIdx.x * blockDim.x + threadIdx.x;
  const int y = blockIdx.y * blockDim.y + threadIdx.y;
  if (x >= W || y >= H) return;
  const int n = blockIdx.z;
  const int64_t off = static_cast<int64_t>(n) * H * W;
  const int64_t i = off + static_cast<int64_t>(y) * W + x;
  if (!active[n]) {
    o1[i] = u1[i];
    o2[i] = u2[i];
    return;
  }
  for (int c = 0; c < 2; ++c) {
    const float* u = (c == 0 ? u1 : u2) + off;
    float p[25];
#pragma unroll
    for (int dy = 0; dy < 5; ++dy) {
      const int yy = min(max(y + dy - 2, 0), H - 1);
#pragma unroll
      for (int dx = 0; dx < 5; ++dx) {
        const int xx = min(max(x + dx - 2, 0), W - 1);
        p[dy * 5 + dx] = u[yy * W + xx];
      }
    }
    (c == 0 ? o1 : o2)[i] = median25(p);
  }
}

// ---------------------------------------------------------------- iterations

// The iteration state of a batch: flow and dual planes, (N, H, W) each.
struct TileState {
  float *u1, *u2, *p11, *p12, *p21, *p22;
};
static_assert(sizeof(TileState) == 48, "mirrored by mvaccel/ops/_nvrtc.py");

// n_iter[n] inner iterations for pair n (0: frozen, its state is copied) on
// one kTY x kTX tile, from `in` to `out` (distinct buffers); err[n] += the
// squared update of the last iteration over the tile.
__global__ void __launch_bounds__(kThreads) tvl1_iterate_tiled(
    const float* __restrict__ gwx, const float* __restrict__ gwy,
    const float* __restrict__ grc, const TileState in, const TileState out,
    int H, int W, const int* __restrict__ n_iter, float l_t, float theta,
    float taut, float geps, float deps, double* __restrict__ err) {
  const int n = blockIdx.z;
  const int steps = n_iter[n];
  const int64_t off = static_cast<int64_t>(n) * H * W;
  if (steps <= 0) {
    for (int k = threadIdx.x; k < kTX * kTY; k += kThreads) {
      const int gx = blockIdx.x * kTX + k % kTX,
                gy = blockIdx.y * kTY + k / kTX;
      if (gx >= W || gy >= H) continue;
      const int64_t i = off + static_cast<int64_t>(gy) * W + gx;
      out.u1[i] = in.u1[i];
      out.u2[i] = in.u2[i];
      out.p11[i] = in.p11[i];
      out.p12[i] = in.p12[i];
      out.p21[i] = in.p21[i];
      out.p22[i] = in.p22[i];
    }
    return;
  }
  __shared__ float wx[kRegion], wy[kRegion], rc[kRegion];
  __shared__ float u1[kRegion], u2[kRegion];
  __shared__ float p11[kRegion], p12[kRegion], p21[kRegion], p22[kRegion];
  __shared__ float red[kThreads / 32];
  const int ox = blockIdx.x * kTX - kSteps, oy = blockIdx.y * kTY - kSteps;

  for (int k = threadIdx.x; k < kRegion; k += kThreads) {
    const int gx = ox + k % kRX, gy = oy + k / kRX;
    if (gx >= 0 && gx < W && gy >= 0 && gy < H) {
      const int64_t i = off + static_cast<int64_t>(gy) * W + gx;
      wx[k] = gwx[i];
      wy[k] = gwy[i];
      rc[k] = grc[i];
      u1[k] = in.u1[i];
      u2[k] = in.u2[i];
      p11[k] = in.p11[i];
      p12[k] = in.p12[i];
      p21[k] = in.p21[i];
      p22[k] = in.p22[i];
    } else {
      wx[k] = wy[k] = rc[k] = u1[k] = u2[k] = 0.f;
      p11[k] = p12[k] = p21[k] = p22[k] = 0.f;
    }
  }
  __syncthreads();

  float e = 0.f;
  for (int s = 0; s < steps; ++s) {
    const bool last = s + 1 == steps;
    // Primal step over the whole region; cells whose left/upper neighbour
    // lies outside the region read garbage, which stays in the halo.
    for (int k = threadIdx.x; k < kRegion; k += kThreads) {
      const int lx = k % kRX, ly = k / kRX;
      const int gx = ox + lx, gy = oy + ly;
      if (gx < 0 || gx >= W || gy < 0 || gy >= H) continue;
      const float d1 = (gx > 0 && lx > 0 ? p11[k] - p11[k - 1] : p11[k]) +
                       (gy > 0 && ly > 0 ? p12[k] - p12[k - kRX] : p12[k]);
      const float d2 = (gx > 0 && lx > 0 ? p21[k] - p21[k - 1] : p21[k]) +
                       (gy > 0 && ly > 0 ? p22[k] - p22[k - kRX] : p22[k]);
      const float ix = wx[k], iy = wy[k];
      const float a = u1[k], b = u2[k];
      const float sc = threshold_scale(residual_rho(rc[k], ix, iy, a, b),
                                       ix * ix + iy * iy, l_t, geps);
      const float n1 = update_u(a + sc * ix, theta, d1);
      const float n2 = update_u(b + sc * iy, theta, d2);
      u1[k] = n1;
      u2[k] = n2;
      if (last && lx >= kSteps && lx < kSteps + kTX && ly >= kSteps &&
          ly < kSteps + kTY)
        e += (n1 - a) * (n1 - a) + (n2 - b) * (n2 - b);
    }
    __syncthreads();
    // Dual step; cells whose right/lower neighbour lies outside the region
    // read garbage, which stays in the halo.
    for (int k = threadIdx.x; k < kRegion; k += kThreads) {
      const int lx = k % kRX, ly = k / kRX;
      const int gx = ox + lx, gy = oy + ly;
      if (gx < 0 || gx >= W || gy < 0 || gy >= H) continue;
      const bool right = gx + 1 < W && lx + 1 < kRX;
      const bool down = gy + 1 < H && ly + 1 < kRY;
      const float u1x = right ? u1[k + 1] - u1[k] : 0.f;
      const float u2x = right ? u2[k + 1] - u2[k] : 0.f;
      const float u1y = down ? u1[k + kRX] - u1[k] : 0.f;
      const float u2y = down ? u2[k + kRX] - u2[k] : 0.f;
      float a = p11[k], b = p12[k];
      update_p(a, b, u1x, u1y, taut, deps);
      p11[k] = a;
      p12[k] = b;
      a = p21[k];
      b = p22[k];
      update_p(a, b, u2x, u2y, taut, deps);
      p21[k] = a;
      p22[k] = b;
    }
    __syncthreads();
  }

  for (int k = threadIdx.x; k < kTX * kTY; k += kThreads) {
    const int lx = kSteps + k % kTX, ly = kSteps + k / kTX;
    const int gx = ox + lx, gy = oy + ly;
    if (gx >= W || gy >= H) continue;
    const int64_t i = off + static_cast<int64_t>(gy) * W + gx;
    const int r = ly * kRX + lx;
    out.u1[i] = u1[r];
    out.u2[i] = u2[r];
    out.p11[i] = p11[r];
    out.p12[i] = p12[r];
    out.p21[i] = p21[r];
    out.p22[i] = p22[r];
  }

  // Block sum of the last iteration's squared updates.
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) e += __shfl_down_sync(0xffffffffu, e, o);
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = e;
  __syncthreads();
  if (threadIdx.x == 0) {
    double t = 0;
    for (int w = 0; w < kThreads / 32; ++w) t += red[w];
    atomicAdd(err + n, t);
  }
}

}  // namespace tvl1
}  // namespace mvaccel
