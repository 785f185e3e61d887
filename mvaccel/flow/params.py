"""Parameters of the TV-L1 solver and the named presets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

#: Warping interpolations (``TVL1Params.warp``), codes shared with the C++/CUDA kernels.
WARP_MODES = {"cubic_opencv": 0, "cubic_clamp": 1, "bilinear": 2}

#: How often the stopping criterion is evaluated (``TVL1Params.stop_check``).
STOP_CHECKS = {"every": 0, "cuda": 1}


@dataclass(frozen=True)
class TVL1Params:
    """Parameters of the duality TV-L1 solver (Zach, Pock, Bischof 2007; OpenCV's DualTVL1).

    The defaults are OpenCV's CPU defaults (``TVL1Params.preset("opencv")``).

    Attributes:
        tau: time step of the dual update (stable for tau <= 0.25).
        lambda_: weight of the data term (smaller: smoother flow).
        theta: coupling of u and v (``l_t = lambda_ * theta``, ``taut = tau / theta``).
        nscales: number of pyramid levels (fewer when a level would be under ``min_size``).
        scale_step: ratio between consecutive levels (OpenCV: 0.8; 0.5 halves).
        warps: warpings of I1 per level.
        epsilon: stopping threshold: a pair stops iterating in the current warp when the
            mean over pixels of the squared flow update falls to ``epsilon**2`` or below.
            0 disables stopping.
        inner_iterations: iterations per outer iteration.
        outer_iterations: outer iterations per warp (each starts with the median filter).
        median: side of the median filter applied to the flow at each outer iteration
            (5 = OpenCV CPU; 1 = none).
        warp: interpolation of the warp: ``"cubic_opencv"`` (cv::remap INTER_CUBIC, a = -0.75,
            zero outside), ``"cubic_clamp"`` (OpenCV CUDA: a = -0.5, clamped
            border) or ``"bilinear"`` (TVNet, clamped border).
        stop_check: ``"every"`` evaluates the stopping criterion after every iteration (OpenCV
            CPU); ``"cuda"`` follows OpenCV CUDA, which evaluates it on odd iterations only and
            skips evaluations while the last measured error minus ``epsilon**2`` per skipped
            iteration is still above the threshold.
        min_size: a pyramid level narrower or lower than this is not used (OpenCV: 16).
        dual_eps: added under the square root of the dual update (TVNet: 1e-12; OpenCV: 0).
        grad_eps: the thresholding step divides by ``|grad I1|^2`` only above this
            (OpenCV: FLT_EPSILON).
    """

    tau: float = 0.25
    lambda_: float = 0.15
    theta: float = 0.3
    nscales: int = 5
    scale_step: float = 0.8
    warps: int = 5
    epsilon: float = 0.01
    inner_iterations: int = 30
    outer_iterations: int = 10
    median: int = 5
    warp: str = "cubic_opencv"
    stop_check: str = "every"
    min_size: int = 16
    dual_eps: float = 0.0
    grad_eps: float = 1.1920928955078125e-07

    def __post_init__(self) -> None:
        checks = [
            (self.tau > 0, "tau must be > 0"),
            (self.lambda_ > 0, "lambda_ must be > 0"),
            (self.theta > 0, "theta must be > 0"),
            (self.nscales >= 1, "nscales must be >= 1"),
            (0 < self.scale_step < 1, "scale_step must be in (0, 1)"),
            (self.warps >= 1, "warps must be >= 1"),
            (self.epsilon >= 0, "epsilon must be >= 0"),
            (self.inner_iterations >= 1, "inner_iterations must be >= 1"),
            (self.outer_iterations >= 1, "outer_iterations must be >= 1"),
            (self.median in (1, 5), "median must be 1 (off) or 5"),
            (self.warp in WARP_MODES, f"warp must be one of {sorted(WARP_MODES)}"),
            (self.stop_check in STOP_CHECKS, f"stop_check must be one of {sorted(STOP_CHECKS)}"),
            (self.min_size >= 2, "min_size must be >= 2"),
            (self.dual_eps >= 0 and self.grad_eps >= 0, "dual_eps and grad_eps must be >= 0"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(f"TVL1Params: {msg}, got {self}")

    @property
    def iterations(self) -> int:
        """Most iterations per warp: ``inner_iterations * outer_iterations``."""
        return self.inner_iterations * self.outer_iterations

    def replace(self, **changes) -> TVL1Params:
        """A copy with some fields changed (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)

    @staticmethod
    def preset(name: str) -> TVL1Params:
        """A named parameter set.

        - ``opencv``: OpenCV's CPU ``DualTVL1OpticalFlow`` defaults (tau 0.25, lambda 0.15,
          theta 0.3, 5 scales of step 0.8, 5 warps, epsilon 0.01, 30 inner x 10 outer
          iterations, 5x5 median filter, bicubic warp a = -0.75 with zero border).
        - ``opencv_cuda`` / ``dense_flow``: OpenCV's CUDA ``OpticalFlowDual_TVL1`` defaults, with
          which TSN's dense_flow made its flow: 300 iterations per warp, no median filter,
          bicubic a = -0.5 with clamped border, the CUDA stopping-check schedule.
        - ``tvnet``: TVNet's unrolled TV-L1 (Fan et al. 2018): 1 scale, 1 warp, 50 iterations,
          bilinear warp, no stopping, epsilon 1e-12 under the dual square root.
        - ``fast``: the ``dense_flow`` model at a third of the cost: 3 scales of step 0.5,
          3 warps, at most 50 iterations per warp (EPE and speed in bench/RESULTS.md).

        Raises:
            ValueError: unknown name.
        """
        if name not in PRESETS:
            known = sorted(PRESETS)
            raise ValueError(f"TVL1Params.preset: unknown preset {name!r}; one of {known}")
        return PRESETS[name]


PRESETS: dict[str, TVL1Params] = {
    "opencv": TVL1Params(),
    "opencv_cuda": TVL1Params(
        inner_iterations=300, outer_iterations=1, median=1, warp="cubic_clamp", stop_check="cuda"
    ),
    "tvnet": TVL1Params(
        nscales=1,
        warps=1,
        epsilon=0.0,
        inner_iterations=50,
        outer_iterations=1,
        median=1,
        warp="bilinear",
        dual_eps=1e-12,
        grad_eps=1e-12,
    ),
    "fast": TVL1Params(
        nscales=3,
        scale_step=0.5,
        warps=3,
        inner_iterations=50,
        outer_iterations=1,
        median=1,
        warp="cubic_clamp",
    ),
}
PRESETS["dense_flow"] = PRESETS["opencv_cuda"]
