"""Knowledge-transfer losses of the papers: teacher (optical flow) -> student (MV or RGB).

Every loss averages over the batch. Feature lists pair student and teacher layers in order and
each pair must have equal shapes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def _pairs(student: Sequence[Tensor], teacher: Sequence[Tensor], name: str):
    if len(student) != len(teacher) or not student:
        raise ValueError(
            f"{name}: need the same non-zero number of student and teacher features, got "
            f"{len(student)} and {len(teacher)}"
        )
    for i, (s, t) in enumerate(zip(student, teacher, strict=True)):
        if s.shape != t.shape:
            raise ValueError(
                f"{name}: layer {i} shapes differ: student {tuple(s.shape)}, "
                f"teacher {tuple(t.shape)}"
            )
    return list(zip(student, teacher, strict=True))


def teacher_supervision_loss(
    student_logits: Tensor, teacher_logits: Tensor, temperature: float
) -> Tensor:
    """Zhang et al. eq. 2: ``L_TSL = -sum_i P_T(i) log P_S(i)``, both softened by ``Temp``.

    ``P_T = softmax(T^{n-1} / Temp)``, ``P_S = softmax(S^{n-1} / Temp)``; the teacher gets no
    gradient (it is frozen).
    """
    p_t = F.softmax(teacher_logits.detach() / temperature, dim=1)
    log_p_s = F.log_softmax(student_logits / temperature, dim=1)
    return -(p_t * log_p_s).sum(1).mean()


ST_WEIGHTINGS = ("soft", "hard")


def supervision_transfer_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    target: Tensor,
    temperature: float = 2.0,
    weight: float | None = None,
    weighting: str = "soft",
) -> Tensor:
    """Zhang et al.'s Supervision Transfer: the teacher's soft target plus the ground truth.

    The paper gives two readings of where ``w`` goes, which differ by ``Temp^4`` (16 at
    Temp = 2) in the soft : hard balance:

    - ``"soft"`` (default): ``L = w * L_TSL + L_GT``. The paper's text (Sec. IV-B, V-C) says
      ``w`` weights the teacher's soft target, as Hinton et al. do (``Temp^2`` keeps the soft
      term's gradients at the hard term's scale).
    - ``"hard"``: ``L = L_TSL + w * L_GT``, eq. 4 as printed.

    Args:
        student_logits: ``(N, K)`` MV-CNN scores before softmax.
        teacher_logits: ``(N, K)`` flow-CNN scores before softmax (frozen teacher).
        target: ``(N,)`` class indices.
        temperature: ``Temp`` (the paper's best: 2).
        weight: ``w``; default ``Temp**2`` as the paper sets it (4 at Temp = 2).
        weighting: ``"soft"`` or ``"hard"``: the term ``w`` multiplies (above).

    Returns:
        The scalar loss, averaged over the batch (``L_GT``: eq. 3, plain cross-entropy).
    """
    if weighting not in ST_WEIGHTINGS:
        raise ValueError(f"weighting must be one of {ST_WEIGHTINGS}, got {weighting!r}")
    w = temperature**2 if weight is None else weight
    tsl = teacher_supervision_loss(student_logits, teacher_logits, temperature)
    gt = F.cross_entropy(student_logits, target)
    return w * tsl + gt if weighting == "soft" else tsl + w * gt


def deeply_connected_loss(student: Sequence[Tensor], teacher: Sequence[Tensor]) -> Tensor:
    """Zhang et al. eq. 5-6: ``L_DCSL = sum_t (1/k) * sqrt(sum (S^t - T^t)^2)``.

    One term per connected layer ``t`` (conv3 ... fc7 by default in the paper), ``k`` the
    layer's size per sample; the L2 norm is per sample, then averaged over the batch. The
    features are the layers' activations before any dropout (``MotionVectorTransfer`` taps
    them so): a student in train mode is compared with the teacher, not with its own dropout
    mask.
    """
    total = 0.0
    for s, t in _pairs(student, teacher, "deeply_connected_loss"):
        diff = (s - t.detach()).flatten(1)
        total = total + (diff.norm(dim=1) / diff.shape[1]).mean()
    return total


def multi_level_mae_loss(student: Sequence[Tensor], teacher: Sequence[Tensor]) -> Tensor:
    """Lu et al. eq. 2: ``L_MAE = 1/(n-1) sum_i MAE(f_DS(i), f_FLOW(i))`` over the levels.

    Each level's term is the mean absolute error of its features (the "mean absolute error"
    the paper names), so levels of different sizes weigh alike.
    """
    pairs = _pairs(student, teacher, "multi_level_mae_loss")
    return sum((s - t.detach()).abs().mean() for s, t in pairs) / len(pairs)


def gram(f: Tensor) -> Tensor:
    """Gram matrix ``(N, C, C)`` of ``(N, C, *)`` features: inner products of channels."""
    flat = f.flatten(2)
    return flat @ flat.transpose(1, 2)


def gram_loss(student: Sequence[Tensor], teacher: Sequence[Tensor]) -> Tensor:
    """Lu et al. eq. 3, the Gram loss.

    ``L_G = sum_i || (G(f_DS(i)) - G(f_FLOW(i))) / ((n-1) C_i T_i H_i W_i) ||_1`` with
    ``G`` the Gram matrix of the flattened features, ``n-1`` the number of levels, the L1 norm
    summed over the ``C_i x C_i`` entries (the norm's letter) and averaged over the batch. The
    paper does not say how its norm reduces the entries; the other reading, the mean over them
    (PyTorch's ``L1Loss``, ``C_i**2`` times smaller), is
    :func:`mvaccel.train.dual_action.mean_gram_loss`, and ``DualActionStream``'s
    ``gram_reduction`` chooses between the two (default ``"mean"``: with the sum and alpha = 50
    the Gram term swamps the cross-entropy).
    """
    pairs = _pairs(student, teacher, "gram_loss")
    total = 0.0
    for s, t in pairs:
        denom = len(pairs) * s[0].numel()  # (n - 1) * C * T * H * W
        total = total + ((gram(s) - gram(t.detach())) / denom).abs().sum((1, 2)).mean()
    return total


def dual_action_loss(
    logits: Tensor,
    target: Tensor,
    student: Sequence[Tensor],
    teacher: Sequence[Tensor],
    alpha: float = 50.0,
    use_mae: bool = True,
    use_gram: bool = True,
) -> Tensor:
    """Lu et al. eq. 4: ``CE(h_DS, y) + alpha * (L_MAE + L_G)``, alpha = 50."""
    motion = torch.zeros((), device=logits.device, dtype=logits.dtype)
    if use_mae:
        motion = motion + multi_level_mae_loss(student, teacher)
    if use_gram:
        motion = motion + gram_loss(student, teacher)
    return F.cross_entropy(logits, target) + alpha * motion


def mar_loss(student_features: Tensor, teacher_features: Tensor) -> Tensor:
    """MARS's feature loss: MSE between the student's and the teacher's pre-FC features."""
    _pairs([student_features], [teacher_features], "mar_loss")
    return F.mse_loss(student_features, teacher_features.detach())
