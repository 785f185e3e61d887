// CPU kernel of tvl1_flow.
//
// Threads: when the batch has at least as many pairs as threads, each thread
// solves whole pairs (no synchronisation at all); otherwise the pairs are
// solved one after the other with the rows of every pass split over the
// threads.
//
// One inner iteration is ONE pass over memory instead of OpenCV's five
// (estimateV, divergence, estimateU, forwardGradient, estimateDualVariables):
// walking down the rows, row y of u is updated (it needs the old p on rows
// y-1 and y) and then row y-1 of p (it needs the new u on rows y-1 and y), so
// p row y-1 is still old when u row y reads it. With row chunks per thread,
// the last p row of each chunk needs the next chunk's first u row; it is
// updated in a second, tiny pass. Per pixel and iteration that pass reads
// I1wx, I1wy, rho_c, u1, u2, p11, p12, p21, p22 and writes u1, u2 and the
// four p: 60 bytes (OpenCV: about 35 loads and stores of 4 bytes).
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "tvl1_checks.h"

// Hot row loops are compiled twice, for AVX2+FMA and for the baseline ISA,
// and picked at load time (GCC/Clang function multi-versioning).
#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define MVACCEL_CLONES \
  __attribute__((target_clones("arch=x86-64-v3", "default")))
#define MVACCEL_X86_AVX2 1
#include <immintrin.h>
#else
#define MVACCEL_CLONES
#endif

