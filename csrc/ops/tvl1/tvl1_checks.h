// Argument checks of tvl1_flow: one host function (check_tvl1_flow), called
// as the first line of the CPU and the CUDA kernel, so both backends raise the
// same errors before allocating. It ends with the solver's planned memory
// checked against what the device has available. The fake (meta) kernel in
// mvaccel/flow/tvl1.py mirrors it.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>

#include "../memory.h"
#include "tvl1.h"

namespace mvaccel {
namespace tvl1 {

inline Config check_inputs(const at::Tensor& I0, const at::Tensor& I1,
                           const c10::optional<at::Tensor>& init, double tau,
                           double lambda, double theta, int64_t nscales,
                           double scale_step, int64_t warps, double epsilon,
                           int64_t inner, int64_t outer, int64_t median,
                           int64_t warp, int64_t stop_check, int64_t min_size,
                           double dual_eps, double grad_eps) {
  check_dim(I0, 3, "tvl1_flow", "I0", "(N, H, W)");
  TORCH_CHECK(I1.sizes() == I0.sizes(),
              "tvl1_flow: I0 and I1 must have the same shape, got ", I0.sizes(),
              " and ", I1.sizes());
  TORCH_CHECK(I0.scalar_type() == at::kFloat && I1.scalar_type() == at::kFloat,
              "tvl1_flow: expected float32 I0 and I1, got ", I0.scalar_type(),
              " and ", I1.scalar_type());
  TORCH_CHECK(I0.device() == I1.device(),
              "tvl1_flow: I0 and I1 on different devices");
  TORCH_CHECK(I0.size(1) >= 2 && I0.size(2) >= 2,
              "tvl1_flow: images must be at least 2x2, got ", I0.sizes());
  if (init.has_value()) {
    const auto& f = *init;
    TORCH_CHECK(f.dim() == 4 && f.size(0) == I0.size(0) && f.size(1) == 2 &&
                    f.size(2) == I0.size(1) && f.size(3) == I0.size(2),
                "tvl1_flow: init must be (N, 2, H, W) = (", I0.size(0), ", 2, ",
                I0.size(1), ", ", I0.size(2), "), got ", f.sizes());
    TORCH_CHECK(f.scalar_type() == at::kFloat && f.device() == I0.device(),
                "tvl1_flow: init must be float32 on the images' device");
  }
  TORCH_CHECK(tau > 0 && lambda > 0 && theta > 0,
              "tvl1_flow: tau, lambda and theta must be > 0");
  TORCH_CHECK(nscales >= 1 && warps >= 1 && inner >= 1 && outer >= 1,
              "tvl1_flow: nscales, warps and iteration counts must be >= 1");
  TORCH_CHECK(scale_step > 0 && scale_step < 1,
              "tvl1_flow: scale_step must be in (0, 1), got ", scale_step);
  TORCH_CHECK(median == 1 || median == 5,
              "tvl1_flow: median must be 1 (off) or 5, got ", median);
  TORCH_CHECK(warp >= 0 && warp <= 2, "tvl1_flow: bad warp mode ", warp);
  TORCH_CHECK(stop_check == 0 || stop_check == 1, "tvl1_flow: bad stop_check ",
              stop_check);
  TORCH_CHECK(min_size >= 2, "tvl1_flow: min_size must be >= 2");
  TORCH_CHECK(epsilon >= 0 && dual_eps >= 0 && grad_eps >= 0,
              "tvl1_flow: epsilon, dual_eps and grad_eps must be >= 0");
  return Config{tau,   lambda,     theta,    nscales,  scale_step,
                warps, epsilon,    inner,    outer,    median,
                warp,  stop_check, min_size, dual_eps, grad_eps};
}

// Memory the solve allocates (float32 planes): the output (2 per pair), the
// contiguous copies of the inputs, and the solver's workspace: CPU, one
// solver per thread in flight (12 full-size planes and both image pyramids);
// CUDA, every pair at once (11 planes, the 6 spare planes of the double-
// buffered state, see tvl1_cuda.cu, the pyramids below the finest level and
// the flow being refined, 4 planes).
inline double tvl1_planned_bytes(const at::Tensor& I0, const at::Tensor& I1,
                                 const Config& c) {
  const int64_t N = I0.size(0), H = I0.size(1), W = I0.size(2);
  if (N == 0) return 0.0;
  double below = 0.0;  // pyramid levels below the finest, in pixels
  const auto sizes = pyramid_sizes(H, W, c);
  for (size_t l = 1; l < sizes.size(); ++l)
    below += static_cast<double>(sizes[l].first) *
             static_cast<double>(sizes[l].second);
  const double hw = static_cast<double>(H) * static_cast<double>(W);
  double planes;
  if (I0.is_cuda()) {
    planes = static_cast<double>(N) * (2.0 + 11.0 + 6.0 + 4.0) * hw +
             static_cast<double>(N) * 2.0 * below;
  } else {
    const int64_t threads = at::get_num_threads();
    const int64_t solvers =
        N > 1 && N >= threads ? std::min<int64_t>(N, threads) : 1;
    planes = static_cast<double>(N) * 2.0 * hw +
             static_cast<double>(solvers) * (12.0 * hw + 2.0 * (hw + below));
  }
  return 4.0 * planes + copy_bytes(I0) + copy_bytes(I1);
}

inline Config check_tvl1_flow(const at::Tensor& I0, const at::Tensor& I1,
                              const c10::optional<at::Tensor>& init, double tau,
                              double lambda, double theta, int64_t nscales,
                              double scale_step, int64_t warps, double epsilon,
                              int64_t inner, int64_t outer, int64_t median,
                              int64_t warp, int64_t stop_check,
                              int64_t min_size, double dual_eps,
                              double grad_eps) {
  const Config c = check_inputs(
      I0, I1, init, tau, lambda, theta, nscales, scale_step, warps, epsilon,
      inner, outer, median, warp, stop_check, min_size, dual_eps, grad_eps);
  check_fits_in_memory("tvl1_flow", I0.device(), tvl1_planned_bytes(I0, I1, c),
                       "the flow, the image pyramids and the solver's planes");
  return c;
}

}  // namespace tvl1
}  // namespace mvaccel
