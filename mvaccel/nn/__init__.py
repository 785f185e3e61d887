"""Network modules: the papers' backbones (:mod:`mvaccel.nn.backbones`)."""

from . import backbones

__all__ = ["backbones"]
