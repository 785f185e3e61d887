"""Device coverage of the whole stack: every ``mvaccel.nn`` module, every ``mvaccel.distill``
loss, and a short Lightning fit + eval of each method family, parametrised over ``device``.

Every case builds the same seeded module twice: a float64 CPU reference, and the module under
test on ``device`` in float32, with what the recipes use on a GPU (bf16 autocast, channels_last
or channels_last_3d) when ``device`` is CUDA. The two outputs must agree within the tolerances
below; on CPU (CI) the float32 run is compared with float64, which exercises the CPU half of the
CUDA comparison. All inputs are tiny in-memory tensors: no video, no ffmpeg, a few seconds.

Tolerances (``torch.testing.assert_close``, relative to the reference's largest magnitude):

====================  ======  ======
run                   rtol    atol
====================  ======  ======
CPU / CUDA float32    1e-3    1e-3
CUDA bf16 autocast    6e-2    6e-2
====================  ======  ======
"""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from mvaccel import distill
from mvaccel import nn as mnn
from mvaccel.nn import backbones as bb
from mvaccel.train import (
    CoViARStream,
    DMCNet,
    DualActionFusion,
    DualActionStream,
    MotionVectorTransfer,
    OFFNetwork,
    TVNetClassifier,
    build_backbone,
)

FP32 = dict(rtol=1e-3, atol=1e-3)
BF16 = dict(rtol=6e-2, atol=6e-2)


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny tensors: one torch thread (see conftest.one_thread)."""


def _rand(*shape, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64) * scale


def _memory_format(t: torch.Tensor):
    return {4: torch.channels_last, 5: torch.channels_last_3d}.get(t.dim())


def _to(x, device, dtype, channels_last=False):
    """Tensors (nested in lists/tuples) to ``device``/``dtype``, channels_last if asked."""
    if isinstance(x, (list, tuple)):
        return type(x)(_to(t, device, dtype, channels_last) for t in x)
    if not torch.is_tensor(x) or not x.is_floating_point():
        return x.to(device) if torch.is_tensor(x) else x
    x = x.to(device=device, dtype=dtype)
    fmt = _memory_format(x) if channels_last else None
    return x.contiguous(memory_format=fmt) if fmt is not None else x


def _as_float_cpu(out):
    if isinstance(out, (list, tuple)):
        return [_as_float_cpu(o) for o in out]
    return out.detach().to("cpu", torch.float64)


def _close(got, want, tol):
    """assert_close with the tolerance relative to the reference's largest magnitude."""
    for g, w in zip(_as_float_cpu(_listify(got)), _as_float_cpu(_listify(want)), strict=True):
        assert torch.isfinite(g).all()
        scale = max(w.abs().max().item(), 1.0) if w.numel() else 1.0
        torch.testing.assert_close(g, w, rtol=tol["rtol"], atol=tol["atol"] * scale)


def _listify(out):
    return list(out) if isinstance(out, (list, tuple)) else [out]


def check_module(
    build, inputs, device, amp=True, channels_last=True, backward=True, ref_dtype=torch.float64
):
    """Run ``build()`` (seeded) in ``ref_dtype`` on CPU and in float32 on ``device`` (CUDA: bf16
    autocast if ``amp``, channels_last if ``channels_last``), compare, and backpropagate."""
    torch.manual_seed(0)
    ref = build().to(ref_dtype).eval()
    with torch.no_grad():
        want = _listify(ref(*_to(inputs, "cpu", ref_dtype)))
    torch.manual_seed(0)
    mod = build().float().eval().to(device)
    cuda = device == "cuda"
    use_cl = cuda and channels_last
    if use_cl:
        fmt = _memory_format(next((p for p in mod.parameters() if p.dim() >= 4), torch.empty(0)))
        mod = mod.to(memory_format=fmt or torch.channels_last)
    xs = _to(inputs, device, torch.float32, use_cl)
    use_amp = cuda and amp
    with torch.autocast(device, torch.bfloat16, enabled=use_amp):
        got = _listify(mod(*xs))
    _close(got, want, BF16 if use_amp else FP32)
    if backward and any(p.requires_grad for p in mod.parameters()):
        with torch.autocast(device, torch.bfloat16, enabled=use_amp):
            loss = sum(o.float().square().mean() for o in _listify(mod(*xs)))
        loss.backward()
        grads = [p.grad for p in mod.parameters() if p.requires_grad]
        assert all(g is None or torch.isfinite(g).all() for g in grads)
        assert any(g is not None and g.abs().sum() > 0 for g in grads)
    return got