namespace mvaccel {
namespace tvl1 {
namespace {

using Plane = std::vector<float>;

// Runs fn(c, y0, y1) over row chunks of an H-row plane: one chunk when
// `serial` or the plane is small, else one chunk per thread.
template <typename F>
void for_chunks(int64_t H, int64_t W, bool serial, const F& fn) {
  // At least 256k pixels per chunk (~0.5 ms of work per pass): below that
  // the fork/join of a parallel region per pass costs more than it saves;
  // on a machine whose cores are shared with other work (the 2-core machine
  // of bench/RESULTS.md) a 512x384 pair split over 2 threads ran 8x slower
  // than on one. Batches use every thread through pair parallelism instead.
  int64_t nchunks = 1;
  if (!serial) {
    nchunks = std::min<int64_t>({at::get_num_threads(), H / 4, H * W / 262144});
    nchunks = std::max<int64_t>(nchunks, 1);
  }
  if (nchunks == 1) {
    fn(0, 0, H);
    return;
  }
  at::parallel_for(0, nchunks, 1, [&](int64_t b, int64_t e) {
    for (int64_t c = b; c < e; ++c)
      fn(c, H * c / nchunks, H * (c + 1) / nchunks);
  });
}

// One pixel of the primal step given the divergences d1, d2 of p1, p2;
// returns its squared update.
inline float u_px(float gx, float gy, float rc, float& u1, float& u2, float d1,
                  float d2, float l_t, float theta, float geps) {
  const float grad = gx * gx + gy * gy;
  const float a = u1, b = u2;
  const float s =
      threshold_scale(residual_rho(rc, gx, gy, a, b), grad, l_t, geps);
  u1 = update_u(a + s * gx, theta, d1);
  u2 = update_u(b + s * gy, theta, d2);
  return (u1 - a) * (u1 - a) + (u2 - b) * (u2 - b);
}

#ifdef MVACCEL_X86_AVX2
bool cpu_has_avx2() {
  static const bool ok = __builtin_cpu_supports("avx2");
  return ok;
}

// u_row's first W - W % 8 pixels from x = 1 on, with AVX2 (GCC does not
// vectorize the plain loop); the same operations in the same order. Returns
// the first pixel not done and adds the squared updates to *err.
__attribute__((target("avx2"))) int u_row_avx2(
    int W, const float* wx, const float* wy, const float* rc, float* u1,
    float* u2, const float* p11, const float* p12, const float* p12u,
    const float* p21, const float* p22, const float* p22u, float l_t,
    float theta, float geps, float* err) {
  const __m256 vl = _mm256_set1_ps(l_t), vnl = _mm256_set1_ps(-l_t);
  const __m256 vth = _mm256_set1_ps(theta), vge = _mm256_set1_ps(geps);
  const __m256 one = _mm256_set1_ps(1.f), sign = _mm256_set1_ps(-0.f);
  __m256 acc = _mm256_setzero_ps();
  int x = 1;
  for (; x + 8 <= W; x += 8) {
    const __m256 gx = _mm256_loadu_ps(wx + x), gy = _mm256_loadu_ps(wy + x);
    const __m256 a = _mm256_loadu_ps(u1 + x), b = _mm256_loadu_ps(u2 + x);
    const __m256 grad =
        _mm256_add_ps(_mm256_mul_ps(gx, gx), _mm256_mul_ps(gy, gy));
    const __m256 rho = _mm256_add_ps(
        _mm256_add_ps(_mm256_loadu_ps(rc + x), _mm256_mul_ps(gx, a)),
        _mm256_mul_ps(gy, b));
    const __m256 lg = _mm256_mul_ps(vl, grad);
    const __m256 big = _mm256_cmp_ps(grad, vge, _CMP_GT_OQ);
    const __m256 den = _mm256_blendv_ps(one, grad, big);
    const __m256 fi =
        _mm256_and_ps(big, _mm256_div_ps(_mm256_xor_ps(rho, sign), den));
    __m256 sc = _mm256_blendv_ps(fi, vnl, _mm256_cmp_ps(rho, lg, _CMP_GT_OQ));
    sc = _mm256_blendv_ps(
        sc, vl, _mm256_cmp_ps(rho, _mm256_xor_ps(lg, sign), _CMP_LT_OQ));
    const __m256 d1 =
        _mm256_sub_ps(_mm256_add_ps(_mm256_sub_ps(_mm256_loadu_ps(p11 + x),
                                                  _mm256_loadu_ps(p11 + x - 1)),
                                    _mm256_loadu_ps(p12 + x)),
                      _mm256_loadu_ps(p12u + x));
    const __m256 d2 =
        _mm256_sub_ps(_mm256_add_ps(_mm256_sub_ps(_mm256_loadu_ps(p21 + x),
                                                  _mm256_loadu_ps(p21 + x - 1)),
                                    _mm256_loadu_ps(p22 + x)),
                      _mm256_loadu_ps(p22u + x));
    const __m256 n1 = _mm256_add_ps(_mm256_add_ps(a, _mm256_mul_ps(sc, gx)),
                                    _mm256_mul_ps(vth, d1));
    const __m256 n2 = _mm256_add_ps(_mm256_add_ps(b, _mm256_mul_ps(sc, gy)),
                                    _mm256_mul_ps(vth, d2));
    _mm256_storeu_ps(u1 + x, n1);
    _mm256_storeu_ps(u2 + x, n2);
    const __m256 e1 = _mm256_sub_ps(n1, a), e2 = _mm256_sub_ps(n2, b);
    acc = _mm256_add_ps(
        acc, _mm256_add_ps(_mm256_mul_ps(e1, e1), _mm256_mul_ps(e2, e2)));
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, acc);
  for (float v : lanes) *err += v;
  return x;
}
#endif

// Primal step of row y: u = v + theta * div p, with v from the threshold;
// p12u, p22u are the p rows above (zeros on the first row). Returns the row's
// sum of squared updates.
double u_row(int W, const float* __restrict wx, const float* __restrict wy,
             const float* __restrict rc, float* __restrict u1,
             float* __restrict u2, const float* __restrict p11,
             const float* __restrict p12, const float* __restrict p12u,
             const float* __restrict p21, const float* __restrict p22,
             const float* __restrict p22u, float l_t, float theta, float geps) {
  float err = u_px(wx[0], wy[0], rc[0], u1[0], u2[0], p11[0] + p12[0] - p12u[0],
                   p21[0] + p22[0] - p22u[0], l_t, theta, geps);
  int x0 = 1;
#ifdef MVACCEL_X86_AVX2
  if (cpu_has_avx2())
    x0 = u_row_avx2(W, wx, wy, rc, u1, u2, p11, p12, p12u, p21, p22, p22u, l_t,
                    theta, geps, &err);
#endif
  for (int x = x0; x < W; ++x) {
    const float d1 = p11[x] - p11[x - 1] + p12[x] - p12u[x];
    const float d2 = p21[x] - p21[x - 1] + p22[x] - p22u[x];
    err += u_px(wx[x], wy[x], rc[x], u1[x], u2[x], d1, d2, l_t, theta, geps);
  }
  return err;
}

inline void p_px(float u1x, float u1y, float u2x, float u2y, float& p11,
                 float& p12, float& p21, float& p22, float taut, float deps) {
  update_p(p11, p12, u1x, u1y, taut, deps);
  update_p(p21, p22, u2x, u2y, taut, deps);
}

#ifdef MVACCEL_X86_AVX2
// p_row with AVX2 intrinsics: with errno-setting sqrt (GCC's default) the
// plain loop does not vectorize. Same operations, in the same order, as
// update_p.
__attribute__((target("avx2"))) inline void p_upd8(__m256 ux, __m256 uy,
                                                   float* pa, float* pb,
                                                   __m256 vt, __m256 ve) {
  const __m256 sq = _mm256_add_ps(
      _mm256_add_ps(_mm256_mul_ps(ux, ux), _mm256_mul_ps(uy, uy)), ve);
  const __m256 ng =
      _mm256_add_ps(_mm256_set1_ps(1.f), _mm256_mul_ps(vt, _mm256_sqrt_ps(sq)));
  const __m256 a = _mm256_loadu_ps(pa), b = _mm256_loadu_ps(pb);
  _mm256_storeu_ps(pa,
                   _mm256_div_ps(_mm256_add_ps(a, _mm256_mul_ps(vt, ux)), ng));
  _mm256_storeu_ps(pb,
                   _mm256_div_ps(_mm256_add_ps(b, _mm256_mul_ps(vt, uy)), ng));
}

__attribute__((target("avx2"))) int p_row_avx2(
    int W, const float* u1, const float* u1d, const float* u2, const float* u2d,
    float* p11, float* p12, float* p21, float* p22, float taut, float deps) {
  const __m256 vt = _mm256_set1_ps(taut), ve = _mm256_set1_ps(deps);
  int x = 0;
  for (; x + 8 < W; x += 8) {
    const __m256 a = _mm256_loadu_ps(u1 + x), b = _mm256_loadu_ps(u2 + x);
    p_upd8(_mm256_sub_ps(_mm256_loadu_ps(u1 + x + 1), a),
           _mm256_sub_ps(_mm256_loadu_ps(u1d + x), a), p11 + x, p12 + x, vt,
           ve);
    p_upd8(_mm256_sub_ps(_mm256_loadu_ps(u2 + x + 1), b),
           _mm256_sub_ps(_mm256_loadu_ps(u2d + x), b), p21 + x, p22 + x, vt,
           ve);
  }
  return x;
}

#endif

// Dual step of row y from the new u on rows y and y+1 (u1d == u1 on the last
// row, which makes the y-differences 0).
void p_row(int W, const float* __restrict u1, const float* __restrict u1d,
           const float* __restrict u2, const float* __restrict u2d,
           float* __restrict p11, float* __restrict p12, float* __restrict p21,
           float* __restrict p22, float taut, float deps) {
  int x0 = 0;
#ifdef MVACCEL_X86_AVX2
  if (cpu_has_avx2())
    x0 = p_row_avx2(W, u1, u1d, u2, u2d, p11, p12, p21, p22, taut, deps);
#endif
  for (int x = x0; x < W - 1; ++x)
    p_px(u1[x + 1] - u1[x], u1d[x] - u1[x], u2[x + 1] - u2[x], u2d[x] - u2[x],
         p11[x], p12[x], p21[x], p22[x], taut, deps);
  const int x = W - 1;
  p_px(0.f, u1d[x] - u1[x], 0.f, u2d[x] - u2[x], p11[x], p12[x], p21[x], p22[x],
       taut, deps);
}

// 5x5 median with a replicated border of rows [y0, y1) into dst: the
// selection network runs on blocks of kLanes pixels so every step is a
// vectorizable loop.
MVACCEL_CLONES void median5_rows(const float* src, float* dst, int H, int W,
                                 int y0, int y1) {
  constexpr int kLanes = 64;
  float p[25][kLanes];
  for (int y = y0; y < y1; ++y) {
    for (int x0 = 0; x0 < W; x0 += kLanes) {
      const int n = std::min(kLanes, W - x0);
      for (int dy = 0; dy < 5; ++dy) {
        const int yy = std::min(std::max(y + dy - 2, 0), H - 1);
        const float* r = src + static_cast<int64_t>(yy) * W;
        for (int dx = 0; dx < 5; ++dx) {
          float* q = p[dy * 5 + dx];
          for (int l = 0; l < n; ++l) {
            const int xx = std::min(std::max(x0 + l + dx - 2, 0), W - 1);
            q[l] = r[xx];
          }
        }
      }
      for (int k = 0; k < kMedian25Steps; ++k) {
        float* a = p[kMedian25[k][1]];
        float* b = p[kMedian25[k][2]];
        switch (kMedian25[k][0]) {
          case 0:
            for (int l = 0; l < kLanes; ++l) {
              const float lo = std::min(a[l], b[l]);
              b[l] = std::max(a[l], b[l]);
              a[l] = lo;
            }
            break;
          case 1:
            for (int l = 0; l < kLanes; ++l) a[l] = std::min(a[l], b[l]);
            break;
          default:
            for (int l = 0; l < kLanes; ++l) b[l] = std::max(a[l], b[l]);
        }
      }
      std::copy(p[12], p[12] + n, dst + static_cast<int64_t>(y) * W + x0);
    }
  }
}

// cv::resize INTER_LINEAR of one plane with source/destination ratios
// (sy, sx), times `mul`.
void resize_plane(const float* src, int64_t hs, int64_t ws, float* dst,
                  int64_t hd, int64_t wd, double sy, double sx, float mul,
                  bool serial) {
  std::vector<int64_t> x0(wd), x1(wd);
  std::vector<float> fx(wd);
  for (int64_t d = 0; d < wd; ++d) {
    double f;
    linear_taps<double, int64_t>(d, ws, sx, x0[d], x1[d], f);
    fx[d] = static_cast<float>(f);
  }
  for_chunks(hd, wd, serial, [&](int64_t, int64_t y0, int64_t y1) {
    for (int64_t y = y0; y < y1; ++y) {
      int64_t r0, r1;
      double fyd;
      linear_taps<double, int64_t>(y, hs, sy, r0, r1, fyd);
      const float fy = static_cast<float>(fyd);
      const float* a = src + r0 * ws;
      const float* b = src + r1 * ws;
      float* o = dst + y * wd;
      for (int64_t x = 0; x < wd; ++x) {
        const float top = a[x0[x]] * (1.f - fx[x]) + a[x1[x]] * fx[x];
        const float bot = b[x0[x]] * (1.f - fx[x]) + b[x1[x]] * fx[x];
        o[x] = (top * (1.f - fy) + bot * fy) * mul;
      }
    }
  });
}

// Solves one pair. Buffers are reused across levels (sized for the finest).
class PairSolver {
 public:
  PairSolver(const Config& c, int64_t H, int64_t W, bool serial)
      : c_(c), serial_(serial), sizes_(pyramid_sizes(H, W, c)) {
    const size_t n = static_cast<size_t>(H * W);
    for (Plane* b : {&I1x_, &I1y_, &wx_, &wy_, &rc_, &p11_, &p12_, &p21_, &p22_,
                     &u1_, &u2_, &tmp_})
      b->resize(n);
    zero_.assign(static_cast<size_t>(W), 0.f);
    I0s_.resize(sizes_.size());
    I1s_.resize(sizes_.size());
  }

