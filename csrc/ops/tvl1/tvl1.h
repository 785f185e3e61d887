// tvl1_flow: the whole TV-L1 solve (pyramid, warps, iterations, stopping,
// median filter) for a batch of grey pairs, shared host-side pieces of the
// CPU (tvl1_cpu.cpp) and CUDA (tvl1_cuda.cu) kernels.
//
//   I0, I1  (N, H, W) float32, grey, scale 0..255
//   init    optional (N, 2, H, W) float32 initial flow in pixels
//   returns (N, 2, H, W) float32 flow u with I1(x + u(x)) ~ I0(x); channel 0
//           is x (right), channel 1 is y (down)
//
// Per-pixel math: tvl1_math.h. Python wrapper and reference: mvaccel/flow.
#pragma once

#include <cmath>
#include <utility>
#include <vector>

#include "../../common.h"
#include "tvl1_math.h"

namespace mvaccel {
namespace tvl1 {

enum StopCheck : int { kStopEvery = 0, kStopCuda = 1 };

struct Config {
  double tau, lambda, theta;
  int64_t nscales;
  double scale_step;
  int64_t warps;
  double epsilon;
  int64_t inner, outer, median;
  int64_t warp, stop_check, min_size;
  double dual_eps, grad_eps;

  float l_t() const { return static_cast<float>(lambda * theta); }
  float taut() const { return static_cast<float>(tau / theta); }
};

// Level sizes, finest first: each is the previous times scale_step rounded to
// nearest (ties to even, as cv::resize with factors); a level under min_size
// in either dimension ends the pyramid.
inline std::vector<std::pair<int64_t, int64_t>> pyramid_sizes(int64_t H,
                                                              int64_t W,
                                                              const Config& c) {
  std::vector<std::pair<int64_t, int64_t>> s{{H, W}};
  for (int64_t l = 1; l < c.nscales; ++l) {
    const int64_t h = static_cast<int64_t>(
        std::nearbyint(static_cast<double>(s.back().first) * c.scale_step));
    const int64_t w = static_cast<int64_t>(
        std::nearbyint(static_cast<double>(s.back().second) * c.scale_step));
    if (h < c.min_size || w < c.min_size) break;
    s.emplace_back(h, w);
  }
  return s;
}

// Checks of the op's inputs shared by both backends; returns the Config.
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

}  // namespace tvl1
}  // namespace mvaccel
