// CPU kernels of off_gradients, off_gradients_stack and their backward ops.
//
// Tasks are ranges of image rows. The interior of a row is a `#pragma omp
// simd` loop over three input rows (the rows outside the image are a shared
// zero row) with no bounds tests, so it vectorises; the two edge columns
// read the missing neighbours as 0. Both use the Sobel formulas of off.h.
// channels_last calls run over pixel rows; the inner `#pragma omp simd` loop
// runs over the channels (unit stride) of a pixel and of its neighbours (a
// zero vector outside the image).
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>
#include <vector>

#include "off_checks.h"

namespace mvaccel {
namespace off {
namespace {

int64_t row_grain(int64_t W) {
  return std::max<int64_t>(1, 8192 / std::max<int64_t>(W, 1));
}

// Walks rows [begin, end) of a grid of planes of H rows: fn_plane(plane) on
// entering a plane (the division by H and the plane's index arithmetic once
// per plane, not per row), then fn_row(y) for each of its rows in range.
template <typename FP, typename FR>
void walk_rows(int64_t begin, int64_t end, int64_t H, const FP& fn_plane,
               const FR& fn_row) {
  int64_t plane = begin / H, y = begin % H;
  fn_plane(plane);
  for (int64_t r = begin; r < end; ++r, ++y) {
    if (y == H) {
      y = 0;
      fn_plane(++plane);
    }
    fn_row(y);
  }
}

// Value of row[i], 0 outside [0, W).
template <typename acc_t, typename scalar_t>
inline acc_t col_or_zero(const scalar_t* row, int64_t W, int64_t i) {
  return i >= 0 && i < W ? static_cast<acc_t>(row[i]) : acc_t(0);
}

// One output row: Sobel x / y from the rows above (rm), at (r0) and below
// (rp) the pixel (a zero row outside the image), and the difference with
// the previous frame's row pr.
template <typename scalar_t>
void forward_row(const scalar_t* rm, const scalar_t* r0, const scalar_t* rp,
                 const scalar_t* pr, scalar_t* ox, scalar_t* oy, scalar_t* ot,
                 int64_t W) {
  using acc_t = at::opmath_type<scalar_t>;
  // Interior: no bounds tests, vectorised.
#pragma omp simd
  for (int64_t x = 1; x < W - 1; ++x) {
    ox[x] = static_cast<scalar_t>(sobel_x_of<acc_t>(
        rm[x - 1], rm[x + 1], r0[x - 1], r0[x + 1], rp[x - 1], rp[x + 1]));
    oy[x] = static_cast<scalar_t>(sobel_y_of<acc_t>(
        rm[x - 1], rm[x], rm[x + 1], rp[x - 1], rp[x], rp[x + 1]));
    ot[x] = static_cast<scalar_t>(static_cast<acc_t>(r0[x]) -
                                  static_cast<acc_t>(pr[x]));
  }
  for (int64_t x : {int64_t(0), W - 1}) {
    auto v = [&](const scalar_t* row, int64_t i) {
      return col_or_zero<acc_t>(row, W, i);
    };
    ox[x] = static_cast<scalar_t>(
        sobel_x_of<acc_t>(v(rm, x - 1), v(rm, x + 1), v(r0, x - 1),
                          v(r0, x + 1), v(rp, x - 1), v(rp, x + 1)));
    oy[x] = static_cast<scalar_t>(sobel_y_of<acc_t>(v(rm, x - 1), v(rm, x),
                                                    v(rm, x + 1), v(rp, x - 1),
                                                    v(rp, x), v(rp, x + 1)));
    ot[x] = static_cast<scalar_t>(static_cast<acc_t>(r0[x]) -
                                  static_cast<acc_t>(pr[x]));
    if (W == 1) break;
  }
}

template <typename scalar_t>
void forward_kernel(const scalar_t* cur0, const scalar_t* prev0, scalar_t* out,
                    const Plan& p) {
  const int64_t B = p.B, S = p.S, C = p.C, H = p.H, W = p.W;
  const int64_t HW = H * W;
  const int64_t rows = B * S * C * H;
  const std::vector<scalar_t> zero_row(W, scalar_t(0));
  const scalar_t* zero = zero_row.data();

  at::parallel_for(0, rows, row_grain(W), [&](int64_t begin, int64_t end) {
    const scalar_t *cur = nullptr, *prev = nullptr;
    scalar_t* o = nullptr;
    walk_rows(
        begin, end, H,
        [&](int64_t plane) {
          const int64_t c = plane % C, bs = plane / C;
          const int64_t s = bs % S, b = bs / S;
          cur = cur0 + b * p.cur.sb + s * p.cur.ss + c * p.cur.sc;
          prev = prev0 + b * p.prev.sb + s * p.prev.ss + c * p.prev.sc;
          o = out + (bs * 3 * C + c) * HW;
        },
        [&](int64_t y) {
          const scalar_t* r0 = cur + y * p.cur.sh;
          scalar_t* ox = o + y * W;
          forward_row<scalar_t>(y > 0 ? r0 - p.cur.sh : zero, r0,
                                y < H - 1 ? r0 + p.cur.sh : zero,
                                prev + y * p.prev.sh, ox, ox + C * HW,
                                ox + 2 * C * HW, W);
        });
  });
}

// One row of the gradient of a frame: kCur when the frame is the current
// frame of a pair (gradient rows of Fx: xm, x0, xp, of Fy: ym, yp (zero rows
// outside), of Ft: gt), kPrev when it is the previous frame of a pair
// (gradient row of Ft: gn). See frame_grad in off.h.
template <typename scalar_t, bool kCur, bool kPrev>
void backward_row(const scalar_t* xm, const scalar_t* x0, const scalar_t* xp,
                  const scalar_t* ym, const scalar_t* yp, const scalar_t* gt,
                  const scalar_t* gn, scalar_t* o, int64_t W) {
  using acc_t = at::opmath_type<scalar_t>;
#pragma omp simd
  for (int64_t x = 1; x < W - 1; ++x) {
    acc_t a = acc_t(0);
    if (kCur) {
      a = static_cast<acc_t>(gt[x]) -
          sobel_x_of<acc_t>(xm[x - 1], xm[x + 1], x0[x - 1], x0[x + 1],
                            xp[x - 1], xp[x + 1]) -
          sobel_y_of<acc_t>(ym[x - 1], ym[x], ym[x + 1], yp[x - 1], yp[x],
                            yp[x + 1]);
    }
    if (kPrev) a -= static_cast<acc_t>(gn[x]);
    o[x] = static_cast<scalar_t>(a);
  }
  for (int64_t x : {int64_t(0), W - 1}) {
    auto v = [&](const scalar_t* row, int64_t i) {
      return col_or_zero<acc_t>(row, W, i);
    };
    acc_t a = acc_t(0);
    if (kCur) {
      a = static_cast<acc_t>(gt[x]) -
          sobel_x_of<acc_t>(v(xm, x - 1), v(xm, x + 1), v(x0, x - 1),
                            v(x0, x + 1), v(xp, x - 1), v(xp, x + 1)) -
          sobel_y_of<acc_t>(v(ym, x - 1), v(ym, x), v(ym, x + 1), v(yp, x - 1),
                            v(yp, x), v(yp, x + 1));
    }
    if (kPrev) a -= static_cast<acc_t>(gn[x]);
    o[x] = static_cast<scalar_t>(a);
    if (W == 1) break;
  }
}

// Gradient of every frame of the (B, S + 1) frame grid from the output
// gradient g, view gv (see frame_grad in off.h).
template <typename scalar_t>
void backward_kernel(const scalar_t* g, const View& gv, const Plan& p,
                     const FrameOut<scalar_t>& fo) {
  const int64_t B = p.B, S = p.S, C = p.C, H = p.H, W = p.W;
  const int64_t T = S + 1;
  const int64_t rows = B * T * C * H;
  const std::vector<scalar_t> zero_row(W, scalar_t(0));
  const scalar_t* zero = zero_row.data();

  at::parallel_for(0, rows, row_grain(W), [&](int64_t begin, int64_t end) {
    // Planes of the current plane's frame: gradients of Fx, Fy, Ft of pair
    // t - 1 (gx, gy, gt; null for t = 0), of Ft of pair t (gn; null for
    // t = S), and the output plane o.
    const scalar_t *gx = nullptr, *gy = nullptr, *gt = nullptr, *gn = nullptr;
    scalar_t* o = nullptr;
    walk_rows(
        begin, end, H,
        [&](int64_t plane) {
          const int64_t c = plane % C, bt = plane / C;
          const int64_t t = bt % T, b = bt / T;
          gx = gy = gt = gn = nullptr;
          if (t >= 1) {  // frame t is the current frame of pair t - 1
            gx = g + b * gv.sb + (t - 1) * gv.ss + c * gv.sc;
            gy = gx + C * gv.sc;
            gt = gy + C * gv.sc;
          }
          if (t <= S - 1) {  // frame t is the previous frame of pair t
            gn = g + b * gv.sb + t * gv.ss + (2 * C + c) * gv.sc;
          }
          o = fo.frame(b, t) + c * H * W;
        },
        [&](int64_t y) {
          const int64_t sh = gv.sh, off = y * sh;
          scalar_t* orow = o + y * W;
          if (gx == nullptr) {
            backward_row<scalar_t, false, true>(zero, zero, zero, zero, zero,
                                                zero, gn + off, orow, W);
            return;
          }
          const scalar_t* x0 = gx + off;
          const scalar_t* y0 = gy + off;
          const scalar_t* xm = y > 0 ? x0 - sh : zero;
          const scalar_t* xp = y < H - 1 ? x0 + sh : zero;
          const scalar_t* ym = y > 0 ? y0 - sh : zero;
          const scalar_t* yp = y < H - 1 ? y0 + sh : zero;
          if (gn == nullptr) {
            backward_row<scalar_t, true, false>(xm, x0, xp, ym, yp, gt + off,
                                                zero, orow, W);
          } else {
            backward_row<scalar_t, true, true>(xm, x0, xp, ym, yp, gt + off,
                                               gn + off, orow, W);
          }
        });
  });
}

// A pixel's neighbourhood in a channels_last frame: pointers to channel 0 of
// the 3x3 pixels around (y, x) (row-major, centre at [4]), the zero vector
// for the pixels outside the image.
template <typename scalar_t>
struct Neighbours {
  const scalar_t* px[9];
  Neighbours(const scalar_t* frame, int64_t sh, int64_t sw, int64_t H,
             int64_t W, int64_t y, int64_t x, const scalar_t* zero) {
    for (int dy = -1; dy <= 1; ++dy) {
      for (int dx = -1; dx <= 1; ++dx) {
        const int64_t yy = y + dy, xx = x + dx;
        px[(dy + 1) * 3 + dx + 1] = yy >= 0 && yy < H && xx >= 0 && xx < W
                                        ? frame + yy * sh + xx * sw
                                        : zero;
      }
    }
  }
};

// One channels_last output pixel: Fx at o[c], Fy at o[C + c], Ft at
// o[2C + c] for the C channels.
template <typename scalar_t>
void forward_pixel_cl(const Neighbours<scalar_t>& n, const scalar_t* pr,
                      scalar_t* o, int64_t C) {
  using acc_t = at::opmath_type<scalar_t>;
  const scalar_t *m0 = n.px[0], *m1 = n.px[1], *m2 = n.px[2], *c0 = n.px[3],
                 *c1 = n.px[4], *c2 = n.px[5], *p0 = n.px[6], *p1 = n.px[7],
                 *p2 = n.px[8];
  scalar_t *ox = o, *oy = o + C, *ot = o + 2 * C;
#pragma omp simd
  for (int64_t c = 0; c < C; ++c) {
    ox[c] = static_cast<scalar_t>(
        sobel_x_of<acc_t>(m0[c], m2[c], c0[c], c2[c], p0[c], p2[c]));
    oy[c] = static_cast<scalar_t>(
        sobel_y_of<acc_t>(m0[c], m1[c], m2[c], p0[c], p1[c], p2[c]));
    ot[c] = static_cast<scalar_t>(static_cast<acc_t>(c1[c]) -
                                  static_cast<acc_t>(pr[c]));
  }
}

// channels_last forward (see off_kernels.cuh forward_cl_kernel: the same
// arguments and output layout). Tasks are pixel rows of the (B, S) pairs.
template <typename scalar_t>
void forward_cl_kernel(const scalar_t* cur0, const scalar_t* prev0,
                       scalar_t* out, const Plan& p, int64_t cur_sw,
                       int64_t prev_sw) {
  const int64_t S = p.S, C = p.C, H = p.H, W = p.W;
  const std::vector<scalar_t> zero_vec(C, scalar_t(0));
  const scalar_t* zero = zero_vec.data();
  at::parallel_for(
      0, p.B * S * H, row_grain(W * C), [&](int64_t begin, int64_t end) {
        for (int64_t r = begin; r < end; ++r) {
          const int64_t y = r % H, bs = r / H;
          const int64_t s = bs % S, b = bs / S;
          const scalar_t* cur = cur0 + b * p.cur.sb + s * p.cur.ss;
          const scalar_t* prev =
              prev0 + b * p.prev.sb + s * p.prev.ss + y * p.prev.sh;
          scalar_t* o = out + (bs * H + y) * W * 3 * C;
          for (int64_t x = 0; x < W; ++x) {
            const Neighbours<scalar_t> n(cur, p.cur.sh, cur_sw, H, W, y, x,
                                         zero);
            forward_pixel_cl<scalar_t>(n, prev + x * prev_sw, o + x * 3 * C, C);
          }
        }
      });
}

// One channels_last pixel of a frame gradient (the C channels at o): kCur
// with the neighbourhoods nx / ny of the pair t - 1 gradients of Fx / Fy and
// its Ft gradient gt, kPrev with the pair t gradient of Ft gn.
template <typename scalar_t, bool kCur, bool kPrev>
void backward_pixel_cl(const Neighbours<scalar_t>& nx,
                       const Neighbours<scalar_t>& ny, const scalar_t* gt,
                       const scalar_t* gn, scalar_t* o, int64_t C) {
  using acc_t = at::opmath_type<scalar_t>;
  const scalar_t *xm0 = nx.px[0], *xm2 = nx.px[2], *xc0 = nx.px[3],
                 *xc2 = nx.px[5], *xp0 = nx.px[6], *xp2 = nx.px[8];
  const scalar_t *ym0 = ny.px[0], *ym1 = ny.px[1], *ym2 = ny.px[2],
                 *yp0 = ny.px[6], *yp1 = ny.px[7], *yp2 = ny.px[8];
#pragma omp simd
  for (int64_t c = 0; c < C; ++c) {
    acc_t a = acc_t(0);
    if (kCur) {
      a = static_cast<acc_t>(gt[c]) -
          sobel_x_of<acc_t>(xm0[c], xm2[c], xc0[c], xc2[c], xp0[c], xp2[c]) -
          sobel_y_of<acc_t>(ym0[c], ym1[c], ym2[c], yp0[c], yp1[c], yp2[c]);
    }
    if (kPrev) a -= static_cast<acc_t>(gn[c]);
    o[c] = static_cast<scalar_t>(a);
  }
}

// channels_last backward (see off_kernels.cuh backward_cl_kernel). Tasks
// are pixel rows of the (B, S + 1) frames.
template <typename scalar_t>
void backward_cl_kernel(const scalar_t* g, const View& gv, int64_t g_sw,
                        const Plan& p, const FrameOut<scalar_t>& fo) {
  const int64_t S = p.S, C = p.C, H = p.H, W = p.W, T = S + 1;
  const std::vector<scalar_t> zero_vec(C, scalar_t(0));
  const scalar_t* zero = zero_vec.data();
  at::parallel_for(
      0, p.B * T * H, row_grain(W * C), [&](int64_t begin, int64_t end) {
        for (int64_t r = begin; r < end; ++r) {
          const int64_t y = r % H, bt = r / H;
          const int64_t t = bt % T, b = bt / T;
          // Gradients of Fx (then Fy, Ft at + C, + 2C) of pair t - 1 and of Ft
          // of pair t, at pixel (0, 0); null where the pair does not exist.
          const scalar_t* gx =
              t >= 1 ? g + b * gv.sb + (t - 1) * gv.ss : nullptr;
          const scalar_t* gn =
              t <= S - 1 ? g + b * gv.sb + t * gv.ss + 2 * C : nullptr;
          scalar_t* o = fo.frame(b, t) + y * W * C;
          for (int64_t x = 0; x < W; ++x) {
            const int64_t at = y * gv.sh + x * g_sw;
            scalar_t* ox = o + x * C;
            if (gx == nullptr) {
              const Neighbours<scalar_t> none(zero, 0, 0, 1, 1, 0, 0, zero);
              backward_pixel_cl<scalar_t, false, true>(none, none, zero,
                                                       gn + at, ox, C);
              continue;
            }
            const Neighbours<scalar_t> nx(gx, gv.sh, g_sw, H, W, y, x, zero);
            const Neighbours<scalar_t> ny(gx + C, gv.sh, g_sw, H, W, y, x,
                                          zero);
            if (gn == nullptr) {
              backward_pixel_cl<scalar_t, true, false>(nx, ny, gx + 2 * C + at,
                                                       zero, ox, C);
            } else {
              backward_pixel_cl<scalar_t, true, true>(nx, ny, gx + 2 * C + at,
                                                      gn + at, ox, C);
            }
          }
        }
      });
}

at::Tensor run_forward(const at::Tensor& cur_src, const at::Tensor& prev_src,
                       const Plan& p, int64_t cur_offset,
                       at::IntArrayRef shape) {
  at::Tensor out = at::empty(shape, cur_src.options());
  if (out.numel() == 0) return out;
  MVACCEL_DISPATCH_FLOATING(cur_src.scalar_type(), "mvaccel_off_cpu", [&] {
    forward_kernel<scalar_t>(cur_src.const_data_ptr<scalar_t>() + cur_offset,
                             prev_src.const_data_ptr<scalar_t>(),
                             out.mutable_data_ptr<scalar_t>(), p);
  });
  return out;
}

// channels_last forward into a channels_last output.
at::Tensor run_forward_cl(const at::Tensor& cur_src, const at::Tensor& prev_src,
                          const Plan& p, int64_t cur_offset, int64_t cur_sw,
                          int64_t prev_sw, at::Tensor out) {
  if (out.numel() == 0) return out;
  MVACCEL_DISPATCH_FLOATING(cur_src.scalar_type(), "mvaccel_off_cl_cpu", [&] {
    forward_cl_kernel<scalar_t>(cur_src.const_data_ptr<scalar_t>() + cur_offset,
                                prev_src.const_data_ptr<scalar_t>(),
                                out.mutable_data_ptr<scalar_t>(), p, cur_sw,
                                prev_sw);
  });
  return out;
}

at::Tensor off_gradients_cpu(const at::Tensor& f_t_in,
                             const at::Tensor& f_prev_in) {
  check_pair(f_t_in, f_prev_in);
  if (is_channels_last(f_t_in, 1)) {
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

at::Tensor off_gradients_stack_cpu(const at::Tensor& f_in) {
  check_stack(f_in);
  if (is_channels_last(f_in, 2)) {
    const Plan p = plan_stack(f_in);
    return run_forward_cl(
        f_in, f_in, p, f_in.stride(1), f_in.stride(4), f_in.stride(4),
        empty_frames_cl(p.B, p.S, 3 * p.C, p.H, p.W, f_in.options()));
  }
  const at::Tensor f = rows_contiguous(f_in);
  const Plan p = plan_stack(f);
  return run_forward(f, f, p, f.stride(1), {p.B, p.S, 3 * p.C, p.H, p.W});
}

std::tuple<at::Tensor, at::Tensor> off_gradients_backward_cpu(
    const at::Tensor& grad_in) {
  check_grad_pair(grad_in);
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
  MVACCEL_DISPATCH_FLOATING(grad.scalar_type(), "mvaccel_off_bwd_cpu", [&] {
    const FrameOut<scalar_t> fo{g_prev.mutable_data_ptr<scalar_t>(),
                                g_t.mutable_data_ptr<scalar_t>(), CHW, CHW, 0};
    if (cl) {
      backward_cl_kernel<scalar_t>(grad.const_data_ptr<scalar_t>(), gv,
                                   grad.stride(3), p, fo);
    } else {
      backward_kernel<scalar_t>(grad.const_data_ptr<scalar_t>(), gv, p, fo);
    }
  });
  return {g_t, g_prev};
}

at::Tensor off_gradients_stack_backward_cpu(const at::Tensor& grad_in) {
  check_grad_stack(grad_in);
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
      grad.scalar_type(), "mvaccel_off_stack_bwd_cpu", [&] {
        scalar_t* base = gf.mutable_data_ptr<scalar_t>();
        const FrameOut<scalar_t> fo{base, base + CHW, TCHW, TCHW, CHW};
        if (cl) {
          backward_cl_kernel<scalar_t>(grad.const_data_ptr<scalar_t>(),
                                       grad_view(grad), grad.stride(4), p, fo);
        } else {
          backward_kernel<scalar_t>(grad.const_data_ptr<scalar_t>(),
                                    grad_view(grad), p, fo);
        }
      });
  return gf;
}

}  // namespace
}  // namespace off

TORCH_LIBRARY_IMPL(mvaccel, CPU, m) {
  m.impl("off_gradients", &off::off_gradients_cpu);
  m.impl("off_gradients_stack", &off::off_gradients_stack_cpu);
  m.impl("_off_gradients_backward", &off::off_gradients_backward_cpu);
  m.impl("_off_gradients_stack_backward",
         &off::off_gradients_stack_backward_cpu);
}

}  // namespace mvaccel
