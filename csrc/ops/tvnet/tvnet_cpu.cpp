// CPU kernels of tvnet_iterations and its backward.
//
// Each iteration is two in-place passes over the image rows (see
// tvnet_math.h): pass "u" reads u at the pixel and p at its neighbours,
// pass "p" reads u at its neighbours and p at the pixel, so neither needs a
// second buffer. The backward runs the iterations in reverse from the saved
// (u, p) states and recomputes the rest. Filter gradients are summed per row
// and then over rows in a fixed order: the result does not depend on the
// number of threads.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>
#include <vector>

#include "tvnet.h"

namespace mvaccel {
namespace tvnet {
namespace {

int64_t grain_rows(int64_t W) {
  // Enough pixels per task that small images run without fork-join waits.
  return std::max<int64_t>(1, 32768 / std::max<int64_t>(W, 1));
}

template <typename T>
void forward_impl(T* u, T* p, const T* warped, const T* wf, const T* wb,
                  T* states, const Dims& d, const Coeffs& c) {
  const int64_t N = d.N, H = d.H, W = d.W, HW = d.H * d.W;
  const T l_t = c.l_t, theta = c.theta, taut = c.taut, eps = c.eps,
          grad_eps = c.grad_eps;
  for (int64_t it = 0; it < d.K; ++it) {
    if (states != nullptr) {
      T* s = states + it * N * 6 * HW;
      const int64_t pairs_per_task = std::max<int64_t>(1, 262144 / (6 * HW));
      at::parallel_for(0, N, pairs_per_task, [&](int64_t b0, int64_t b1) {
        for (int64_t n = b0; n < b1; ++n) {
          std::copy(u + n * 2 * HW, u + (n + 1) * 2 * HW, s + n * 6 * HW);
          std::copy(p + n * 4 * HW, p + (n + 1) * 4 * HW,
                    s + n * 6 * HW + 2 * HW);
        }
      });
    }
    const Taps<T> f1 = taps_of<T>(wf + it * kTaps, 0);
    const Taps<T> f2 = taps_of<T>(wf + it * kTaps, 1);
    const Taps<T> b1 = taps_of<T>(wb + it * kTaps, 0);
    const Taps<T> b2 = taps_of<T>(wb + it * kTaps, 1);
    // Pass "u".
    at::parallel_for(0, N * H, grain_rows(W), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t n = r / H, y = r % H;
        for (int64_t x = 0; x < W; ++x) {
          pass_u<T>(u + n * 2 * HW, p + n * 4 * HW, warped + n * 3 * HW, H, W,
                    y, x, b1, b2, l_t, theta, grad_eps);
        }
      }
    });
    // Pass "p".
    at::parallel_for(0, N * H, grain_rows(W), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t n = r / H, y = r % H;
        for (int64_t x = 0; x < W; ++x) {
          pass_p<T>(u + n * 2 * HW, p + n * 4 * HW, H, W, y, x, f1, f2, taut,
                    eps);
        }
      }
    });
  }
}

template <typename T>
void backward_impl(T* gu, T* gu_next, T* gp, T* gw, T* gwf, T* gwb,
                   const T* states, const T* u_out, const T* warped,
                   const T* wf, const T* wb, const Dims& d, const Coeffs& c) {
  const int64_t N = d.N, H = d.H, W = d.W, HW = d.H * d.W;
  const T l_t = c.l_t, theta = c.theta, taut = c.taut, eps = c.eps,
          grad_eps = c.grad_eps;
  std::vector<T> tmp(N * 4 * HW);  // gux1, guy1, gux2, guy2
  std::vector<T> rows(N * H * 2 * kTaps);
  T* g4 = tmp.data();
  T* rs = rows.data();
  for (int64_t it = d.K - 1; it >= 0; --it) {
    const T* st = states + it * N * 6 * HW;  // (u, p) before iteration it
    const Taps<T> f[2] = {taps_of<T>(wf + it * kTaps, 0),
                          taps_of<T>(wf + it * kTaps, 1)};
    const Taps<T> b[2] = {taps_of<T>(wb + it * kTaps, 0),
                          taps_of<T>(wb + it * kTaps, 1)};
    // u' (after iteration it) of pair n, component k.
    auto ucur = [&](int64_t n) -> const T* {
      return it == d.K - 1 ? u_out + n * 2 * HW
                           : states + (it + 1) * N * 6 * HW + n * 6 * HW;
    };
    // Pass "p" transposed.
    at::parallel_for(0, N * H, grain_rows(W), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t n = r / H, y = r % H;
        T acc[kTaps] = {};
        for (int64_t x = 0; x < W; ++x) {
          pass_p_backward<T>(ucur(n), st + n * 6 * HW + 2 * HW, gp + n * 4 * HW,
                             g4 + n * 4 * HW, H, W, y, x, f, taut, eps, acc);
        }
        std::copy(acc, acc + kTaps, rs + r * 2 * kTaps);
      }
    });
    // Pass "u" transposed.
    at::parallel_for(0, N * H, grain_rows(W), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t n = r / H, y = r % H;
        const T* uold = st + n * 6 * HW;
        T acc[kTaps] = {};
        for (int64_t x = 0; x < W; ++x) {
          pass_u_backward<T>(uold, uold + 2 * HW, warped + n * 3 * HW,
                             gu + n * 2 * HW, g4 + n * 4 * HW, gp + n * 4 * HW,
                             gw + n * 3 * HW, gu_next + n * 2 * HW, H, W, y, x,
                             f, b, l_t, theta, grad_eps, acc);
        }
        std::copy(acc, acc + kTaps, rs + r * 2 * kTaps + kTaps);
      }
    });
    std::swap(gu, gu_next);
    // Filter gradients: rows in order.
    for (int64_t r = 0; r < N * H; ++r) {
      for (int j = 0; j < kTaps; ++j) {
        gwf[it * kTaps + j] += rs[r * 2 * kTaps + j];
        gwb[it * kTaps + j] += rs[r * 2 * kTaps + kTaps + j];
      }
    }
  }
}

