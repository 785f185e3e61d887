// CPU kernels of block_upsample, mv_resize and their backward ops.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "resample_checks.h"

namespace mvaccel {
namespace resample {
namespace {

// Per-column source offsets and weights, computed once per call and shared
// by every row.
template <typename acc_t>
struct Columns {
  std::vector<int64_t> off0, off1;  // input offsets (index * stride)
  std::vector<acc_t> w1;
  Columns(const AxisMap<acc_t>& ax, int64_t stride)
      : off0(ax.out), off1(ax.out), w1(ax.out) {
    for (int64_t d = 0; d < ax.out; ++d) {
      int64_t i0, i1;
      ax.src(d, i0, i1, w1[d]);
      off0[d] = i0 * stride;
      off1[d] = i1 * stride;
    }
  }
};

template <typename scalar_t>
void forward_kernel(const at::Tensor& x, at::Tensor& out, const Plan& p) {
  using acc_t = at::opmath_type<scalar_t>;
  const auto ay = p.axis_y<acc_t>();
  const auto ax = p.axis_x<acc_t>();
  const int64_t C = out.size(1), H = out.size(2), W = out.size(3);
  const int64_t xs0 = x.stride(0), xs1 = x.stride(1), xs2 = x.stride(2),
                xs3 = x.stride(3);
  const int64_t os0 = out.stride(0), os1 = out.stride(1), os2 = out.stride(2),
                os3 = out.stride(3);
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  scalar_t* op = out.mutable_data_ptr<scalar_t>();
  const Columns<acc_t> cols(ax, xs3);
  const bool linear = p.mode == kLinear;
  // Codec fast path: each input value fills a run of `block_w` pixels.
  const bool runs = p.mode == kNearestBlock && os3 == 1;
  const int64_t rows = out.size(0) * C * H;
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(W, 1));

  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    // Bilinear: each input row is interpolated along x once into a cached
    // row and shared by every output row that reads it (about 2 * block_h of
    // them), so an output row is one vectorisable blend of two cached rows.
    std::vector<acc_t> cache(linear ? 2 * W : 0);
    int64_t cached[2] = {-1, -1};
    auto hrow = [&](int64_t key, const scalar_t* src,
                    int64_t keep) -> const acc_t* {
      for (int s = 0; s < 2; ++s) {
        if (cached[s] == key) return cache.data() + s * W;
      }
      const int s = cached[0] == keep ? 1 : 0;
      acc_t* dst = cache.data() + s * W;
      for (int64_t ox = 0; ox < W; ++ox) {
        const acc_t wx1 = cols.w1[ox];
        dst[ox] = (acc_t(1) - wx1) * static_cast<acc_t>(src[cols.off0[ox]]) +
                  wx1 * static_cast<acc_t>(src[cols.off1[ox]]);
      }
      cached[s] = key;
      return dst;
    };
    for (int64_t r = begin; r < end; ++r) {
      const int64_t oy = r % H;
      const int64_t c = (r / H) % C;
      const int64_t n = r / (H * C);
      const acc_t f = channel_factor<acc_t>(p, c);
      int64_t iy0, iy1;
      acc_t wy1;
      ay.src(oy, iy0, iy1, wy1);
      const scalar_t* r0 = xp + n * xs0 + c * xs1 + iy0 * xs2;
      const scalar_t* r1 = xp + n * xs0 + c * xs1 + iy1 * xs2;
      scalar_t* o = op + n * os0 + c * os1 + oy * os2;
      if (runs) {
        const int64_t bw = p.block_w;
        for (int64_t ix = 0; ix < p.in_w; ++ix) {
          const scalar_t v =
              static_cast<scalar_t>(static_cast<acc_t>(r0[ix * xs3]) * f);
          const int64_t lo = ix * bw;
          const int64_t hi = std::min(lo + bw, W);
          std::fill(o + lo, o + hi, v);
        }
      } else if (!linear) {
        for (int64_t ox = 0; ox < W; ++ox) {
          o[ox * os3] =
              static_cast<scalar_t>(static_cast<acc_t>(r0[cols.off0[ox]]) * f);
        }
      } else {
        const int64_t plane = (n * C + c) * p.in_h;
        const int64_t k0 = plane + iy0, k1 = plane + iy1;
        const acc_t* top = hrow(k0, r0, k1);
        const acc_t* bot = hrow(k1, r1, k0);
        const acc_t wy0 = (acc_t(1) - wy1) * f;
        const acc_t wy1f = wy1 * f;
        if (os3 == 1) {
#pragma omp simd
          for (int64_t ox = 0; ox < W; ++ox) {
            o[ox] = static_cast<scalar_t>(wy0 * top[ox] + wy1f * bot[ox]);
          }
        } else {
          for (int64_t ox = 0; ox < W; ++ox) {
            o[ox * os3] = static_cast<scalar_t>(wy0 * top[ox] + wy1f * bot[ox]);
          }
        }
      }
    }
  });
}

