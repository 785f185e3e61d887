// CPU kernels of off_gradients, off_gradients_stack and their backward ops.
//
// One task per image row: the interior of a row is a straight loop over
// three input rows (the rows outside the image are a shared zero row) that
// the compiler vectorises; the two edge columns use the bounds-checked math
// of off.h.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>
#include <vector>

#include "off.h"

namespace mvaccel {
namespace off {
namespace {

int64_t row_grain(int64_t W) {
  return std::max<int64_t>(1, 8192 / std::max<int64_t>(W, 1));
}

template <typename scalar_t>
void forward_kernel(const scalar_t* cur0, const scalar_t* prev0, scalar_t* out,
                    const Plan& p) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t B = p.B, S = p.S, C = p.C, H = p.H, W = p.W;
  const int64_t HW = H * W;
  const int64_t rows = B * S * C * H;
  const std::vector<scalar_t> zero_row(W, scalar_t(0));
  const scalar_t* zero = zero_row.data();

  at::parallel_for(0, rows, row_grain(W), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t y = r % H;
      const int64_t plane = r / H;
      const int64_t c = plane % C;
      const int64_t bs = plane / C;
      const int64_t s = bs % S, b = bs / S;
      const scalar_t* cur = cur0 + b * p.cur.sb + s * p.cur.ss + c * p.cur.sc;
      const scalar_t* r0 = cur + y * p.cur.sh;
      const scalar_t* rm = y > 0 ? r0 - p.cur.sh : zero;
      const scalar_t* rp = y < H - 1 ? r0 + p.cur.sh : zero;
      const scalar_t* pr =
          prev0 + b * p.prev.sb + s * p.prev.ss + c * p.prev.sc + y * p.prev.sh;
      scalar_t* ox = out + (bs * 3 * C + c) * HW + y * W;
      scalar_t* oy = ox + C * HW;
      scalar_t* ot = oy + C * HW;
      for (int64_t x = 1; x < W - 1; ++x) {
        const acc_t m0 = rm[x - 1], m1 = rm[x], m2 = rm[x + 1];
        const acc_t c0 = r0[x - 1], c2 = r0[x + 1];
        const acc_t p0 = rp[x - 1], p1 = rp[x], p2 = rp[x + 1];
        ox[x] =
            static_cast<scalar_t>((m2 - m0) + acc_t(2) * (c2 - c0) + (p2 - p0));
        oy[x] = static_cast<scalar_t>((m0 + acc_t(2) * m1 + m2) -
                                      (p0 + acc_t(2) * p1 + p2));
        ot[x] = static_cast<scalar_t>(static_cast<acc_t>(r0[x]) -
                                      static_cast<acc_t>(pr[x]));
      }
      for (int64_t x : {int64_t(0), W - 1}) {
        ox[x] =
            static_cast<scalar_t>(sobel_x<acc_t>(cur, p.cur.sh, H, W, y, x));
        oy[x] =
            static_cast<scalar_t>(sobel_y<acc_t>(cur, p.cur.sh, H, W, y, x));
        ot[x] = static_cast<scalar_t>(static_cast<acc_t>(r0[x]) -
                                      static_cast<acc_t>(pr[x]));
        if (W == 1) break;
      }
    }
  });
}

