"""Transfer losses against values computed by hand from the papers' equations."""

from __future__ import annotations

import math

import pytest
import torch

from mvaccel import distill as D


def test_supervision_transfer_hand_value():
    s = torch.tensor([[2.0, 0.0]])
    t = torch.tensor([[0.0, 2.0]])
    y = torch.tensor([0])
    # Temp = 2: P_T = softmax([0, 1]), log P_S = log_softmax([1, 0]).
    pt1 = math.exp(1) / (1 + math.exp(1))
    pt = [1 - pt1, pt1]
    lps = [1 - math.log(1 + math.e), -math.log(1 + math.e)]
    tsl = -(pt[0] * lps[0] + pt[1] * lps[1])
    gt = -(2 - math.log(math.exp(2) + 1))
    assert D.teacher_supervision_loss(s, t, 2.0).item() == pytest.approx(tsl, rel=1e-6)
    assert D.supervision_transfer_loss(s, t, y).item() == pytest.approx(4 * tsl + gt, rel=1e-6)
    hard = D.supervision_transfer_loss(s, t, y, weighting="hard")
    assert hard.item() == pytest.approx(tsl + 4 * gt, rel=1e-6)
    assert D.supervision_transfer_loss(s, t, y, 1.0, weight=0.5).item() == pytest.approx(
        0.5 * D.teacher_supervision_loss(s, t, 1.0).item() + gt, rel=1e-6
    )


def test_teacher_gets_no_gradient():
    s = torch.randn(3, 5, requires_grad=True)
    t = torch.randn(3, 5, requires_grad=True)
    D.supervision_transfer_loss(s, t, torch.tensor([0, 1, 2])).backward()
    assert s.grad is not None and t.grad is None


def test_deeply_connected_hand_value():
    s = [torch.tensor([[3.0, 0.0, 0.0, 4.0]]), torch.zeros(1, 2, 1, 1)]
    t = [torch.zeros(1, 4), torch.tensor([[[[1.0]], [[1.0]]]])]
    # layer 1: sqrt(9 + 16) / 4; layer 2: sqrt(2) / 2
    assert D.deeply_connected_loss(s, t).item() == pytest.approx(5 / 4 + math.sqrt(2) / 2)


def test_multi_level_mae_hand_value():
    s = [torch.ones(2, 3), torch.zeros(1, 4)]
    t = [torch.zeros(2, 3), torch.full((1, 4), -2.0)]
    assert D.multi_level_mae_loss(s, t).item() == pytest.approx((1 + 2) / 2)


def test_gram_loss_hand_value():
    # One level, N=1, C=2, T*H*W=2: f_s = [[1, 0], [0, 1]] -> G = I; f_t = 0 -> G = 0.
    s = [torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]]]])]  # (1, 2, 1, 2)
    t = [torch.zeros(1, 2, 1, 2)]
    # |I| summed = 2, divided by (n-1) C T H W = 1 * 2 * 2 = 4
    assert D.gram_loss(s, t).item() == pytest.approx(0.5)
    g = D.gram(torch.arange(6.0).view(1, 2, 3))
    torch.testing.assert_close(g, torch.tensor([[[5.0, 14.0], [14.0, 50.0]]]))


def test_dual_action_and_mar():
    logits = torch.tensor([[0.0, 0.0]])
    y = torch.tensor([1])
    s, t = [torch.ones(1, 2, 1, 1, 1)], [torch.zeros(1, 2, 1, 1, 1)]
    mae = 1.0
    g = D.gram_loss(s, t).item()
    assert g == pytest.approx(4 / 2)  # G_s = ones(2, 2), summed 4, over (n-1) C T H W = 2
    expected = math.log(2) + 50 * (mae + g)
    assert D.dual_action_loss(logits, y, s, t).item() == pytest.approx(expected)
    assert D.dual_action_loss(logits, y, s, t, use_gram=False).item() == pytest.approx(
        math.log(2) + 50 * mae
    )
    assert D.mar_loss(torch.ones(2, 3), torch.zeros(2, 3)).item() == pytest.approx(1.0)


def test_mismatched_features_raise():
    with pytest.raises(ValueError, match="layer 0 shapes differ"):
        D.multi_level_mae_loss([torch.zeros(1, 2)], [torch.zeros(1, 3)])
    with pytest.raises(ValueError, match="same non-zero number"):
        D.gram_loss([torch.zeros(1, 2, 2)], [])


def test_supervision_transfer_weightings_put_w_on_their_term():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    y = torch.tensor([0, 1, 2, 3, 0])
    tsl = D.teacher_supervision_loss(s, t, 2.0)
    gt = torch.nn.functional.cross_entropy(s, y)
    # The paper's text / Hinton et al.: w = Temp^2 = 4 on the soft target (the default).
    torch.testing.assert_close(D.supervision_transfer_loss(s, t, y), 4 * tsl + gt)
    # Eq. 4 as printed: w on the hard (ground-truth) loss.
    torch.testing.assert_close(D.supervision_transfer_loss(s, t, y, weighting="hard"),
                               tsl + 4 * gt)  # fmt: skip
    # The two readings' soft : hard balances differ by Temp^4 = 16.
    with pytest.raises(ValueError, match="weighting"):
        D.supervision_transfer_loss(s, t, y, weighting="mixed")
