"""Training losses for motion representations: TVNet's unsupervised flow loss and EPE."""

from .flow_losses import epe, tvl1_energy

__all__ = ["epe", "tvl1_energy"]