Coeffs coeffs(double l_t, double theta, double taut, double eps,
              double grad_eps) {
  return {l_t, theta, taut, eps, grad_eps};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> tvnet_iterations_cpu(
    const at::Tensor& u_in, const at::Tensor& p_in, const at::Tensor& warped_in,
    const at::Tensor& wf_in, const at::Tensor& wb_in, double l_t, double theta,
    double taut, double eps, double grad_eps, bool save_states) {
  const Dims d = check_forward(u_in, p_in, warped_in, wf_in, wb_in);
  at::Tensor u = u_in.contiguous().clone();
  at::Tensor p = p_in.contiguous().clone();
  const at::Tensor warped = warped_in.contiguous();
  const at::Tensor wf = wf_in.contiguous(), wb = wb_in.contiguous();
  at::Tensor states = save_states
                          ? at::empty({d.K, d.N, 6, d.H, d.W}, u.options())
                          : at::empty({0}, u.options());
  if (u.numel() == 0 || d.K == 0) return {u, p, states};
  const Coeffs c = coeffs(l_t, theta, taut, eps, grad_eps);
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "mvaccel_tvnet_cpu", [&] {
    forward_impl<scalar_t>(
        u.mutable_data_ptr<scalar_t>(), p.mutable_data_ptr<scalar_t>(),
        warped.const_data_ptr<scalar_t>(), wf.const_data_ptr<scalar_t>(),
        wb.const_data_ptr<scalar_t>(),
        save_states ? states.mutable_data_ptr<scalar_t>() : nullptr, d, c);
  });
  return {u, p, states};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
tvnet_iterations_backward_cpu(const at::Tensor& grad_u_in,
                              const at::Tensor& grad_p_in,
                              const at::Tensor& states_in,
                              const at::Tensor& u_out_in,
                              const at::Tensor& warped_in,
                              const at::Tensor& wf_in, const at::Tensor& wb_in,
                              double l_t, double theta, double taut, double eps,
                              double grad_eps) {
  const Dims d = check_backward(grad_u_in, grad_p_in, states_in, u_out_in,
                                warped_in, wf_in, wb_in);
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
  const Coeffs c = coeffs(l_t, theta, taut, eps, grad_eps);
  AT_DISPATCH_FLOATING_TYPES(gu.scalar_type(), "mvaccel_tvnet_bwd_cpu", [&] {
    backward_impl<scalar_t>(
        gu.mutable_data_ptr<scalar_t>(), gu_next.mutable_data_ptr<scalar_t>(),
        gp.mutable_data_ptr<scalar_t>(), gw.mutable_data_ptr<scalar_t>(),
        gwf.mutable_data_ptr<scalar_t>(), gwb.mutable_data_ptr<scalar_t>(),
        states.const_data_ptr<scalar_t>(), u_out.const_data_ptr<scalar_t>(),
        warped.const_data_ptr<scalar_t>(), wf.const_data_ptr<scalar_t>(),
        wb.const_data_ptr<scalar_t>(), d, c);
  });
  // Each iteration writes the other buffer: after an odd number of
  // iterations the gradient of u is in gu_next.
  return {d.K % 2 == 1 ? gu_next : gu, gp, gw, gwf, gwb};
}

}  // namespace
}  // namespace tvnet

TORCH_LIBRARY_IMPL(mvaccel, CPU, m) {
  m.impl("tvnet_iterations", &tvnet::tvnet_iterations_cpu);
  m.impl("_tvnet_iterations_backward", &tvnet::tvnet_iterations_backward_cpu);
}

}  // namespace mvaccel
