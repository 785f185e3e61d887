"""mvaccel: motion representations for video action recognition, as fast PyTorch ops.

Submodules load on first use (``mvaccel.ops``, ``mvaccel.viz``, ...), so ``mvaccel.__version__``
and ``mvaccel --version`` work even before the compiled extension is built; ``mvaccel.ops``
then raises an ``ImportError`` that names the build command.
"""

from __future__ import annotations

import importlib
import importlib.util

from ._version import __version__

__all__ = ["__version__"]


def __getattr__(name: str):
    if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'mvaccel' has no attribute {name!r}")
