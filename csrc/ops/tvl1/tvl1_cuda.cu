// CUDA kernel of tvl1_flow: the whole batch at once, level by level.
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
// a stopped pair gets 0 iterations and its blocks return at once. The
// kernel reduces the squared update of its last iteration per pair (one
// double atomic per block), which the host reads only when a check is due.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <vector>

#include "tvl1_checks.h"

namespace mvaccel {
namespace tvl1 {
namespace {

constexpr int kThreads = 256;
constexpr int kTX = 32, kTY = 16, kSteps = 6;
constexpr int kRX = kTX + 2 * kSteps, kRY = kTY + 2 * kSteps;
constexpr int kRegion = kRX * kRY;

dim3 grid2d(int64_t W, int64_t H, int64_t N, int bx, int by) {
  return dim3(static_cast<unsigned>((W + bx - 1) / bx),
              static_cast<unsigned>((H + by - 1) / by),
              static_cast<unsigned>(N));
}

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

// n_iter[n] inner iterations for pair n (0: frozen) on one kTY x kTX tile;
// err[n] += the squared update of the last iteration over the tile.
__global__ void __launch_bounds__(kThreads) tvl1_iterate_tiled(
    const float* __restrict__ gwx, const float* __restrict__ gwy,
    const float* __restrict__ grc, float* __restrict__ gu1,
    float* __restrict__ gu2, float* __restrict__ gp11, float* __restrict__ gp12,
    float* __restrict__ gp21, float* __restrict__ gp22, int H, int W,
    const int* __restrict__ n_iter, float l_t, float theta, float taut,
    float geps, float deps, double* __restrict__ err) {
  const int n = blockIdx.z;
  const int steps = n_iter[n];
  if (steps <= 0) return;
  __shared__ float wx[kRegion], wy[kRegion], rc[kRegion];
  __shared__ float u1[kRegion], u2[kRegion];
  __shared__ float p11[kRegion], p12[kRegion], p21[kRegion], p22[kRegion];
  __shared__ float red[kThreads / 32];
  const int ox = blockIdx.x * kTX - kSteps, oy = blockIdx.y * kTY - kSteps;
  const int64_t off = static_cast<int64_t>(n) * H * W;

  for (int k = threadIdx.x; k < kRegion; k += kThreads) {
    const int gx = ox + k % kRX, gy = oy + k / kRX;
    if (gx >= 0 && gx < W && gy >= 0 && gy < H) {
      const int64_t i = off + static_cast<int64_t>(gy) * W + gx;
      wx[k] = gwx[i];
      wy[k] = gwy[i];
      rc[k] = grc[i];
      u1[k] = gu1[i];
      u2[k] = gu2[i];
      p11[k] = gp11[i];
      p12[k] = gp12[i];
      p21[k] = gp21[i];
      p22[k] = gp22[i];
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
    gu1[i] = u1[r];
    gu2[i] = u2[r];
    gp11[i] = p11[r];
    gp12[i] = p12[r];
    gp21[i] = p21[r];
    gp22[i] = p22[r];
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

// ---------------------------------------------------------------- host

struct PairState {
  double err, prev;
  bool done;
};

// Iterations pair s may run from iteration `it` on before its next check
// (the check included), or `cap` when no check comes first.
int64_t until_check(const Config& c, const PairState& s, int64_t it,
                    double eps2, int64_t cap) {
  if (c.epsilon <= 0) return cap;
  if (c.stop_check == kStopEvery) return 1;
  // OpenCV CUDA: iteration m checks when m is odd and prev - (m - it) * eps2
  // (one decrement per unchecked iteration) is below eps2.
  for (int64_t m = it; m < it + cap; ++m)
    if ((m & 1) && s.prev - static_cast<double>(m - it) * eps2 < eps2)
      return m - it + 1;
  return cap;
}

class BatchSolver {
 public:
  BatchSolver(const Config& c, const at::Tensor& I0, const at::Tensor& I1)
      : c_(c),
        N_(I0.size(0)),
        sizes_(pyramid_sizes(I0.size(1), I0.size(2), c)),
        stream_(c10::cuda::getCurrentCUDAStream()) {
    I0s_.push_back(I0);
    I1s_.push_back(I1);
    const float inv = static_cast<float>(1.0 / c.scale_step);
    for (size_t l = 1; l < sizes_.size(); ++l) {
      I0s_.push_back(resize(I0s_.back(), sizes_[l], inv, inv, 1.f));
      I1s_.push_back(resize(I1s_.back(), sizes_[l], inv, inv, 1.f));
    }
    const auto opts = I0.options();
    const int64_t HW = I0.size(1) * I0.size(2);
    for (at::Tensor* t : {&I1x_, &I1y_, &wx_, &wy_, &rc_, &p11_, &p12_, &p21_,
                          &p22_, &t1_, &t2_})
      *t = at::empty({N_ * HW}, opts);
    n_iter_dev_ = at::empty({N_}, opts.dtype(at::kInt));
    err_dev_ = at::empty({N_}, opts.dtype(at::kDouble));
  }

  at::Tensor solve(const c10::optional<at::Tensor>& init) {
    const int64_t L = static_cast<int64_t>(sizes_.size());
    const float inv = static_cast<float>(1.0 / c_.scale_step);
    at::Tensor u1, u2;
    if (init.has_value()) {
      // copies: the solver updates u in place
      u1 = init->select(1, 0).clone(at::MemoryFormat::Contiguous);
      u2 = init->select(1, 1).clone(at::MemoryFormat::Contiguous);
      const float step = static_cast<float>(c_.scale_step);
      for (int64_t l = 1; l < L; ++l) {
        u1 = resize(u1, sizes_[l], inv, inv, step);
        u2 = resize(u2, sizes_[l], inv, inv, step);
      }
    } else {
      u1 = at::zeros({N_, sizes_[L - 1].first, sizes_[L - 1].second},
                     I0s_[0].options());
      u2 = at::zeros_like(u1);
    }
    for (int64_t l = L - 1; l >= 0; --l) {
      level(l, u1, u2);
      if (l == 0) break;
      const auto [h, w] = sizes_[l];
      const auto [hn, wn] = sizes_[l - 1];
      const float sy = static_cast<float>(static_cast<double>(h) / hn);
      const float sx = static_cast<float>(static_cast<double>(w) / wn);
      u1 = resize(u1, sizes_[l - 1], sy, sx, inv);
      u2 = resize(u2, sizes_[l - 1], sy, sx, inv);
    }
    return at::stack({u1, u2}, 1);
  }

 private:
  at::Tensor resize(const at::Tensor& src, std::pair<int64_t, int64_t> to,
                    float sy, float sx, float mul) {
    at::Tensor dst = at::empty({N_, to.first, to.second}, src.options());
    const dim3 block(32, 8);
    resize_kernel<<<grid2d(to.second, to.first, N_, 32, 8), block, 0,
                    stream_>>>(
        src.const_data_ptr<float>(), static_cast<int>(src.size(1)),
        static_cast<int>(src.size(2)), dst.mutable_data_ptr<float>(),
        static_cast<int>(to.first), static_cast<int>(to.second), sy, sx, mul);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return dst;
  }

  void set_n_iter(const std::vector<int>& v) {
    if (v == n_iter_host_) return;
    n_iter_host_ = v;
    at::Tensor h = at::from_blob(n_iter_host_.data(), {N_},
                                 at::TensorOptions().dtype(at::kInt))
                       .clone();
    n_iter_dev_.copy_(h, /*non_blocking=*/false);
  }

  void level(int64_t l, at::Tensor& u1, at::Tensor& u2) {
    const auto [H64, W64] = sizes_[l];
    const int H = static_cast<int>(H64), W = static_cast<int>(W64);
    const int64_t HW = H64 * W64;
    const dim3 block(32, 8);
    const dim3 grid = grid2d(W, H, N_, 32, 8);
    const float* I0 = I0s_[l].const_data_ptr<float>();
    const float* I1 = I1s_[l].const_data_ptr<float>();
    float* I1x = I1x_.mutable_data_ptr<float>();
    float* I1y = I1y_.mutable_data_ptr<float>();
    centred_grad_kernel<<<grid, block, 0, stream_>>>(I1, H, W, I1x, I1y);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    for (at::Tensor* p : {&p11_, &p12_, &p21_, &p22_})
      p->narrow(0, 0, N_ * HW).zero_();
    const double eps2 = c_.epsilon * c_.epsilon * static_cast<double>(HW);
    const dim3 tgrid = grid2d(W, H, N_, kTX, kTY);
    for (int64_t wi = 0; wi < c_.warps; ++wi) {
      warp_kernel<<<grid, block, 0, stream_>>>(
          I0, I1, I1x, I1y, u1.const_data_ptr<float>(),
          u2.const_data_ptr<float>(), H, W, static_cast<int>(c_.warp),
          wx_.mutable_data_ptr<float>(), wy_.mutable_data_ptr<float>(),
          rc_.mutable_data_ptr<float>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      std::vector<PairState> st(
          N_, PairState{std::numeric_limits<double>::infinity(), 0.0, false});
      int64_t it = 0;
      std::vector<int> n_iter(N_);
      for (int64_t o = 0; o < c_.outer; ++o) {
        bool any = false;
        for (int64_t n = 0; n < N_; ++n) {
          n_iter[n] = st[n].done ? 0 : 1;
          any = any || !st[n].done;
        }
        if (!any) break;
        if (c_.median == 5) {
          set_n_iter(n_iter);
          median5_kernel<<<grid, block, 0, stream_>>>(
              u1.const_data_ptr<float>(), u2.const_data_ptr<float>(), H, W,
              n_iter_dev_.const_data_ptr<int>(), t1_.mutable_data_ptr<float>(),
              t2_.mutable_data_ptr<float>());
          C10_CUDA_KERNEL_LAUNCH_CHECK();
          u1.copy_(t1_.narrow(0, 0, N_ * HW).view({N_, H64, W64}));
          u2.copy_(t2_.narrow(0, 0, N_ * HW).view({N_, H64, W64}));
        }
        for (int64_t i = 0; i < c_.inner;) {
          // As many iterations as no active pair needs a check in between.
          int64_t k = std::min<int64_t>(kSteps, c_.inner - i);
          bool active = false;
          for (int64_t n = 0; n < N_; ++n) {
            if (st[n].done) continue;
            active = true;
            k = std::min(k, until_check(c_, st[n], it, eps2, k));
          }
          if (!active) break;
          for (int64_t n = 0; n < N_; ++n)
            n_iter[n] = st[n].done ? 0 : static_cast<int>(k);
          set_n_iter(n_iter);
          err_dev_.zero_();
          tvl1_iterate_tiled<<<tgrid, kThreads, 0, stream_>>>(
              wx_.const_data_ptr<float>(), wy_.const_data_ptr<float>(),
              rc_.const_data_ptr<float>(), u1.mutable_data_ptr<float>(),
              u2.mutable_data_ptr<float>(), p11_.mutable_data_ptr<float>(),
              p12_.mutable_data_ptr<float>(), p21_.mutable_data_ptr<float>(),
              p22_.mutable_data_ptr<float>(), H, W,
              n_iter_dev_.const_data_ptr<int>(), c_.l_t(),
              static_cast<float>(c_.theta), c_.taut(),
              static_cast<float>(c_.grad_eps), static_cast<float>(c_.dual_eps),
              err_dev_.mutable_data_ptr<double>());
          C10_CUDA_KERNEL_LAUNCH_CHECK();
          const int64_t last = it + k - 1;
          std::vector<char> check(N_, 0);
          bool need = false;
          for (int64_t n = 0; n < N_; ++n) {
            if (st[n].done || c_.epsilon <= 0) continue;
            check[n] =
                until_check(c_, st[n], it, eps2, k) == k &&
                (c_.stop_check == kStopEvery ||
                 ((last & 1) &&
                  st[n].prev - static_cast<double>(k - 1) * eps2 < eps2));
            need = need || check[n];
          }
          at::Tensor errs;
          if (need) errs = err_dev_.cpu();  // synchronises the stream
          for (int64_t n = 0; n < N_; ++n) {
            if (st[n].done || c_.epsilon <= 0) continue;
            if (check[n]) {
              const double e = errs.data_ptr<double>()[n];
              st[n].err = e;
              st[n].prev = e;
              st[n].done = e <= eps2;
            } else {
              st[n].err = std::numeric_limits<double>::infinity();
              st[n].prev -= static_cast<double>(k) * eps2;
            }
          }
          it += k;
          i += k;
        }
      }
    }
  }

  const Config c_;
  const int64_t N_;
  const std::vector<std::pair<int64_t, int64_t>> sizes_;
  const cudaStream_t stream_;
  std::vector<at::Tensor> I0s_, I1s_;
  at::Tensor I1x_, I1y_, wx_, wy_, rc_, p11_, p12_, p21_, p22_, t1_, t2_;
  at::Tensor n_iter_dev_, err_dev_;
  std::vector<int> n_iter_host_;
};

at::Tensor tvl1_flow_cuda(const at::Tensor& I0_, const at::Tensor& I1_,
                          const c10::optional<at::Tensor>& init_, double tau,
                          double lambda, double theta, int64_t nscales,
                          double scale_step, int64_t warps, double epsilon,
                          int64_t inner, int64_t outer, int64_t median,
                          int64_t warp, int64_t stop_check, int64_t min_size,
                          double dual_eps, double grad_eps) {
  const Config c = check_tvl1_flow(
      I0_, I1_, init_, tau, lambda, theta, nscales, scale_step, warps, epsilon,
      inner, outer, median, warp, stop_check, min_size, dual_eps, grad_eps);
  const c10::cuda::CUDAGuard guard(I0_.device());
  const int64_t N = I0_.size(0), H = I0_.size(1), W = I0_.size(2);
  if (N == 0) return at::empty({0, 2, H, W}, I0_.options());
  TORCH_CHECK(N <= 65535, "tvl1_flow: at most 65535 pairs per call on CUDA");
  BatchSolver s(c, I0_.contiguous(), I1_.contiguous());
  return s.solve(init_);
}

}  // namespace
}  // namespace tvl1
}  // namespace mvaccel

TORCH_LIBRARY_IMPL(mvaccel, CUDA, m) {
  m.impl("tvl1_flow", &mvaccel::tvl1::tvl1_flow_cuda);
}
