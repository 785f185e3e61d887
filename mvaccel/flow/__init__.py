"""TV-L1 optical flow: the solver, its presets, video extraction and the storage tools.

- :func:`tvl1` (C++ CPU / CUDA kernels, batched) and :func:`tvl1_reference` (pure torch)
- :class:`TVL1Params` with presets ``opencv``, ``opencv_cuda`` / ``dense_flow``, ``tvnet``, ``fast``
- :func:`flow_video`: flow of consecutive frames of a video, in bounded memory;
  :func:`write_video_flow` / :func:`flow_tree`: one video / a dataset tree to files
- :func:`read_flo`, :func:`write_flo`, :func:`epe`, :func:`aae`, :func:`to_color` (deprecated:
  :func:`mvaccel.viz.flow_to_image`),
  :func:`quantize`, :func:`dequantize`, :func:`write_flow_jpgs` (TSN / dense_flow storage)

Flow convention (README, "Conventions"): ``(N, 2, H, W)`` float32 pixels, channel 0 = x (right),
channel 1 = y (down), ``I1(x + u(x)) ~ I0(x)``.
"""

from .io import aae, dequantize, epe, quantize, read_flo, to_color, write_flo, write_flow_jpgs
from .params import PRESETS, TVL1Params
from .reference import tvl1_reference
from .tvl1 import to_grey, tvl1
from .video import flow_tree, flow_video, write_video_flow

__all__ = [
    "PRESETS",
    "TVL1Params",
    "aae",
    "dequantize",
    "epe",
    "flow_tree",
    "flow_video",
    "quantize",
    "read_flo",
    "to_color",
    "to_grey",
    "tvl1",
    "tvl1_reference",
    "write_flo",
    "write_flow_jpgs",
    "write_video_flow",
]