# ---- every mvaccel.nn module -------------------------------------------------------------


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "unfused"])
def test_tvnet(device, fused):
    x0 = _rand(2, 3, 16, 20, seed=1).sigmoid()
    x1 = torch.roll(x0, 1, 3)
    # TVNet's ops are float32/float64: it runs in float32 under the recipes' autocast too.
    check_module(lambda: mnn.TVNet(iterations=3, fused=fused), (x0, x1), device, amp=False)


def test_off_layer_unit_and_subnetwork(device):
    f, prev = _rand(2, 8, 8, 10, seed=2), _rand(2, 8, 8, 10, seed=3)
    check_module(lambda: mnn.OFFLayer(8, reduce=4, spatial_channels=4), (f, prev), device)
    check_module(lambda: mnn.ResidualBlock(8, 6, stride=2), (f,), device)
    stack = _rand(2, 3, 8, 8, 10, seed=4)
    prev_unit = _rand(4, 5, 16, 20, seed=5)

    def unit():
        return mnn.OFFUnit(8, prev_channels=5, width=6, blocks=1, reduce=4, spatial_channels=4)

    check_module(unit, (stack, prev_unit), device)
    levels = [_rand(2, 3, 8, 8, 8, seed=4), _rand(2, 3, 16, 4, 4, seed=5)]

    def sub():
        return mnn.OFFSubNetwork([8, 16], 3, widths=(6, 6), blocks=1, reduce=4,
                                 spatial_channels=4, dropout=0.0,
                                 architecture="resnet20")  # fmt: skip

    check_module(sub, (levels,), device)
    # the authors' released sub-network (three levels, fixed widths 256 / 512 / 1024)
    levels3 = [_rand(1, 2, 4, 8, 8, seed=7), _rand(1, 2, 4, 4, 4, seed=8),
               _rand(1, 2, 4, 2, 2, seed=9)]  # fmt: skip

    def authors():
        return mnn.OFFSubNetwork([4, 4, 4], 3, reduce=2, spatial_channels=2, dropout=0.0)

    check_module(authors, (levels3,), device)


@pytest.mark.parametrize("grey", [False, True])
def test_raw_off(device, grey):
    frames = _rand(2, 3, 3, 8, 10, seed=6)
    check_module(lambda: mnn.RawOFF(grey=grey), (frames,), device, backward=False)


def test_every_module_moves_to_channels_last():
    """``.to(memory_format=channels_last)`` (the GPU recipes' call) on every module and a run:
    a 5-D buffer made RawOFF (and every network holding one) raise."""
    frames = torch.rand(1, 3, 3, 8, 8)
    for mod, args in [
        (mnn.RawOFF(grey=True), (frames,)),
        (mnn.OFFLayer(3, reduce=2, spatial_channels=2), (frames[:, 1], frames[:, 0])),
        (mnn.TVNet(iterations=1), (frames[:, 0], frames[:, 1])),
        (mnn.DMCGenerator(), (frames[:, 0, :2], frames[:, 0])),
        (mnn.AttentionFusion(3), (torch.rand(1, 3), torch.rand(1, 3))),
        (bb.resnet18(num_classes=3, in_channels=3), (frames[:, 0],)),
    ]:
        mod = mod.eval().to(memory_format=torch.channels_last)
        with torch.no_grad():
            assert all(torch.isfinite(o).all() for o in _listify(mod(*args)))
    net = OFFNetwork(stage=2, backbone="resnet18", num_classes=3, in_channels=9, raw_off=True,
                     off_mode="temporal", test_segments=2).eval()  # fmt: skip
    net.to(memory_format=torch.channels_last)
    with torch.no_grad():
        assert net(torch.rand(1, 2, 9, 32, 32)).shape == (1, 3)


def test_dmc_generator_discriminator_and_network(device):
    mv, res = _rand(2, 2, 32, 32, seed=7), _rand(2, 3, 32, 32, seed=8)
    check_module(lambda: mnn.DMCGenerator(), (mv, res), device)
    check_module(lambda: mnn.DMCDiscriminator(extra_blocks=1, grid=2), (mv,), device)

    def network():
        return mnn.DMCNetwork(mnn.DMCGenerator(), bb.resnet18(num_classes=3, in_channels=2))

    check_module(network, (mv, res), device)


@pytest.mark.parametrize("inputs", ["scores", "softmax"])
def test_attention_fusion(device, inputs):
    a, b = _rand(4, 3, seed=9), _rand(4, 3, seed=10)
    check_module(lambda: mnn.AttentionFusion(3, inputs=inputs, hidden=5), (a, b), device)


def test_segment_consensus_and_feature_taps(device):
    check_module(lambda: mnn.SegmentConsensus(2), (_rand(4, 3, seed=11),), device)

    def taps():
        return mnn.FeatureTaps(bb.resnet18(num_classes=3), [["layer2"], ["layer4"]])

    check_module(taps, (_rand(1, 3, 32, 32, seed=12),), device)