// Gradient of every frame of the (B, S + 1) frame grid from the output
// gradient g, view gv (see frame_grad in off.h).
template <typename scalar_t>
void backward_kernel(const scalar_t* g, const View& gv, const Plan& p,
                     const FrameOut<scalar_t>& fo) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t B = p.B, S = p.S, C = p.C, H = p.H, W = p.W;
  const int64_t T = S + 1;
  const int64_t rows = B * T * C * H;
  const std::vector<scalar_t> zero_row(W, scalar_t(0));
  const scalar_t* zero = zero_row.data();

  at::parallel_for(0, rows, row_grain(W), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(W);
    for (int64_t r = begin; r < end; ++r) {
      const int64_t y = r % H;
      const int64_t plane = r / H;
      const int64_t c = plane % C;
      const int64_t bt = plane / C;
      const int64_t t = bt % T, b = bt / T;
      std::fill(acc.begin(), acc.end(), acc_t(0));
      if (t >= 1) {  // frame t is the current frame of pair t - 1
        const scalar_t* gx = g + b * gv.sb + (t - 1) * gv.ss + c * gv.sc;
        const scalar_t* gy = gx + C * gv.sc;
        const scalar_t* gt = gy + C * gv.sc + y * gv.sh;
        const scalar_t* x0 = gx + y * gv.sh;
        const scalar_t* xm = y > 0 ? x0 - gv.sh : zero;
        const scalar_t* xp = y < H - 1 ? x0 + gv.sh : zero;
        const scalar_t* y0 = gy + y * gv.sh;
        const scalar_t* ym = y > 0 ? y0 - gv.sh : zero;
        const scalar_t* yp = y < H - 1 ? y0 + gv.sh : zero;
        for (int64_t x = 1; x < W - 1; ++x) {
          const acc_t sx = (acc_t(xm[x + 1]) - acc_t(xm[x - 1])) +
                           acc_t(2) * (acc_t(x0[x + 1]) - acc_t(x0[x - 1])) +
                           (acc_t(xp[x + 1]) - acc_t(xp[x - 1]));
          const acc_t sy =
              (acc_t(ym[x - 1]) + acc_t(2) * acc_t(ym[x]) + acc_t(ym[x + 1])) -
              (acc_t(yp[x - 1]) + acc_t(2) * acc_t(yp[x]) + acc_t(yp[x + 1]));
          acc[x] = acc_t(gt[x]) - sx - sy;
        }
        for (int64_t x : {int64_t(0), W - 1}) {
          acc[x] = acc_t(gt[x]) - sobel_x<acc_t>(gx, gv.sh, H, W, y, x) -
                   sobel_y<acc_t>(gy, gv.sh, H, W, y, x);
          if (W == 1) break;
        }
      }
      if (t <= S - 1) {  // frame t is the previous frame of pair t
        const scalar_t* gt =
            g + b * gv.sb + t * gv.ss + (2 * C + c) * gv.sc + y * gv.sh;
        for (int64_t x = 0; x < W; ++x) acc[x] -= acc_t(gt[x]);
      }
      scalar_t* o = fo.frame(b, t) + c * H * W + y * W;
      for (int64_t x = 0; x < W; ++x) o[x] = static_cast<scalar_t>(acc[x]);
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

at::Tensor off_gradients_cpu(const at::Tensor& f_t_in,
                             const at::Tensor& f_prev_in) {
  check_pair(f_t_in, f_prev_in);
  const at::Tensor f_t = rows_contiguous(f_t_in);
  const at::Tensor f_prev = rows_contiguous(f_prev_in);
  const Plan p = plan_pair(f_t, f_prev);
  return run_forward(f_t, f_prev, p, 0, {p.B, 3 * p.C, p.H, p.W});
}

at::Tensor off_gradients_stack_cpu(const at::Tensor& f_in) {
  check_stack(f_in);
  const at::Tensor f = rows_contiguous(f_in);
  const Plan p = plan_stack(f);
  return run_forward(f, f, p, f.stride(1), {p.B, p.S, 3 * p.C, p.H, p.W});
}

std::tuple<at::Tensor, at::Tensor> off_gradients_backward_cpu(
    const at::Tensor& grad_in) {
  check_grad_pair(grad_in);
  const at::Tensor grad = rows_contiguous(grad_in);
  Plan p;
  p.B = grad.size(0);
  p.S = 1;
  p.C = grad.size(1) / 3;
  p.H = grad.size(2);
  p.W = grad.size(3);
  at::Tensor g_t = at::empty({p.B, p.C, p.H, p.W}, grad.options());
  at::Tensor g_prev = at::empty({p.B, p.C, p.H, p.W}, grad.options());
  if (g_t.numel() == 0) return {g_t, g_prev};
  const View gv{grad.stride(0), 0, grad.stride(1), grad.stride(2)};
  const int64_t CHW = p.C * p.H * p.W;
  MVACCEL_DISPATCH_FLOATING(grad.scalar_type(), "mvaccel_off_bwd_cpu", [&] {
    const FrameOut<scalar_t> fo{g_prev.mutable_data_ptr<scalar_t>(),
                                g_t.mutable_data_ptr<scalar_t>(), CHW, CHW, 0};
    backward_kernel<scalar_t>(grad.const_data_ptr<scalar_t>(), gv, p, fo);
  });
  return {g_t, g_prev};
}

at::Tensor off_gradients_stack_backward_cpu(const at::Tensor& grad_in) {
  check_grad_stack(grad_in);
  const at::Tensor grad = rows_contiguous(grad_in);
  Plan p;
  p.B = grad.size(0);
  p.S = grad.size(1);
  p.C = grad.size(2) / 3;
  p.H = grad.size(3);
  p.W = grad.size(4);
  at::Tensor gf = at::empty({p.B, p.S + 1, p.C, p.H, p.W}, grad.options());
  if (gf.numel() == 0 || p.S == 0) return gf.zero_();
  const int64_t CHW = p.C * p.H * p.W;
  const int64_t TCHW = (p.S + 1) * CHW;
  MVACCEL_DISPATCH_FLOATING(
      grad.scalar_type(), "mvaccel_off_stack_bwd_cpu", [&] {
        scalar_t* base = gf.mutable_data_ptr<scalar_t>();
        const FrameOut<scalar_t> fo{base, base + CHW, TCHW, TCHW, CHW};
        backward_kernel<scalar_t>(grad.const_data_ptr<scalar_t>(),
                                  grad_view(grad), p, fo);
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