  void solve(const float* I0, const float* I1, const float* init, float* out) {
    const int64_t L = static_cast<int64_t>(sizes_.size());
    const double inv = 1.0 / c_.scale_step;
    const auto [H, W] = sizes_[0];
    I0s_[0].assign(I0, I0 + H * W);
    I1s_[0].assign(I1, I1 + H * W);
    for (int64_t l = 1; l < L; ++l) {
      const auto [h, w] = sizes_[l];
      const auto [hp, wp] = sizes_[l - 1];
      I0s_[l].resize(h * w);
      I1s_[l].resize(h * w);
      resize_plane(I0s_[l - 1].data(), hp, wp, I0s_[l].data(), h, w, inv, inv,
                   1.f, serial_);
      resize_plane(I1s_[l - 1].data(), hp, wp, I1s_[l].data(), h, w, inv, inv,
                   1.f, serial_);
    }
    // Initial flow at the coarsest level.
    {
      const auto [hc, wc] = sizes_[L - 1];
      if (init == nullptr) {
        std::fill(u1_.begin(), u1_.begin() + hc * wc, 0.f);
        std::fill(u2_.begin(), u2_.begin() + hc * wc, 0.f);
      } else {
        for (int k = 0; k < 2; ++k) {
          Plane cur(init + k * H * W, init + (k + 1) * H * W), nxt;
          for (int64_t l = 1; l < L; ++l) {
            const auto [h, w] = sizes_[l];
            const auto [hp, wp] = sizes_[l - 1];
            nxt.resize(h * w);
            resize_plane(cur.data(), hp, wp, nxt.data(), h, w, inv, inv,
                         static_cast<float>(c_.scale_step), serial_);
            cur.swap(nxt);
          }
          std::copy(cur.begin(), cur.end(), (k == 0 ? u1_ : u2_).begin());
        }
      }
    }
    for (int64_t l = L - 1; l >= 0; --l) {
      level(l);
      if (l == 0) break;
      const auto [h, w] = sizes_[l];
      const auto [hn, wn] = sizes_[l - 1];
      const float mul = static_cast<float>(inv);
      const double sy = static_cast<double>(h) / hn;
      const double sx = static_cast<double>(w) / wn;
      resize_plane(u1_.data(), h, w, tmp_.data(), hn, wn, sy, sx, mul, serial_);
      u1_.swap(tmp_);
      resize_plane(u2_.data(), h, w, tmp_.data(), hn, wn, sy, sx, mul, serial_);
      u2_.swap(tmp_);
    }
    std::copy(u1_.begin(), u1_.begin() + H * W, out);
    std::copy(u2_.begin(), u2_.begin() + H * W, out + H * W);
  }

