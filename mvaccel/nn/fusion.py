"""Lu et al.'s attention-based fusion of two streams' class scores (section 3.4, figure 2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

FUSION_INPUTS = ("scores", "softmax")


class AttentionFusion(nn.Module):
    """Weights the streams' scores per video with two linear layers and a softmax over streams.

    The paper (section 3.4): "the outputs of two streams are concatenated and fed into a
    twin-layer linear model. After forwarding the two-dimensional output of the linear model
    (i.e. two full-connect layers) into the softmax layer, the importance weights of each stream
    are obtained. Finally, the weighted sum of the scores of two streams is considered as the
    final prediction score." It names neither the hidden size nor an activation between the two
    layers ("a linear neural module"), so both are arguments; the defaults are the literal
    reading: no activation, a hidden layer as wide as the number of classes.

    Args:
        num_classes: ``K``, the classes of every stream.
        num_streams: how many streams are fused (2 in the paper: Dual-action Stream and the
            motion stream).
        hidden: the width of the first linear layer (default ``num_classes``).
        inputs: ``"scores"``: the streams' raw scores (logits) are concatenated and summed, the
            output is fused scores; ``"softmax"``: their softmax probabilities are, and the output
            is the log of the weighted probabilities (log-probabilities: cross-entropy on it is
            the negative log-likelihood of the fused distribution, and its argmax the fused class).
        activation: ``None`` (the paper's linear model) or ``"relu"`` between the two layers.

    Shapes:
        ``num_streams`` tensors ``(N, K)`` -> ``(N, K)``; :meth:`weights` gives ``(N, num_streams)``
        (non-negative, summing to 1 per row).

    Example:
        >>> fusion = AttentionFusion(num_classes=5)
        >>> rgb, flow = torch.randn(4, 5), torch.randn(4, 5)
        >>> fusion(rgb, flow).shape, fusion.weights(rgb, flow).sum(1)
        (torch.Size([4, 5]), tensor([1., 1., 1., 1.], grad_fn=<SumBackward1>))
    """

    def __init__(
        self,
        num_classes: int,
        num_streams: int = 2,
        hidden: int | None = None,
        inputs: str = "scores",
        activation: str | None = None,
    ):
        super().__init__()
        if inputs not in FUSION_INPUTS:
            raise ValueError(
                f"AttentionFusion: inputs must be one of {FUSION_INPUTS}, got {inputs!r}"
            )
        if activation not in (None, "none", "relu"):
            raise ValueError(
                f"AttentionFusion: activation must be None or 'relu', got {activation!r}"
            )
        if num_classes < 1 or num_streams < 2:
            raise ValueError(
                f"AttentionFusion: need num_classes >= 1 and num_streams >= 2, got {num_classes} "
                f"and {num_streams}"
            )
        hidden = num_classes if hidden is None else int(hidden)
        if hidden < 1:
            raise ValueError(f"AttentionFusion: hidden must be >= 1, got {hidden}")
        self.num_classes, self.num_streams, self.inputs = num_classes, num_streams, inputs
        self.fc1 = nn.Linear(num_streams * num_classes, hidden)
        self.act = nn.ReLU() if activation == "relu" else nn.Identity()
        self.fc2 = nn.Linear(hidden, num_streams)

    def _inputs(self, scores: tuple[Tensor, ...]) -> Tensor:
        """``(N, num_streams, K)``: the streams' scores or probabilities, shapes checked."""
        if len(scores) != self.num_streams:
            raise ValueError(
                f"AttentionFusion: expected {self.num_streams} score tensors, got {len(scores)}"
            )
        shapes = [tuple(s.shape) for s in scores]
        if any(len(sh) != 2 or sh != shapes[0] or sh[1] != self.num_classes for sh in shapes):
            raise ValueError(
                f"AttentionFusion: every stream's scores must be (N, {self.num_classes}) and "
                f"alike, got {shapes}"
            )
        x = torch.stack(scores, dim=1)
        return F.softmax(x, dim=2) if self.inputs == "softmax" else x

    def weights(self, *scores: Tensor) -> Tensor:
        """``(N, num_streams)`` importance weights of the streams (a softmax over streams)."""
        return self._weights(self._inputs(scores))

    def _weights(self, x: Tensor) -> Tensor:
        return F.softmax(self.fc2(self.act(self.fc1(x.flatten(1)))), dim=1)

    def forward(self, *scores: Tensor) -> Tensor:
        """The weighted sum of the streams' scores (log-probabilities with ``"softmax"``)."""
        x = self._inputs(scores)
        fused = (self._weights(x).unsqueeze(2) * x).sum(1)
        if self.inputs == "softmax":
            return fused.clamp_min(torch.finfo(fused.dtype).tiny).log()
        return fused

    def extra_repr(self) -> str:  # noqa: D102
        return f"inputs={self.inputs!r}"