template <typename scalar_t>
void backward_kernel(const at::Tensor& grad, at::Tensor& gin, const Plan& p) {
  using acc_t = at::opmath_type<scalar_t>;
  const auto ay = p.axis_y<acc_t>();
  const auto ax = p.axis_x<acc_t>();
  const int64_t C = gin.size(1), Hin = p.in_h, Win = p.in_w;
  const int64_t gs0 = grad.stride(0), gs1 = grad.stride(1),
                gs2 = grad.stride(2), gs3 = grad.stride(3);
  const scalar_t* gp = grad.const_data_ptr<scalar_t>();
  scalar_t* ip = gin.mutable_data_ptr<scalar_t>();  // contiguous
  // Output ranges and weights of every input column, shared by all rows.
  std::vector<int64_t> xlo(Win), xhi(Win);
  for (int64_t ix = 0; ix < Win; ++ix) ax.dst_range(ix, xlo[ix], xhi[ix]);
  const Columns<acc_t> cols(ax, 1);
  const int64_t rows = gin.size(0) * C * Hin;

  at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t iy = r % Hin;
      const int64_t c = (r / Hin) % C;
      const int64_t n = r / (Hin * C);
      const acc_t f = channel_factor<acc_t>(p, c);
      int64_t ylo, yhi;
      ay.dst_range(iy, ylo, yhi);
      const scalar_t* g = gp + n * gs0 + c * gs1;
      scalar_t* o = ip + r * Win;
      for (int64_t ix = 0; ix < Win; ++ix) {
        acc_t sum = acc_t(0);
        for (int64_t oy = ylo; oy < yhi; ++oy) {
          const acc_t wy = ay.weight(oy, iy);
          const scalar_t* grow = g + oy * gs2;
          acc_t rs = acc_t(0);
          for (int64_t ox = xlo[ix]; ox < xhi[ix]; ++ox) {
            acc_t w = acc_t(0);
            if (cols.off0[ox] == ix) w += acc_t(1) - cols.w1[ox];
            if (cols.off1[ox] == ix) w += cols.w1[ox];
            rs += w * static_cast<acc_t>(grow[ox * gs3]);
          }
          sum += wy * rs;
        }
        o[ix] = static_cast<scalar_t>(sum * f);
      }
    }
  });
}

at::Tensor run_forward(const at::Tensor& x, const Plan& p) {
  at::Tensor out = empty_like_format(x, x.size(0), x.size(1), p.out_h, p.out_w);
  if (out.numel() == 0) return out;
  MVACCEL_DISPATCH_FLOATING(x.scalar_type(), "mvaccel_resample_cpu",
                            [&] { forward_kernel<scalar_t>(x, out, p); });
  return out;
}

at::Tensor run_backward(const at::Tensor& grad, const Plan& p) {
  at::Tensor gin =
      at::empty({grad.size(0), grad.size(1), p.in_h, p.in_w}, grad.options());
  if (gin.numel() == 0) return gin;
  MVACCEL_DISPATCH_FLOATING(grad.scalar_type(), "mvaccel_resample_bwd_cpu",
                            [&] { backward_kernel<scalar_t>(grad, gin, p); });
  return gin;
}

at::Tensor block_upsample_cpu(const at::Tensor& x, int64_t block_h,
                              int64_t block_w, int64_t out_h, int64_t out_w,
                              c10::string_view mode) {
  const Plan p = check_block_upsample(x, block_h, block_w, out_h, out_w,
                                      std::string(mode));
  return run_forward(x, p);
}

at::Tensor block_upsample_backward_cpu(const at::Tensor& grad, int64_t in_h,
                                       int64_t in_w, int64_t block_h,
                                       int64_t block_w, c10::string_view mode) {
  const Plan p = check_block_upsample_backward(grad, in_h, in_w, block_h,
                                               block_w, std::string(mode));
  return run_backward(grad, p);
}

at::Tensor mv_resize_cpu(const at::Tensor& mv, int64_t out_h, int64_t out_w,
                         c10::string_view mode) {
  const Plan p = check_mv_resize(mv, out_h, out_w, std::string(mode));
  return run_forward(mv, p);
}

at::Tensor mv_resize_backward_cpu(const at::Tensor& grad, int64_t in_h,
                                  int64_t in_w, c10::string_view mode) {
  const Plan p = check_mv_resize_backward(grad, in_h, in_w, std::string(mode));
  return run_backward(grad, p);
}

}  // namespace
}  // namespace resample

TORCH_LIBRARY_IMPL(mvaccel, CPU, m) {
  m.impl("block_upsample", &resample::block_upsample_cpu);
  m.impl("_block_upsample_backward", &resample::block_upsample_backward_cpu);
  m.impl("mv_resize", &resample::mv_resize_cpu);
  m.impl("_mv_resize_backward", &resample::mv_resize_backward_cpu);
}

}  // namespace mvaccel