 private:
  void level(int64_t l) {
    const auto [H, W] = sizes_[l];
    const float* I0 = I0s_[l].data();
    const float* I1 = I1s_[l].data();
    const int64_t n = H * W;
    for_chunks(H, W, serial_, [&](int64_t, int64_t y0, int64_t y1) {
      for (int64_t y = y0; y < y1; ++y)
        for (int64_t x = 0; x < W; ++x)
          centred_grad(I1, W, y, x, H, W, I1x_[y * W + x], I1y_[y * W + x]);
    });
    for (Plane* p : {&p11_, &p12_, &p21_, &p22_})
      std::fill(p->begin(), p->begin() + n, 0.f);
    const double scaled_eps = c_.epsilon * c_.epsilon * static_cast<double>(n);
    const bool stopping = c_.epsilon > 0;
    for (int64_t wi = 0; wi < c_.warps; ++wi) {
      warp(H, W, I0, I1);
      double err = std::numeric_limits<double>::infinity();
      double prev = 0;
      int64_t it = 0;
      for (int64_t o = 0; o < c_.outer && err > scaled_eps; ++o) {
        if (c_.median == 5) {
          median(u1_, H, W);
          median(u2_, H, W);
        }
        for (int64_t i = 0; i < c_.inner && err > scaled_eps; ++i, ++it) {
          const double e = iterate(H, W);
          if (!stopping) continue;
          if (c_.stop_check == kStopEvery) {
            err = e;
          } else if ((it & 1) && prev < scaled_eps) {
            err = prev = e;
          } else {
            err = std::numeric_limits<double>::infinity();
            prev -= scaled_eps;
          }
        }
      }
    }
  }

