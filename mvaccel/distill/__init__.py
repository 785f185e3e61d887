"""Losses of the papers, with the equations quoted in each docstring.

Knowledge transfer from a flow teacher (:mod:`.transfer`) and TVNet's flow losses
(:mod:`.flow_losses`).
"""

from .flow_losses import epe, tvl1_energy
from .transfer import (
    ST_WEIGHTINGS,
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
    "ST_WEIGHTINGS",
    "deeply_connected_loss",
    "dual_action_loss",
    "epe",
    "gram",
    "gram_loss",
    "mar_loss",
    "multi_level_mae_loss",
    "supervision_transfer_loss",
    "teacher_supervision_loss",
    "tvl1_energy",
]
