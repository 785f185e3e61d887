// Argument checks of tvnet_iterations and its backward: one host function per
// entry point (check_tvnet_iterations, check_tvnet_iterations_backward),
// called as the first line of the CPU and the CUDA kernel, so both backends
// raise the same errors before touching memory. They end with the planned
// allocation checked against the device's available memory. The fake (meta)
// kernels in mvaccel/ops/tvnet.py mirror them.
#pragma once

#include "../memory.h"
#include "tvnet.h"

namespace mvaccel {
namespace tvnet {

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

// Forward: u and p are cloned (6 planes), warped copied when not contiguous,
// and states hold 6 planes per iteration when save_states.
inline Dims check_tvnet_iterations(const at::Tensor& u, const at::Tensor& p,
                                   const at::Tensor& warped,
                                   const at::Tensor& wf, const at::Tensor& wb,
                                   bool save_states) {
  const Dims d = check_forward(u, p, warped, wf, wb);
  const double plane = static_cast<double>(d.N) * static_cast<double>(d.H) *
                       static_cast<double>(d.W);
  const double planes =
      6.0 + (save_states ? 6.0 * static_cast<double>(d.K) : 0.0);
  check_fits_in_memory(
      "mvaccel.tvnet_iterations", u.device(),
      bytes_of(u, planes * plane) + copy_bytes(u) + copy_bytes(p) +
          copy_bytes(warped),
      save_states ? "u, p and the saved states of every iteration" : "u and p");
  return d;
}

// Backward: gradients of u (two buffers), p, warped and a 4-plane scratch
// (11 planes), plus contiguous copies of the saved tensors.
inline Dims check_tvnet_iterations_backward(
    const at::Tensor& grad_u, const at::Tensor& grad_p,
    const at::Tensor& states, const at::Tensor& u_out, const at::Tensor& warped,
    const at::Tensor& wf, const at::Tensor& wb) {
  const Dims d = check_backward(grad_u, grad_p, states, u_out, warped, wf, wb);
  const double plane = static_cast<double>(d.N) * static_cast<double>(d.H) *
                       static_cast<double>(d.W);
  check_fits_in_memory("mvaccel._tvnet_iterations_backward", u_out.device(),
                       bytes_of(u_out, 15.0 * plane) + copy_bytes(states) +
                           copy_bytes(u_out) + copy_bytes(warped),
                       "the gradients of u, p and warped");
  return d;
}

}  // namespace tvnet
}  // namespace mvaccel