  void warp(int64_t H, int64_t W, const float* I0, const float* I1) {
    const int mode = static_cast<int>(c_.warp);
    for_chunks(H, W, serial_, [&](int64_t, int64_t y0, int64_t y1) {
      for (int64_t y = y0; y < y1; ++y) {
        for (int64_t x = 0; x < W; ++x) {
          const int64_t i = y * W + x;
          const float a = u1_[i], b = u2_[i];
          float w, gx, gy;
          warp_sample3<float, int64_t>(
              I1, I1x_.data(), I1y_.data(), W, H, W, static_cast<float>(x) + a,
              static_cast<float>(y) + b, mode, w, gx, gy);
          wx_[i] = gx;
          wy_[i] = gy;
          rc_[i] = residual_rho_c(w, gx, gy, a, b, I0[i]);
        }
      }
    });
  }

  void median(Plane& u, int64_t H, int64_t W) {
    for_chunks(H, W, serial_, [&](int64_t, int64_t y0, int64_t y1) {
      median5_rows(u.data(), tmp_.data(), static_cast<int>(H),
                   static_cast<int>(W), static_cast<int>(y0),
                   static_cast<int>(y1));
    });
    std::copy(tmp_.begin(), tmp_.begin() + H * W, u.begin());
  }

  // One fused inner iteration; returns the sum of squared updates of u.
  double iterate(int64_t H, int64_t W) {
    const float l_t = c_.l_t(), taut = c_.taut();
    const float theta = static_cast<float>(c_.theta);
    const float geps = static_cast<float>(c_.grad_eps);
    const float deps = static_cast<float>(c_.dual_eps);
    const int w = static_cast<int>(W);
    float* u1 = u1_.data();
    float* u2 = u2_.data();
    float* p11 = p11_.data();
    float* p12 = p12_.data();
    float* p21 = p21_.data();
    float* p22 = p22_.data();
    auto prow = [&](int64_t y) {
      const int64_t d = y + 1 < H ? (y + 1) * W : y * W;
      p_row(w, u1 + y * W, u1 + d, u2 + y * W, u2 + d, p11 + y * W, p12 + y * W,
            p21 + y * W, p22 + y * W, taut, deps);
    };
    std::vector<double> errs(static_cast<size_t>(at::get_num_threads()) + 1,
                             0.0);
    std::vector<int64_t> ends(errs.size(), -1);
    for_chunks(H, W, serial_, [&](int64_t c, int64_t y0, int64_t y1) {
      double e = 0;
      for (int64_t y = y0; y < y1; ++y) {
        const float* up12 = y > 0 ? p12 + (y - 1) * W : zero_.data();
        const float* up22 = y > 0 ? p22 + (y - 1) * W : zero_.data();
        e +=
            u_row(w, wx_.data() + y * W, wy_.data() + y * W, rc_.data() + y * W,
                  u1 + y * W, u2 + y * W, p11 + y * W, p12 + y * W, up12,
                  p21 + y * W, p22 + y * W, up22, l_t, theta, geps);
        if (y > y0) prow(y - 1);
      }
      errs[c] = e;
      ends[c] = y1 - 1;
    });
    double err = 0;
    for (size_t c = 0; c < errs.size(); ++c) {
      err += errs[c];
      if (ends[c] >= 0) prow(ends[c]);
    }
    return err;
  }

