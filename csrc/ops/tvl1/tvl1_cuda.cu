// CUDA entry of tvl1_flow: the host side of the batch solver (pyramid,
// warps, per-pair stopping) over the kernels in tvl1_kernels.cuh, whose
// header explains the tiled iterations.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <limits>
#include <utility>
#include <vector>

#include "tvl1.h"
#include "tvl1_checks.h"
#include "tvl1_kernels.cuh"

namespace mvaccel {
namespace tvl1 {
namespace {

dim3 grid2d(int64_t W, int64_t H, int64_t N, int bx, int by) {
  return dim3(static_cast<unsigned>((W + bx - 1) / bx),
              static_cast<unsigned>((H + by - 1) / by),
              static_cast<unsigned>(N));
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

TileState tile_state(std::array<at::Tensor, 6>& s) {
  return {s[0].mutable_data_ptr<float>(), s[1].mutable_data_ptr<float>(),
          s[2].mutable_data_ptr<float>(), s[3].mutable_data_ptr<float>(),
          s[4].mutable_data_ptr<float>(), s[5].mutable_data_ptr<float>()};
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
    for (at::Tensor* t : {&I1x_, &I1y_, &wx_, &wy_, &rc_, &t1_, &t2_})
      *t = at::empty({N_ * HW}, opts);
    for (at::Tensor& t : p_) t = at::empty({N_ * HW}, opts);
    for (at::Tensor& t : spare_) t = at::empty({N_ * HW}, opts);
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
    // The state in `cur` (u: the caller's tensors; p: zeros), written to
    // `alt` by each tiled launch, then swapped (see tvl1_kernels.cuh).
    std::array<at::Tensor, 6> cur, alt;
    cur[0] = u1.view({-1});
    cur[1] = u2.view({-1});
    alt[0] = spare_[0].narrow(0, 0, N_ * HW);
    alt[1] = spare_[1].narrow(0, 0, N_ * HW);
    for (int k = 2; k < 6; ++k) {
      cur[k] = p_[k - 2].narrow(0, 0, N_ * HW).zero_();
      alt[k] = spare_[k].narrow(0, 0, N_ * HW);
    }
    const double eps2 = c_.epsilon * c_.epsilon * static_cast<double>(HW);
    const dim3 tgrid = grid2d(W, H, N_, kTX, kTY);
    for (int64_t wi = 0; wi < c_.warps; ++wi) {
      warp_kernel<<<grid, block, 0, stream_>>>(
          I0, I1, I1x, I1y, cur[0].const_data_ptr<float>(),
          cur[1].const_data_ptr<float>(), H, W, static_cast<int>(c_.warp),
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
              cur[0].const_data_ptr<float>(), cur[1].const_data_ptr<float>(), H,
              W, n_iter_dev_.const_data_ptr<int>(),
              t1_.mutable_data_ptr<float>(), t2_.mutable_data_ptr<float>());
          C10_CUDA_KERNEL_LAUNCH_CHECK();
          cur[0].copy_(t1_.narrow(0, 0, N_ * HW));
          cur[1].copy_(t2_.narrow(0, 0, N_ * HW));
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
              rc_.const_data_ptr<float>(), tile_state(cur), tile_state(alt), H,
              W, n_iter_dev_.const_data_ptr<int>(), c_.l_t(),
              static_cast<float>(c_.theta), c_.taut(),
              static_cast<float>(c_.grad_eps), static_cast<float>(c_.dual_eps),
              err_dev_.mutable_data_ptr<double>());
          C10_CUDA_KERNEL_LAUNCH_CHECK();
          std::swap(cur, alt);
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
    if (cur[0].data_ptr() != u1.data_ptr()) {  // an odd number of launches
      u1.view({-1}).copy_(cur[0]);
      u2.view({-1}).copy_(cur[1]);
    }
  }

  const Config c_;
  const int64_t N_;
  const std::vector<std::pair<int64_t, int64_t>> sizes_;
  const cudaStream_t stream_;
  std::vector<at::Tensor> I0s_, I1s_;
  at::Tensor I1x_, I1y_, wx_, wy_, rc_, t1_, t2_;
  // The state's planes: p11, p12, p21, p22 (u is the caller's), and a spare
  // set of (u1, u2, p11, p12, p21, p22) for the tiled launches to write.
  std::array<at::Tensor, 4> p_;
  std::array<at::Tensor, 6> spare_;
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