BACKBONES_2D = {
    "resnet18": (lambda: bb.resnet18(num_classes=3, in_channels=2), (1, 2, 32, 32)),
    "resnet50": (lambda: bb.resnet50(num_classes=3, in_channels=2), (1, 2, 32, 32)),
    "resnet152": (lambda: bb.resnet152(num_classes=3, in_channels=2), (1, 2, 32, 32)),
    "bninception": (lambda: bb.BNInception(num_classes=3, in_channels=2), (1, 2, 64, 64)),
    "clarifai": (
        lambda: bb.ClarifaiNet(num_classes=3, in_channels=4, width=0.0625, dropout=(0, 0)),
        (2, 4, 64, 64),
    ),
}
BACKBONES_3D = {
    name: (lambda d=depth: bb.resnet3d(d, width=0.125, num_classes=3), (1, 3, 4, 32, 32))
    for name, depth in [("resnet3d18", 18), ("resnet3d50", 50), ("resnet3d101", 101)]
}


@pytest.mark.parametrize("name", [*BACKBONES_2D, *BACKBONES_3D])
def test_backbone(device, name):
    build, shape = {**BACKBONES_2D, **BACKBONES_3D}[name]
    check_module(build, (_rand(*shape, seed=13),), device, backward=name == "resnet18")


# ---- every mvaccel.distill loss ----------------------------------------------------------


def _feats(seed):
    return [_rand(2, 4, 6, 6, seed=seed), _rand(2, 8, 3, 3, seed=seed + 1)]


LOSSES = {
    "tvl1_energy": lambda: (
        distill.tvl1_energy,
        (
            _rand(2, 1, 12, 14, seed=20).sigmoid() * 255,
            _rand(2, 1, 12, 14, seed=21).sigmoid() * 255,
            _rand(2, 2, 12, 14, seed=22),
        ),
    ),  # fmt: skip
    "epe": lambda: (distill.epe, (_rand(2, 2, 5, 6, seed=23), _rand(2, 2, 5, 6, seed=24))),
    "gram": lambda: (distill.gram, (_rand(2, 4, 6, 6, seed=25),)),
    "gram_loss": lambda: (distill.gram_loss, (_feats(26), _feats(30))),
    "multi_level_mae_loss": lambda: (distill.multi_level_mae_loss, (_feats(26), _feats(30))),
    "deeply_connected_loss": lambda: (distill.deeply_connected_loss, (_feats(26), _feats(30))),
    "mar_loss": lambda: (distill.mar_loss, (_rand(2, 16, seed=31), _rand(2, 16, seed=32))),
    "teacher_supervision_loss": lambda: (
        lambda s, t: distill.teacher_supervision_loss(s, t, 2.0),
        (_rand(4, 3, seed=33), _rand(4, 3, seed=34)),
    ),
    "supervision_transfer_loss": lambda: (
        lambda s, t: distill.supervision_transfer_loss(
            s, t, torch.tensor([0, 1, 2, 1], device=s.device)
        ),
        (_rand(4, 3, seed=33), _rand(4, 3, seed=34)),
    ),  # fmt: skip
    "dual_action_loss": lambda: (
        lambda lg, s, t: distill.dual_action_loss(lg, torch.tensor([0, 2], device=lg.device), s, t),
        (_rand(2, 3, seed=35), _feats(26), _feats(30)),
    ),  # fmt: skip
}


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_distill_loss(device, name):
    assert set(LOSSES) == {n for n in distill.__all__ if callable(getattr(distill, n))}
    fn, args = LOSSES[name]()
    want = fn(*_to(args, "cpu", torch.float64))
    xs = _to(args, device, torch.float32)
    # The first argument is the student / prediction (teachers' features are detached).
    leaves = xs[0] if isinstance(xs[0], list) else [xs[0]]
    for x in leaves:
        x.requires_grad_()
    got = fn(*xs)
    _close(got, want, FP32)
    got.sum().backward()
    assert all(x.grad is not None and torch.isfinite(x.grad).all() for x in leaves)


# ---- a short Lightning fit + eval of each method family ----------------------------------


def _fit_and_eval(module, batch, device, precision, val_batch=None, save=None):
    """Two optimizer steps and a validation pass (on ``val_batch``, default ``batch``) on
    ``device``: the steps change the weights, the validation metrics are finite."""
    L.seed_everything(0, verbose=False)
    trainer = L.Trainer(
        accelerator="gpu" if device == "cuda" else "cpu", devices=1, max_steps=2,
        precision=precision if device == "cuda" else "32-true", logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, limit_val_batches=1,
    )  # fmt: skip
    before = [p.detach().clone() for p in module.parameters() if p.requires_grad]
    loader = DataLoader([batch] * 2, batch_size=None)
    val = DataLoader([batch if val_batch is None else val_batch], batch_size=None)
    trainer.fit(module, train_dataloaders=loader, val_dataloaders=val)
    assert trainer.global_step == 2
    after = [p for p in module.parameters() if p.requires_grad]
    assert any(
        not torch.equal(a.detach().cpu(), b.cpu()) for a, b in zip(after, before, strict=True)
    )
    metrics = trainer.validate(module, val, verbose=False)[0]
    assert metrics and all(math.isfinite(v) for v in metrics.values())
    if save is not None:
        trainer.save_checkpoint(save)
    return metrics


