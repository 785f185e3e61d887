"""Distillation losses of the papers (equations quoted in each docstring)."""

from .transfer import (
    deeply_connected_loss,
    dual_action_loss,
    gram,
    gram_loss,
    mar_loss,
    multi_level_mae_loss,
    supervision_transfer_loss,
    teacher_supervision_loss,
)

__all__ = [
    "deeply_connected_loss",
    "dual_action_loss",
    "gram",
    "gram_loss",
    "mar_loss",
    "multi_level_mae_loss",
    "supervision_transfer_loss",
    "teacher_supervision_loss",
]
