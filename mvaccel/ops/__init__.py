"""Compiled ops of mvaccel (``torch.ops.mvaccel.*``) with documented Python wrappers.

Every op has a pure-PyTorch reference in :mod:`mvaccel.ops.reference`, a fake kernel for
``torch.compile`` and, where it is differentiable, an autograd formula backed by a private
backward op. Importing this module loads the extension and raises an ``ImportError`` naming the
build command when it is missing.
"""

from .._ext import load_ops

load_ops()

from . import reference  # noqa: E402
from .off import off_gradients, off_gradients_stack  # noqa: E402
from .resample import block_upsample, mv_resize  # noqa: E402
from .tvnet import tvnet_iterations  # noqa: E402

__all__ = [
    "block_upsample",
    "mv_resize",
    "off_gradients",
    "off_gradients_stack",
    "reference",
    "tvnet_iterations",
]
