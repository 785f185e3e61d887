// Host side of tvnet_iterations and its backward: argument checks and the
// numbers a backend needs. The per-pixel math is in tvnet_math.h.
//
// tvnet_iterations(u, p, warped, wf, wb, l_t, theta, taut, eps, grad_eps,
//                  save_states) -> (u_out, p_out, states)
//   u       (N, 2, H, W)  flow before the block of iterations (pixels)
//   p       (N, 4, H, W)  dual fields (p11, p12, p21, p22)
//   warped  (N, 3, H, W)  (rho_c, I1wx, I1wy) of the current warp
//   wf, wb  (k, 8)        filters of each of the k iterations
//   states  (k, N, 6, H, W) (u, p) before each iteration when save_states,
//           else an empty tensor: what the backward reads (6 planes per
//           iteration instead of the dozens autograd would keep).
// float32 or float64; every tensor on one device.
#pragma once

#include "../../common.h"
#include "tvnet_math.h"

namespace mvaccel {
namespace tvnet {

struct Coeffs {
  double l_t, theta, taut, eps, grad_eps;
};

inline void check_same(const at::Tensor& ref, const at::Tensor& t,
                       const char* op, const char* name) {
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), op, ": ", name,
              " must have the dtype of u (", ref.scalar_type(), "), got ",
              t.scalar_type());
  TORCH_CHECK(t.device() == ref.device(), op, ": ", name,
              " must be on the device of u (", ref.device(), "), got ",
              t.device());
}

inline Dims check_forward(const at::Tensor& u, const at::Tensor& p,
                          const at::Tensor& warped, const at::Tensor& wf,
                          const at::Tensor& wb) {
  const char* op = "mvaccel.tvnet_iterations";
  check_dim(u, 4, op, "u", "(N, 2, H, W)");
  TORCH_CHECK(u.scalar_type() == at::kFloat || u.scalar_type() == at::kDouble,
              op, ": expected float32 or float64 tensors, got ",
              u.scalar_type());
  const int64_t N = u.size(0), H = u.size(2), W = u.size(3);
  TORCH_CHECK(u.size(1) == 2, op, ": expected u of shape (N, 2, H, W), got ",
              u.sizes());
  TORCH_CHECK(p.dim() == 4 && p.size(0) == N && p.size(1) == 4 &&
                  p.size(2) == H && p.size(3) == W,
              op, ": expected p of shape (", N, ", 4, ", H, ", ", W,
              ") (p11, p12, p21, p22), got ", p.sizes());
  TORCH_CHECK(warped.dim() == 4 && warped.size(0) == N && warped.size(1) == 3 &&
                  warped.size(2) == H && warped.size(3) == W,
              op, ": expected warped of shape (", N, ", 3, ", H, ", ", W,
              ") (rho_c, I1wx, I1wy), got ", warped.sizes());
  TORCH_CHECK(wf.dim() == 2 && wf.size(1) == kTaps, op,
              ": expected wf of shape (k, 8), got ", wf.sizes());
  TORCH_CHECK(wb.dim() == 2 && wb.size(1) == kTaps && wb.size(0) == wf.size(0),
              op, ": expected wb of shape (", wf.size(0), ", 8), got ",
              wb.sizes());
  check_same(u, p, op, "p");
  check_same(u, warped, op, "warped");
  check_same(u, wf, op, "wf");
  check_same(u, wb, op, "wb");
  return {N, H, W, wf.size(0)};
}

inline Dims check_backward(const at::Tensor& grad_u, const at::Tensor& grad_p,
                           const at::Tensor& states, const at::Tensor& u_out,
                           const at::Tensor& warped, const at::Tensor& wf,
                           const at::Tensor& wb) {
  const char* op = "mvaccel._tvnet_iterations_backward";
  const Dims d = check_forward(u_out, grad_p, warped, wf, wb);
  TORCH_CHECK(grad_u.sizes() == u_out.sizes(), op,
              ": grad_u must have the shape of u, got ", grad_u.sizes());
  check_same(u_out, grad_u, op, "grad_u");
  check_same(u_out, states, op, "states");
  TORCH_CHECK(
      states.dim() == 5 && states.size(0) == d.K && states.size(1) == d.N &&
          states.size(2) == 6 && states.size(3) == d.H && states.size(4) == d.W,
      op, ": expected states of shape (", d.K, ", ", d.N, ", 6, ", d.H, ", ",
      d.W, ") as tvnet_iterations(save_states=True) returns, got ",
      states.sizes());
  return d;
}

}  // namespace tvnet
}  // namespace mvaccel