def _labels(n=2):
    return torch.arange(n) % 3


def _compare_forward(build, x, device, amp, ref_dtype=torch.float64):
    """The family's inference network: float64 CPU vs ``device`` (bf16 autocast on CUDA)."""
    check_module(build, (x,), device, amp, channels_last=False, backward=False, ref_dtype=ref_dtype)


def test_family_dtmv_transfer(device):
    flow, mv = _rand(2, 2, 2, 32, 32, seed=40), _rand(2, 2, 2, 32, 32, seed=41)

    def build():
        torch.manual_seed(0)
        teacher = build_backbone("resnet18", 3, 2)
        return MotionVectorTransfer(teacher=teacher, backbone="resnet18", num_classes=3,
                                    in_channels=2, connect=("layer3", "layer4"))  # fmt: skip

    _compare_forward(build, mv, device, amp=True)
    batch = (mv.float(), flow.float(), _labels())
    _fit_and_eval(build(), batch, device, "bf16-mixed", val_batch=(mv.float(), _labels()))


def test_family_coviar_and_dmcnet(device):
    mv = _rand(2, 2, 2, 32, 32, seed=42)

    def coviar():
        return CoViARStream(representation="mv", backbone="resnet18", num_classes=3,
                            in_channels=2)  # fmt: skip

    _compare_forward(coviar, mv, device, amp=True)
    _fit_and_eval(coviar(), (mv.float(), _labels()), device, "bf16-mixed")

    res, flow = _rand(2, 2, 3, 32, 32, seed=43), _rand(2, 2, 2, 32, 32, seed=44)
    dmc = DMCNet(num_classes=3, in_channels=2, mse_only_epochs=0)
    _fit_and_eval(dmc, (mv.float(), res.float(), flow.float(), _labels()), device, "bf16-mixed")


def test_family_dual_action_and_fusion(device):
    rgb = _rand(2, 1, 3, 4, 32, 32, seed=45)
    flow = _rand(2, 1, 2, 4, 32, 32, seed=46)
    kw = dict(backbone="resnet3d", backbone_kwargs={"depth": 18, "width": 0.125},
              num_classes=3, channels_last=device == "cuda")  # fmt: skip

    def stream():
        torch.manual_seed(0)
        teacher = build_backbone("resnet3d", 3, 2, depth=18, width=0.125)
        return DualActionStream(teacher=teacher, levels=("layer2", "layer4"), **kw)

    _compare_forward(stream, rgb, device, amp=True)
    batch = (rgb.float(), flow.float(), _labels())
    _fit_and_eval(stream(), batch, device, "bf16-mixed", val_batch=(rgb.float(), _labels()))
    fusion = DualActionFusion(hidden=4, **kw)
    _fit_and_eval(fusion, batch, device, "bf16-mixed")


def test_family_off_stages(device, tmp_path):
    x = _rand(2, 2, 3, 32, 32, seed=47)
    ckpt = None
    for stage in (1, 2):

        def build(stage=stage, ckpt=ckpt):
            return OFFNetwork(stage=stage, backbone="resnet18", num_classes=3, in_channels=3,
                              test_segments=2, off_widths=(8, 8, 8), off_reduce=4,
                              off_spatial_channels=4, init_checkpoint=ckpt,
                              channels_last=device == "cuda")  # fmt: skip

        _compare_forward(build, x, device, amp=True)
        ckpt = str(tmp_path / f"stage{stage}.ckpt")
        _fit_and_eval(build(), (x.float(), _labels()), device, "bf16-mixed", save=ckpt)


def test_family_tvnet_end_to_end(device):
    x = _rand(2, 1, 9, 64, 64, seed=48).sigmoid()

    def build():
        return TVNetClassifier(in_channels=9, num_classes=3, backbone="clarifai", iterations=2,
                               backbone_kwargs={"width": 0.0625, "dropout": [0.0, 0.0]},
                               channels_last=device == "cuda")  # fmt: skip

    # The pipeline computes in float32 (TVNet's ops): the reference is CPU float32.
    _compare_forward(build, x, device, amp=True, ref_dtype=torch.float32)
    _fit_and_eval(build(), (x.float(), _labels()), device, "bf16-mixed")