  const Config c_;
  const bool serial_;
  const std::vector<std::pair<int64_t, int64_t>> sizes_;
  std::vector<Plane> I0s_, I1s_;
  Plane I1x_, I1y_, wx_, wy_, rc_, p11_, p12_, p21_, p22_, u1_, u2_, tmp_;
  Plane zero_;
};

at::Tensor tvl1_flow_cpu(const at::Tensor& I0_, const at::Tensor& I1_,
                         const c10::optional<at::Tensor>& init_, double tau,
                         double lambda, double theta, int64_t nscales,
                         double scale_step, int64_t warps, double epsilon,
                         int64_t inner, int64_t outer, int64_t median,
                         int64_t warp, int64_t stop_check, int64_t min_size,
                         double dual_eps, double grad_eps) {
  const Config c = check_tvl1_flow(
      I0_, I1_, init_, tau, lambda, theta, nscales, scale_step, warps, epsilon,
      inner, outer, median, warp, stop_check, min_size, dual_eps, grad_eps);
  const at::Tensor I0 = I0_.contiguous(), I1 = I1_.contiguous();
  at::Tensor init;
  if (init_.has_value()) init = init_->contiguous();
  const int64_t N = I0.size(0), H = I0.size(1), W = I0.size(2);
  at::Tensor out = at::empty({N, 2, H, W}, I0.options());
  if (N == 0) return out;
  const float* i0 = I0.const_data_ptr<float>();
  const float* i1 = I1.const_data_ptr<float>();
  const float* fi = init.defined() ? init.const_data_ptr<float>() : nullptr;
  float* o = out.mutable_data_ptr<float>();
  const int64_t hw = H * W;
  if (N > 1 && N >= at::get_num_threads()) {
    at::parallel_for(0, N, 1, [&](int64_t b, int64_t e) {
      PairSolver s(c, H, W, /*serial=*/true);
      for (int64_t n = b; n < e; ++n)
        s.solve(i0 + n * hw, i1 + n * hw, fi ? fi + n * 2 * hw : nullptr,
                o + n * 2 * hw);
    });
  } else {
    PairSolver s(c, H, W, /*serial=*/false);
    for (int64_t n = 0; n < N; ++n)
      s.solve(i0 + n * hw, i1 + n * hw, fi ? fi + n * 2 * hw : nullptr,
              o + n * 2 * hw);
  }
  return out;
}

}  // namespace
}  // namespace tvl1
}  // namespace mvaccel

TORCH_LIBRARY_IMPL(mvaccel, CPU, m) {
  m.impl("tvl1_flow", &mvaccel::tvl1::tvl1_flow_cpu);
}
